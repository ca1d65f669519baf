package locksmith

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// The causes an error alone tells, as etcd's client returns them. A member without a leader
// cannot be made in-process (an embedded single member always leads); the faults tier
// (locksmith/faults) produces it on a real cluster.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Cause
	}{
		{rpctypes.ErrNoLeader, CauseNoLeader},
		{rpctypes.ErrGRPCNoLeader, CauseNoLeader},
		{fmt.Errorf("watch: %w", rpctypes.ErrNoLeader), CauseNoLeader},
		{rpctypes.ErrAuthFailed, CauseAuth},
		{rpctypes.ErrPermissionDenied, CauseAuth},
		{rpctypes.ErrInvalidAuthToken, CauseAuth},
		{errors.New(`connection error: desc = "transport: authentication handshake failed: tls: bad certificate"`), CauseTLS},
		{context.Canceled, CauseCanceled},
		{context.DeadlineExceeded, CauseTimeout},
		{errors.New("rpc error: code = Unknown desc = context deadline exceeded"), CauseTimeout}, // seen in the faults tier
		{rpctypes.ErrGRPCTimeout, CauseTimeout},                                                  // the server's own "request timed out"
		{rpctypes.ErrTimeout, CauseTimeout},
		{rpctypes.ErrTimeoutDueToLeaderFail, CauseTimeout},
		{errors.New("rpc error: code = Unavailable desc = error reading from server: connection reset by peer"), CauseUnreachable},
		{rpctypes.ErrCompacted, CauseOther},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	msg := (&EtcdError{Op: "take slot 1", Group: "web", Cause: CauseNoLeader, Endpoints: []string{"http://127.0.0.1:1"}, Err: rpctypes.ErrNoLeader}).Error()
	for _, w := range []string{`group "web": take slot 1: etcd has no leader (quorum lost?)`, "http://127.0.0.1:1", "majority"} {
		if !strings.Contains(msg, w) {
			t.Errorf("no-leader message lacks %q: %s", w, msg)
		}
	}
	if strings.Contains(msg, "TLS") || strings.Contains(msg, "password") {
		t.Errorf("no-leader message hints at TLS or auth: %s", msg)
	}
}
