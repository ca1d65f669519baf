package updateconf_test

import (
	"fmt"
	"strings"

	"github.com/twinslot/twinslot/updated/updateconf"
)

func ExampleParse() {
	vals, err := updateconf.Parse("update.conf", strings.NewReader("GROUP=beta\nREBOOT_STRATEGY=etcd-lock\n"))
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := updateconf.FromValues(vals)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Group, c.RebootStrategy)
	// Output: beta etcd-lock
}
