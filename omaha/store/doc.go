// Package store keeps the update server's state: apps and their trust roots, packages, channels,
// groups with their rollout policy, instances (one row per machine and app) and the events hosts
// report, plus the admin API tokens, and the enrollment tokens and host credentials of hosts that
// enrolled (hosts.go).
//
// # Backends
//
// [Open] takes a DSN. A "postgres://" or "postgresql://" URL opens PostgreSQL through pgx; anything
// else is a SQLite file path (modernc.org/sqlite, pure Go), the default. Both backends run the same
// SQL text (placeholders are $1…$N, which SQLite binds by position too); what differs is kept in a
// small dialect value: DDL for auto-increment ids, row locking, connection pools. One conformance
// suite (store_test.go) runs against both; the PostgreSQL run needs TWINSLOT_TEST_POSTGRES (a DSN)
// and skips with a message otherwise.
//
// SQLite runs in WAL mode with synchronous=FULL and a busy timeout. All writes go through one
// writer connection (BEGIN IMMEDIATE), reads through a small read-only pool, so readers never wait
// for the writer and writers never see SQLITE_BUSY from each other. The writer does not
// checkpoint on commit; a connection of its own runs a PASSIVE checkpoint every 500 ms (and at
// Close), so a commit costs its WAL frames and one fsync, and checkpoint I/O stays off it.
//
// # Schema and migrations
//
// The schema is a list of numbered migrations compiled into the binary; [Open] applies the missing
// ones in order, each in its own transaction, and records them in schema_migrations (version,
// name, applied). A database newer than the binary is refused. On PostgreSQL a transaction-level
// advisory lock serialises replicas that start at the same time.
//
// Times are stored as Unix milliseconds (0 = never), durations as milliseconds.
//
// # Invariants
//
//   - Every app has the channels alpha, beta and stable and one default group per channel, named
//     after the channel; they are created in the same transaction as the app and cannot be removed.
//   - A channel's package for a board is the newest entry of its history whose package is not
//     withdrawn; withdrawing a package makes every channel that points at it fall back.
//   - A package is unique per (app, board, version).
//   - Admin writes bump a catalog version ([DB.CatalogVersion]) in the same transaction, so caches
//     in several server replicas can poll one integer to know when to reload.
//   - A grant ([DB.Grant]) is decided and written in one transaction that holds the group's row
//     lock, so several replicas never grant more than the group's policy allows.
//   - Check-ins and events are written in batches ([DB.WriteCheckins]), one transaction per batch.
//   - A group with HaltOnFailures = N is paused in the transaction of the batch whose failure
//     events (3/0, rollback 3/0/44 included) bring the distinct hosts of that group failing the
//     version its channel currently offers, counted since the group was last enabled, to N;
//     the batch's grants are decided after that and see the pause. The reason and time are
//     stored with the group; re-enabling clears them (migration 2).
//   - A group's waves and office hours are stored as their canonical specs (migration 6); the
//     open wave of each (group, version) is a row of group_waves per opened wave, inserted by
//     [DB.AdvanceWave] under the group's row lock, so replicas open each wave once.
//   - Enrollment tokens and host credentials are stored only as SHA-256 hashes. A credential is
//     bound to one (app, machine id), and to a group when its token named one; [DB.Enroll] spends
//     one use of the token and writes the credential in one transaction, or changes nothing
//     (migration 7, which also adds the group columns require_enrollment, anonymous and
//     grant_start_timeout_ms).
//   - With Policy.GrantStartTimeout, a grant whose instance is still granted, on hold or idle
//     (no 13/1 since) and reported neither installing nor failing since the grant holds no slot
//     after that time ([NotStarted]).
//   - Bad input never changes the database: every write validates first and runs in a transaction.
package store
