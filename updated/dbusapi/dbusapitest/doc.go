// Package dbusapitest puts a scripted update agent on a test bus: com.coreos.update1 served by
// updated's real exporter (dbusapi.Export) over a Backend whose status and boot status the test
// sets, each change emitted as the StatusUpdate or BootStatus signal the real agent would send.
// Clients of the agent (locksmithd, locksmithctl) are tested against it without running updated.
//
// AttemptUpdate and ResetStatus succeed and change nothing. Use it with updated/dbustest's
// private bus.
package dbusapitest
