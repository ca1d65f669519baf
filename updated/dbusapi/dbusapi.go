package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// Names of the API.
const (
	BusName          = "com.coreos.update1"
	ObjectPath       = dbus.ObjectPath("/com/coreos/update1")
	ManagerInterface = "com.coreos.update1.Manager"
	UpdatedInterface = "io.twinslot.Updated1"

	SignalStatusUpdate = ManagerInterface + ".StatusUpdate"
	SignalBootStatus   = UpdatedInterface + ".BootStatus"

	// ErrorNotAllowed is the D-Bus error name for a call the current state forbids.
	ErrorNotAllowed = "com.coreos.update1.Error.NotAllowed"
	// ErrorFailed is the D-Bus error name for any other failure.
	ErrorFailed = "com.coreos.update1.Error.Failed"
)

// The current_operation strings.
const (
	OpIdle                = "UPDATE_STATUS_IDLE"
	OpCheckingForUpdate   = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
	OpUpdateAvailable     = "UPDATE_STATUS_UPDATE_AVAILABLE"
	OpDownloading         = "UPDATE_STATUS_DOWNLOADING"
	OpVerifying           = "UPDATE_STATUS_VERIFYING"
	OpFinalizing          = "UPDATE_STATUS_FINALIZING"
	OpUpdatedNeedReboot   = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
	OpReportingErrorEvent = "UPDATE_STATUS_REPORTING_ERROR_EVENT"
)

// NoVersion is new_version when no update is known, as update_engine sends it.
const NoVersion = "0.0.0"

// Operations lists every current_operation string.
var Operations = []string{OpIdle, OpCheckingForUpdate, OpUpdateAvailable, OpDownloading,
	OpVerifying, OpFinalizing, OpUpdatedNeedReboot, OpReportingErrorEvent}

// Status is the Manager interface's status tuple.
type Status struct {
	LastCheckedTime  int64   `json:"last_checked_time"` // Unix seconds, 0 if never
	Progress         float64 `json:"progress"`          // 0..1
	CurrentOperation string  `json:"current_operation"`
	NewVersion       string  `json:"new_version"`
	NewSize          int64   `json:"new_size"`
}

// BootStatus is the Updated1 interface's boot tuple.
type BootStatus struct {
	State           string `json:"state"`
	BootedVersion   string `json:"booted_version"`
	PreviousVersion string `json:"previous_version"`
	Slot            string `json:"slot"`
}

// ErrNotAllowed is returned by a Backend (and by Client methods) when the state forbids a call.
var ErrNotAllowed = errors.New("not allowed in the current state")

// Backend is what the exported object calls: the agent.
type Backend interface {
	Status() Status
	BootStatus() BootStatus
	AttemptUpdate() error
	ResetStatus() error
}

// Server is the exported object on a bus connection.
type Server struct {
	conn *dbus.Conn
	mu   sync.Mutex // serialises signal emission so signals keep their order
}

const introspectXML = `<node>
  <interface name="` + ManagerInterface + `">
    <method name="AttemptUpdate"></method>
    <method name="ResetStatus"></method>
    <method name="GetStatus">
      <arg type="x" name="last_checked_time" direction="out"/>
      <arg type="d" name="progress" direction="out"/>
      <arg type="s" name="current_operation" direction="out"/>
      <arg type="s" name="new_version" direction="out"/>
      <arg type="x" name="new_size" direction="out"/>
    </method>
    <signal name="StatusUpdate">
      <arg type="x" name="last_checked_time"/>
      <arg type="d" name="progress"/>
      <arg type="s" name="current_operation"/>
      <arg type="s" name="new_version"/>
      <arg type="x" name="new_size"/>
    </signal>
  </interface>
  <interface name="` + UpdatedInterface + `">
    <method name="GetBootStatus">
      <arg type="s" name="state" direction="out"/>
      <arg type="s" name="booted_version" direction="out"/>
      <arg type="s" name="previous_version" direction="out"/>
      <arg type="s" name="slot" direction="out"/>
    </method>
    <signal name="BootStatus">
      <arg type="s" name="state"/>
      <arg type="s" name="booted_version"/>
      <arg type="s" name="previous_version"/>
      <arg type="s" name="slot"/>
    </signal>
  </interface>` + introspect.IntrospectDataString + `</node>`

