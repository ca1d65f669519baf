package omahaload_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/omahaload"
)

// Drive 100 simulated hosts against a server that never has an update.
func ExampleRun() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := omaha.ParseRequest(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp := omaha.NewResponse()
		a := resp.AddApp(req.Apps[0].AppID, omaha.StatusOK)
		a.Acknowledge(req.Apps[0])
		if req.Apps[0].UpdateCheck != nil {
			a.AddUpdateCheck(omaha.StatusNoUpdate)
		}
		body, _ := resp.Marshal()
		w.Write(body)
	}))
	defer srv.Close()

	res, err := omahaload.Run(context.Background(), omahaload.Config{URL: srv.URL + "/v1/update/", Machines: 100, Concurrency: 4})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("checks", res.Checks, "noupdate", res.NoUpdates, "errors", res.Errors)
	// Output: checks 100 noupdate 100 errors 0
}
