// Package omahatest runs a real omahad in-process for tests: package server on SQLite in
// t.TempDir() (or on PostgreSQL, see PostgresDSN), served by httptest on loopback, with an
// admin token and helpers to create apps, publish real signed payloads, promote, set policies,
// and read back instances and events. Host is a minimal simulated host speaking Omaha.
//
//	s := omahatest.New(t)
//	key := payloadtest.NewKey(t, "")
//	s.CreateApp(t, payload.DefaultAppID, payloadtest.TrustRoot(t, 1, 0, key))
//	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
//	h := s.Host(t, "stable", "1.0.0")
//	u := h.Check(t)           // *omaha.Update offered, or nil
//	h.Event(t, omaha.EventTypeUpdateDownloadStarted, omaha.EventResultSuccess, 0)
//	in := s.Instance(t, h.MachineID)
//
// Everything is cleaned up by t.Cleanup. Reads (Instances, Events, Instance) first write the
// check-ins the server still has queued, so they see every request made before.
package omahatest