// manager and updated1 are the method tables godbus exports (one per interface, so each
// interface has exactly its own methods).
type manager struct{ b Backend }

func (m manager) GetStatus() (int64, float64, string, string, int64, *dbus.Error) {
	s := m.b.Status()
	return s.LastCheckedTime, s.Progress, s.CurrentOperation, s.NewVersion, s.NewSize, nil
}

func (m manager) AttemptUpdate() *dbus.Error { return toDBus(m.b.AttemptUpdate()) }
func (m manager) ResetStatus() *dbus.Error   { return toDBus(m.b.ResetStatus()) }

type updated1 struct{ b Backend }

func (u updated1) GetBootStatus() (string, string, string, string, *dbus.Error) {
	s := u.b.BootStatus()
	return s.State, s.BootedVersion, s.PreviousVersion, s.Slot, nil
}

func toDBus(err error) *dbus.Error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotAllowed):
		return dbus.NewError(ErrorNotAllowed, []any{err.Error()})
	default:
		return dbus.NewError(ErrorFailed, []any{err.Error()})
	}
}

// Export exports the object on conn and takes the bus name. It fails if another process owns
// the name (another updated is running).
func Export(conn *dbus.Conn, b Backend) (*Server, error) {
	if err := conn.Export(manager{b}, ObjectPath, ManagerInterface); err != nil {
		return nil, fmt.Errorf("dbusapi: export %s: %w", ManagerInterface, err)
	}
	if err := conn.Export(updated1{b}, ObjectPath, UpdatedInterface); err != nil {
		return nil, fmt.Errorf("dbusapi: export %s: %w", UpdatedInterface, err)
	}
	if err := conn.Export(introspect.Introspectable(introspectXML), ObjectPath, "org.freedesktop.DBus.Introspectable"); err != nil {
		return nil, fmt.Errorf("dbusapi: export introspection: %w", err)
	}
	s := &Server{conn: conn}
	reply, err := conn.RequestName(BusName, dbus.NameFlagDoNotQueue)
	if err != nil {
		s.unexport()
		return nil, fmt.Errorf("dbusapi: request bus name %s: %w", BusName, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner {
		s.unexport()
		return nil, fmt.Errorf("dbusapi: bus name %s is owned by another process (is another updated or update_engine running?)", BusName)
	}
	return s, nil
}

func (s *Server) unexport() {
	s.conn.Export(nil, ObjectPath, ManagerInterface)
	s.conn.Export(nil, ObjectPath, UpdatedInterface)
	s.conn.Export(nil, ObjectPath, "org.freedesktop.DBus.Introspectable")
}

// EmitStatus sends the StatusUpdate signal.
func (s *Server) EmitStatus(st Status) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.conn.Emit(ObjectPath, SignalStatusUpdate,
		st.LastCheckedTime, st.Progress, st.CurrentOperation, st.NewVersion, st.NewSize); err != nil {
		return fmt.Errorf("dbusapi: emit StatusUpdate: %w", err)
	}
	return nil
}

// EmitBootStatus sends the BootStatus signal.
func (s *Server) EmitBootStatus(b BootStatus) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.conn.Emit(ObjectPath, SignalBootStatus, b.State, b.BootedVersion, b.PreviousVersion, b.Slot); err != nil {
		return fmt.Errorf("dbusapi: emit BootStatus: %w", err)
	}
	return nil
}

// Close releases the bus name and unexports the object (the connection stays open).
func (s *Server) Close() error {
	s.unexport()
	if _, err := s.conn.ReleaseName(BusName); err != nil {
		return fmt.Errorf("dbusapi: release bus name: %w", err)
	}
	return nil
}

// Client calls the agent over a bus connection.
type Client struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

// NewClient returns a client using conn (dbus.ConnectSystemBus() on a host).
func NewClient(conn *dbus.Conn) *Client {
	return &Client{conn: conn, obj: conn.Object(BusName, ObjectPath)}
}

func fromDBus(op string, err error) error {
	if err == nil {
		return nil
	}
	var de dbus.Error
	if errors.As(err, &de) {
		msg := de.Name
		if len(de.Body) > 0 {
			if s, ok := de.Body[0].(string); ok {
				msg = s
			}
		}
		switch de.Name {
		case ErrorNotAllowed:
			return fmt.Errorf("dbusapi: %s: %s: %w", op, msg, ErrNotAllowed)
		case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner":
			return fmt.Errorf("dbusapi: %s: updated is not running (no owner of %s on this bus): %w", op, BusName, err)
		}
		return fmt.Errorf("dbusapi: %s: %s", op, msg)
	}
	return fmt.Errorf("dbusapi: %s: %w", op, err)
}

