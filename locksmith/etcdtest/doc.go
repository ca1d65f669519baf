// Package etcdtest starts an embedded etcd server (go.etcd.io/etcd/server/v3/embed) for tests
// (New) and for programs such as the fleet demo (Start):
// one member on 127.0.0.1 with ephemeral ports, a fresh data directory, fast election settings
// (TickMs 10, ElectionMs 100) so it is ready in well under a second, and a connected client.
//
// Options turn on what locksmithctl's flags must be tested against: server TLS that clients
// verify with a CA file only (WithTLS), TLS with required client certificates (WithMTLS), and
// password authentication (WithAuth). Certificates are made per server by an in-memory test CA
// and written as PEM files into the test's temporary directory.
//
// Cleanup is registered with t.Cleanup in the order etcd needs: clients first, then the server
// (a server with connected clients takes seconds to stop), and the server is closed exactly once
// even when a test stops it early with Stop.
package etcdtest
