// Package faults is twinslot's fault-injection tier (make faults): real processes killed,
// stopped and restarted under bounded load on loopback, with the invariants checked from
// outside.
//
//   - etcd: a 3-member cluster of the system's etcd binaries; machines contend for a group's
//     reboot slots through locksmith.Store while the leader is killed with SIGKILL, quorum is
//     lost (two members killed) and one member is stopped with SIGSTOP while clients talk only
//     to it. Checked: holders <= max at every revision of a replay of the watch history from
//     revision 1, no holder twice, every acknowledged grant and release in the history, every
//     client error an *locksmith.EtcdError (or a wait that gave up) naming the group and cause.
//   - omahad: two replicas on PostgreSQL and one server on SQLite, each a real omahad process
//     built from this tree, killed with SIGKILL under load from omahaload and restarted.
//     Checked in the database afterwards: every acknowledged failure event, rollback and grant
//     is stored, no event is stored more often than it was sent; routine check-ins lost are
//     counted (they are answered before their group commit by design).
//
// The tests skip unless TWINSLOT_FAULTS=1, and skip what their tools lack (etcd, PostgreSQL).
// Each fault adds a row to the summary file named by TWINSLOT_FAULTS_SUMMARY (tab-separated),
// which make faults prints as a table.
package faults
