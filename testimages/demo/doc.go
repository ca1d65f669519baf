// Package demo is `make demo`: a whole twinslot rollout in one process with nothing but Go.
// Main starts omahad (package omaha/server on SQLite, 127.0.0.1:0) and an embedded etcd
// (etcdtest.Start), builds a 1.0.0 disk once and copies it per host, builds a 1.0.1 /usr image
// (5 % of the files changed) and a broken 1.0.2, makes a signing key for the run, and drives
// the server the way a release engineer does, through the payload and releasectl command
// lines run in-process (keygen, trust init, build, sign; app create, publish, promote, group
// update). The hosts are a testimages/fleet: each runs the real update agent and locksmithd.
//
// The scenario and what Main checks before exiting 0:
//
//  1. 1.0.1 goes to alpha, then stable; locksmith max M: every host installs it, reboots when it
//     holds a slot, commits the new boot, gives the slot back.
//  2. The group gets "max 1 update per hour, halt on 1 failure" (the server's clock is moved an
//     hour ahead so 1.0.1's grants leave that window); a broken 1.0.2 is published and promoted.
//     The one host granted it fails the health gate, rolls back to 1.0.1 (committed), keeps its
//     reboot slot (locksmith's KeepRolledBack), and the server halts the group; every host then
//     checks in twice more and none is offered 1.0.2.
//
// Output: on a terminal a table repainted in place (host, version, slot, agent operation, boot
// state, locksmithd state, reboot slot) with the latest events under it; otherwise one line per
// event, stamped with seconds since the fleet started. Then a closing table (version, slot,
// committed, history per host), a one-line verdict, and with --json the same as JSON on stdout.
// Logs of every component go to DIR/demo.log.
package demo
