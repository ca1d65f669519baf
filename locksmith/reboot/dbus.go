package reboot

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/sysd"
)

// UpdatedOverDBus is the update agent at com.coreos.update1 on conn (the system bus on a host).
//
// Method calls go to the owner of com.coreos.update1. StatusUpdate signals are accepted from any
// sender the bus lets through, as CoreOS locksmithd does, so "locksmithctl send-need-reboot" can
// trigger a reboot; the bus policy decides who may send them. BootStatus, which releases slots,
// is accepted only from the owner of com.coreos.update1.
func UpdatedOverDBus(conn *dbus.Conn) Updated {
	return &dbusUpdated{conn: conn, api: dbusapi.NewClient(conn)}
}

type dbusUpdated struct {
	conn *dbus.Conn
	api  *dbusapi.Client
}

func (u *dbusUpdated) GetStatus(ctx context.Context) (dbusapi.Status, error) {
	return u.api.GetStatus(ctx)
}

func (u *dbusUpdated) GetBootStatus(ctx context.Context) (dbusapi.BootStatus, error) {
	return u.api.GetBootStatus(ctx)
}

func (u *dbusUpdated) Subscribe(ctx context.Context) (<-chan dbusapi.Signal, error) {
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchObjectPath(dbusapi.ObjectPath), dbus.WithMatchInterface(dbusapi.ManagerInterface), dbus.WithMatchMember("StatusUpdate")},
		{dbus.WithMatchSender(dbusapi.BusName), dbus.WithMatchObjectPath(dbusapi.ObjectPath),
			dbus.WithMatchInterface(dbusapi.UpdatedInterface), dbus.WithMatchMember("BootStatus")},
	}
	for i, r := range rules {
		if err := u.conn.AddMatchSignalContext(ctx, r...); err != nil {
			for _, done := range rules[:i] {
				u.conn.RemoveMatchSignal(done...)
			}
			return nil, fmt.Errorf("daemon: subscribe to the update agent's signals: %w", err)
		}
	}
	raw := make(chan *dbus.Signal, 64)
	u.conn.Signal(raw)
	out := make(chan dbusapi.Signal, 64)
	go func() {
		defer close(out)
		defer func() {
			u.conn.RemoveSignal(raw)
			for _, r := range rules {
				u.conn.RemoveMatchSignal(r...)
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case sig, ok := <-raw:
				if !ok {
					return
				}
				if s, ok := decodeSignal(sig); ok {
					select {
					case out <- s:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return out, nil
}

// decodeSignal turns a raw signal into a dbusapi.Signal; malformed ones are dropped.
func decodeSignal(sig *dbus.Signal) (dbusapi.Signal, bool) {
	if sig.Path != dbusapi.ObjectPath {
		return dbusapi.Signal{}, false
	}
	switch sig.Name {
	case dbusapi.SignalStatusUpdate:
		var st dbusapi.Status
		if dbus.Store(sig.Body, &st.LastCheckedTime, &st.Progress, &st.CurrentOperation, &st.NewVersion, &st.NewSize) == nil {
			return dbusapi.Signal{Status: &st}, true
		}
	case dbusapi.SignalBootStatus:
		var b dbusapi.BootStatus
		if dbus.Store(sig.Body, &b.State, &b.BootedVersion, &b.PreviousVersion, &b.Slot) == nil {
			return dbusapi.Signal{Boot: &b}, true
		}
	}
	return dbusapi.Signal{}, false
}

// LogindRebooter reboots through systemd-logind on conn (the system bus on a host).
func LogindRebooter(conn *dbus.Conn) Rebooter {
	return logindRebooter{sysd.Logind{Conn: conn}}
}

type logindRebooter struct{ c sysd.Logind }

func (l logindRebooter) Reboot(ctx context.Context) error { return l.c.Reboot(ctx) }

func (l logindRebooter) BlockingInhibitors(ctx context.Context) ([]string, error) {
	in, err := l.c.BlockingInhibitors(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(in))
	for i, x := range in {
		out[i] = x.String()
	}
	return out, nil
}