// GetStatus calls Manager.GetStatus.
func (c *Client) GetStatus(ctx context.Context) (Status, error) {
	var s Status
	err := c.obj.CallWithContext(ctx, ManagerInterface+".GetStatus", 0).
		Store(&s.LastCheckedTime, &s.Progress, &s.CurrentOperation, &s.NewVersion, &s.NewSize)
	return s, fromDBus("GetStatus", err)
}

// GetBootStatus calls Updated1.GetBootStatus.
func (c *Client) GetBootStatus(ctx context.Context) (BootStatus, error) {
	var b BootStatus
	err := c.obj.CallWithContext(ctx, UpdatedInterface+".GetBootStatus", 0).
		Store(&b.State, &b.BootedVersion, &b.PreviousVersion, &b.Slot)
	return b, fromDBus("GetBootStatus", err)
}

// AttemptUpdate calls Manager.AttemptUpdate.
func (c *Client) AttemptUpdate(ctx context.Context) error {
	return fromDBus("AttemptUpdate", c.obj.CallWithContext(ctx, ManagerInterface+".AttemptUpdate", 0).Err)
}

// ResetStatus calls Manager.ResetStatus.
func (c *Client) ResetStatus(ctx context.Context) error {
	return fromDBus("ResetStatus", c.obj.CallWithContext(ctx, ManagerInterface+".ResetStatus", 0).Err)
}

// Signal is one signal from the agent: exactly one field is set.
type Signal struct {
	Status *Status
	Boot   *BootStatus
}

// Subscription receives the agent's StatusUpdate and BootStatus signals.
type Subscription struct {
	conn  *dbus.Conn
	ch    chan *dbus.Signal
	rules [][]dbus.MatchOption
}

// Subscribe starts receiving signals. Signals sent after Subscribe returns are delivered by
// Next, so a caller can Subscribe, then GetStatus, and miss nothing. Close it when done.
func (c *Client) Subscribe(ctx context.Context) (*Subscription, error) {
	base := []dbus.MatchOption{dbus.WithMatchSender(BusName), dbus.WithMatchObjectPath(ObjectPath)}
	s := &Subscription{conn: c.conn, ch: make(chan *dbus.Signal, 256)}
	for _, m := range [][2]string{{ManagerInterface, "StatusUpdate"}, {UpdatedInterface, "BootStatus"}} {
		rule := append(append([]dbus.MatchOption(nil), base...), dbus.WithMatchInterface(m[0]), dbus.WithMatchMember(m[1]))
		if err := c.conn.AddMatchSignalContext(ctx, rule...); err != nil {
			s.Close()
			return nil, fmt.Errorf("dbusapi: subscribe to %s.%s: %w", m[0], m[1], err)
		}
		s.rules = append(s.rules, rule)
	}
	c.conn.Signal(s.ch)
	return s, nil
}

// Next returns the next signal, or an error when ctx is done or the connection closed.
func (s *Subscription) Next(ctx context.Context) (Signal, error) {
	for {
		select {
		case <-ctx.Done():
			return Signal{}, ctx.Err()
		case sig, ok := <-s.ch:
			if !ok {
				return Signal{}, errors.New("dbusapi: bus connection closed")
			}
			if sig.Path != ObjectPath {
				continue
			}
			switch sig.Name {
			case SignalStatusUpdate:
				var st Status
				if err := dbus.Store(sig.Body, &st.LastCheckedTime, &st.Progress, &st.CurrentOperation, &st.NewVersion, &st.NewSize); err == nil {
					return Signal{Status: &st}, nil
				}
			case SignalBootStatus:
				var b BootStatus
				if err := dbus.Store(sig.Body, &b.State, &b.BootedVersion, &b.PreviousVersion, &b.Slot); err == nil {
					return Signal{Boot: &b}, nil
				}
			}
		}
	}
}

// Close stops the subscription.
func (s *Subscription) Close() {
	s.conn.RemoveSignal(s.ch)
	for _, r := range s.rules {
		s.conn.RemoveMatchSignal(r...)
	}
}
