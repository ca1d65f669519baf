package logind

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// D-Bus names of logind.
const (
	BusName    = "org.freedesktop.login1"
	ObjectPath = dbus.ObjectPath("/org/freedesktop/login1")
	Manager    = "org.freedesktop.login1.Manager"
)

// Inhibitor is one entry of ListInhibitors.
type Inhibitor struct {
	What, Who, Why, Mode string
	UID, PID             uint32
}

func (i Inhibitor) String() string {
	return fmt.Sprintf("%s (pid %d): %s", i.Who, i.PID, i.Why)
}

// Client talks to logind over a system bus connection.
type Client struct {
	obj dbus.BusObject
}

// New returns a client using conn (dbus.ConnectSystemBus() on a host).
func New(conn *dbus.Conn) *Client {
	return &Client{obj: conn.Object(BusName, ObjectPath)}
}

// Reboot asks logind to reboot now, without interactive authorization, and returns logind's
// refusal if there is one.
func (c *Client) Reboot(ctx context.Context) error {
	if err := c.obj.CallWithContext(ctx, Manager+".Reboot", 0, false).Err; err != nil {
		return fmt.Errorf("logind: Reboot refused: %w", describe(err))
	}
	return nil
}

// BlockingInhibitors lists the inhibitors that block a shutdown or reboot.
func (c *Client) BlockingInhibitors(ctx context.Context) ([]Inhibitor, error) {
	var raw []struct {
		What, Who, Why, Mode string
		UID, PID             uint32
	}
	if err := c.obj.CallWithContext(ctx, Manager+".ListInhibitors", 0).Store(&raw); err != nil {
		return nil, fmt.Errorf("logind: ListInhibitors: %w", describe(err))
	}
	var out []Inhibitor
	for _, r := range raw {
		if r.Mode == "block" && contains(r.What, "shutdown") {
			out = append(out, Inhibitor(r))
		}
	}
	return out, nil
}

func contains(list, item string) bool {
	for _, w := range strings.Split(list, ":") {
		if w == item {
			return true
		}
	}
	return false
}

// describe turns a D-Bus error reply into a message an operator can act on.
func describe(err error) error {
	var de dbus.Error
	if errors.As(err, &de) {
		msg := de.Name
		switch de.Name {
		case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner":
			msg += " (is systemd-logind running?)"
		case "org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
			msg += " (locksmithd must run as root)"
		}
		return fmt.Errorf("%s: %w", msg, err)
	}
	return err
}
