package locksmith_test

import (
	"errors"
	"fmt"

	"github.com/twinslot/twinslot/locksmith"
)

// The rules are pure: given a state read from etcd they decide what to write.
func ExamplePlanAcquire() {
	st := locksmith.State{
		Group:  "default",
		Config: locksmith.GroupConfig{Version: 1, Max: 2, Stale: locksmith.StaleHold},
		Slots: []locksmith.Slot{
			{Index: 0, Holder: locksmith.Holder{Version: 1, ID: "node-a"}},
		},
	}
	plan, _ := locksmith.PlanAcquire(st, "node-b")
	fmt.Println("node-b takes slot", plan.Index)

	st.Slots = append(st.Slots, locksmith.Slot{Index: 1, Holder: locksmith.Holder{Version: 1, ID: "node-b"}})
	_, err := locksmith.PlanAcquire(st, "node-c")
	fmt.Println("node-c full:", errors.Is(err, locksmith.ErrFull))

	plan, _ = locksmith.PlanAcquire(st, "node-a")
	fmt.Println("node-a re-locks slot", plan.Index, plan.Relock)
	// Output:
	// node-b takes slot 1
	// node-c full: true
	// node-a re-locks slot 0 true
}
