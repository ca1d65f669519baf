package locksmith

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrFull matches a *FullError: every slot of the group is taken.
	ErrFull = errors.New("all reboot slots are taken")
	// ErrNotHeld: the id holds no slot in the group.
	ErrNotHeld = errors.New("not a holder")
	// ErrNotHolder: a caller tried to release another holder's slot without force.
	ErrNotHolder = errors.New("only the holder may release its slot")
	// ErrLost: the slot a Lock names was released, broken or expired and is no longer this tenure.
	ErrLost = errors.New("reboot slot lost")
)

// FullError says a group has no free slot.
type FullError struct {
	Group   string
	Max     int
	Holders []string
	// Waiting is how many hosts are queued for a slot.
	Waiting int
}

func (e *FullError) Error() string {
	queued := ""
	if e.Waiting > 0 {
		queued = fmt.Sprintf(", %d queued", e.Waiting)
	}
	held := strings.Join(e.Holders, ", ")
	if held == "" {
		held = "nobody"
	}
	return fmt.Sprintf("locksmith: group %q: %v (max %d, held by %s%s); wait, or raise it with locksmithctl set-max",
		e.Group, ErrFull, e.Max, held, queued)
}

// Is makes errors.Is(err, ErrFull) true.
func (e *FullError) Is(target error) bool { return target == ErrFull }

// Cause is why an etcd request of the semaphore failed, as far as the client can tell.
type Cause int

const (
	// CauseOther: an error etcd returned that none of the others explain (its text says more).
	CauseOther Cause = iota
	// CauseNoLeader: a member answered but has no leader, so it can neither read nor write
	// linearizably; most often a majority of the members is down or cut off (quorum lost).
	CauseNoLeader
	// CauseUnreachable: no connection to any endpoint (refused, no route, name unknown).
	CauseUnreachable
	// CauseTimeout: connected, but no answer before the deadline (a stopped or overloaded
	// member, a slow disk).
	CauseTimeout
	// CauseAuth: etcd refused the user name, password or token, or the user's role.
	CauseAuth
	// CauseTLS: the TLS handshake failed (certificate, CA, or plain http against https).
	CauseTLS
	// CauseCanceled: the caller gave up (its context was canceled), not etcd.
	CauseCanceled
)

var causeNames = map[Cause]string{CauseOther: "other", CauseNoLeader: "no-leader", CauseUnreachable: "unreachable",
	CauseTimeout: "timeout", CauseAuth: "auth", CauseTLS: "tls", CauseCanceled: "canceled"}

// String is a short name for metrics labels and tables.
func (c Cause) String() string { return causeNames[c] }

// EtcdError is an etcd request of the semaphore that failed. Its message names the operation,
// the group, the cause and what an operator can do; errors.Is sees through it to the etcd or
// context error.
type EtcdError struct {
	// Op is what the semaphore was doing, e.g. "take slot 0" or "read the group".
	Op    string
	Group string
	Cause Cause
	// Endpoints are the client's etcd endpoints.
	Endpoints []string
	Err       error
}

func (e *EtcdError) Error() string {
	eps := strings.Join(e.Endpoints, ",")
	var why string
	switch e.Cause {
	case CauseNoLeader:
		why = fmt.Sprintf("etcd has no leader (quorum lost?): a member of %s answers but cannot decide; a majority of the cluster's members must run and reach each other", eps)
	case CauseUnreachable:
		why = fmt.Sprintf("etcd unreachable at %s: the connection was refused or lost; is etcd running there and is -endpoint right?", eps)
	case CauseTimeout:
		why = fmt.Sprintf("etcd at %s did not complete the request in time (a stopped, overloaded or partitioned member, or a leader change?); list more members with -endpoint", eps)
	case CauseAuth:
		why = fmt.Sprintf("etcd at %s refused the credentials; check -etcd-username/-etcd-password and the user's role on the locksmith prefix", eps)
	case CauseTLS:
		why = fmt.Sprintf("TLS with etcd at %s failed; check https:// in -endpoint and -etcd-cafile, -etcd-certfile, -etcd-keyfile", eps)
	case CauseCanceled:
		why = "canceled"
	default:
		why = fmt.Sprintf("etcd at %s", eps)
	}
	return fmt.Sprintf("locksmith: group %q: %s: %s: %v", e.Group, e.Op, why, e.Err)
}

func (e *EtcdError) Unwrap() error { return e.Err }
