// Package etcdflags holds the etcd connection flags locksmithctl and locksmithd share, in CoreOS
// locksmith's spelling, and maps environment variables onto flags the CoreOS way: flag
// "etcd-cafile" is also PREFIX_ETCD_CAFILE (LOCKSMITHCTL_ or LOCKSMITHD_); the command line wins.
//
// TLS is built from what is given, each piece on its own: -etcd-cafile alone verifies the
// server with that CA (no client certificate); -etcd-certfile with -etcd-keyfile adds a client
// certificate (mTLS); https endpoints without a CA use the system roots. -etcd-username with
// -etcd-password authenticate with etcd's user/password auth, with or without TLS.
package etcdflags
