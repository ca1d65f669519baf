package omaha_test

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/twinslot/twinslot/omaha"
)

// A server answers an update check from a Flatcar host with an update.
func Example() {
	body := `<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">
    <os version="Chateau" platform="CoreOS" sp="4081.2.0_x86_64"></os>
    <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" version="4081.2.0" track="stable" bootid="{60eb8c4b-919d-422f-9d4f-8fda10c50ab8}" oem="" oemversion="" alephversion="4081.2.0" machineid="639c3d1041b94d7c915c18174eeeb154" machinealias="" lang="en-US" board="amd64-usr" hardware_class="" delta_okay="false" >
        <ping active="1"></ping>
        <updatecheck></updatecheck>
        <event eventtype="3" eventresult="2" previousversion=""></event>
    </app>
</request>`
	req, err := omaha.ParseRequest(strings.NewReader(body))
	if err != nil {
		fmt.Println(err)
		return
	}
	payload := []byte("payload")
	resp := omaha.NewResponse()
	for _, a := range req.Apps {
		if err := a.Validate(); err != nil {
			fmt.Println(err)
			return
		}
		ra := resp.AddApp(a.AppID, omaha.StatusOK)
		ra.Acknowledge(a)
		if a.UpdateCheck != nil {
			_, err := ra.AddUpdate(omaha.Update{
				Version:     "4152.2.0",
				URLs:        []string{"http://127.0.0.1:8080/packages/4152.2.0/"},
				PackageName: "update.tsp",
				Size:        int64(len(payload)),
				SHA256:      sha256.Sum256(payload),
				SHA1:        sha1.Sum(payload),
			})
			if err != nil {
				fmt.Println(err)
				return
			}
		}
	}
	out, err := resp.Marshal()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(string(out))
	// Output:
	// <?xml version="1.0" encoding="UTF-8"?>
	// <response protocol="3.0" server="twinslot">
	//   <daystart elapsed_seconds="0"></daystart>
	//   <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok">
	//     <event status="ok"></event>
	//     <ping status="ok"></ping>
	//     <updatecheck status="ok">
	//       <urls>
	//         <url codebase="http://127.0.0.1:8080/packages/4152.2.0/"></url>
	//       </urls>
	//       <manifest version="4152.2.0">
	//         <packages>
	//           <package name="update.tsp" hash="8H5agVYTxavt3EtoIkekxC2Kld8=" hash_sha256="239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5" size="7" required="true"></package>
	//         </packages>
	//         <actions>
	//           <action event="postinstall" sha256="I59Z7VXnN8dxR89VrQwbAwttfudIp0JpUvm4UtWpNeU="></action>
	//         </actions>
	//       </manifest>
	//     </updatecheck>
	//   </app>
	// </response>
}

// A host checks for an update against a server that has none.
func ExampleClient_UpdateCheck() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := omaha.ParseRequest(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp := omaha.NewResponse()
		a := resp.AddApp(req.Apps[0].AppID, omaha.StatusOK)
		a.Acknowledge(req.Apps[0])
		a.AddUpdateCheck(omaha.StatusNoUpdate)
		body, _ := resp.Marshal()
		w.Header().Set("Content-Type", omaha.ContentType)
		w.Write(body)
	}))
	defer srv.Close()

	c, err := omaha.NewClient([]string{srv.URL + "/v1/update/"}, omaha.ClientOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	host := omaha.Host{
		AppID:     "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc",
		MachineID: "639c3d1041b94d7c915c18174eeeb154",
		BootID:    "60eb8c4b-919d-422f-9d4f-8fda10c50ab8",
		Version:   "1.2.0",
		Track:     "stable",
		Board:     "amd64-usr",
	}
	res, err := c.UpdateCheck(context.Background(), host, omaha.CheckOptions{})
	switch {
	case omaha.IsTransient(err):
		fmt.Println("retry later:", err)
	case err != nil:
		var oe *omaha.Error
		if errors.As(err, &oe) {
			fmt.Println("report error code", oe.Code())
		}
	case res.Update == nil:
		fmt.Println("no update")
	default:
		fmt.Println("update to", res.Update.Version)
	}
	// Output: no update
}
