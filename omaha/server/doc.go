// Package server is omahad, the twinslot update server: the Omaha endpoint hosts check in
// with, payload downloads, the JSON admin API (package admin), the dashboard,
// Prometheus metrics and a health check: Config, New and Serve. The command line is package
// omaha/omahad.
//
// # Routes
//
//	POST /v1/update/                  Omaha v3 in Flatcar's dialect (package omaha)
//	GET  /packages/{sha256}/{name}    a published payload file (or, when name is one of its
//	                                  extras, that extra): Range, If-Range, ETag = the file's sha256
//	     /api/v1/…                    the admin API (bearer tokens; see package admin)
//	GET  /                            the dashboard (token as HTTP Basic password, any user);
//	                                  its changes go through the admin API with a bearer token
//	GET  /dashboard.js, /dashboard.css its script and style sheet (no data, no token), under
//	                                  the page's Content-Security-Policy (script-src 'self')
//	GET  /metrics                     Prometheus
//	GET  /healthz                     200 "ok" when the database answers and the queue has room
//
// # Update checks
//
// Each <app> of a request is validated before anything is recorded (a bad machine id, boot id,
// version or text field refuses the whole request with 400; a malformed or oversized document
// gets 400/413). An unknown app is answered error-unknownApplication; an unknown track (not a
// group id, group name or channel name) app status error-unknownApplicationOrGroup with
// updatecheck error-internal, as Nebraska answers; neither is recorded. A host without a board
// is served the board of its os arch (arm64, aarch64, arm → arm64-usr), else amd64-usr. Otherwise events are
// applied to the instance first (13/1 downloading, 14/1 downloaded, 3/1 installed, 3/0 error,
// 3/0 with code 44 rolled back, 3/2 after an update complete; unknown pairs are recorded and
// change nothing; a 3/0 from a host that runs its granted version and checked in on it, such as
// update_engine's 2000+HTTP status for a failed update check, only sets its last error and is
// recorded with no target version), then the update check is decided by plan:
//
//   - no package for the host's board on the group's channel, or the host is not older
//     (CompareVersions; never a downgrade): noupdate;
//   - the package is the version the host rolled back from: noupdate (until a newer one);
//   - the group is paused: noupdate, state onhold;
//   - the host holds a grant for that version (it reported installed or failed since, or the
//     update timeout has not passed): offered again, no new slot;
//   - outside the group's office hours: noupdate (reason office-hours), state onhold;
//   - the host's wave position (store.WavePosition) is beyond the share of the group's open
//     wave for that version: noupdate (reason wave), state onhold, no grant;
//   - otherwise a grant transaction (store.DB.Grant) takes a slot of "max updates per period"
//     under the group's row lock: ok, or noupdate and onhold when the cap is reached.
//
// Waves: every Config.AdvanceWavesEvery, store.DB.AdvanceWave records the first wave of each
// version a group with waves rolls out and opens the next wave of one that soaked its time
// while the group stayed enabled and not halted; each opening is logged, audited as omahad's
// (group.wave) and shown in omahad_wave, omahad_wave_hosts_share and the status's rollout.
// The open waves are part of the catalog, so update checks read no database for them.
//
// Automatic halt: a group with halt_on_failures = N is paused (Enabled=false, with
// halted_reason and halted_at) by the check-in writer in the same transaction that records the
// event making N distinct hosts of the group that reported 3/0 (an install failure, a health
// gate failure 1001, a rollback 44) for the version the group's channel currently offers,
// counting since the group was last enabled. This process reloads its catalog right after, so
// the next check gets noupdate (re-offers included); other replicas follow within CachePoll,
// and the store refuses their grants meanwhile. Re-enabling clears the reason.
//
// Policy never produces an error status: update_engine treats anything but ok/noupdate as an
// invalid response. The answer carries this server's /packages/ URL (after the channel's
// external base URL when one is set; only the package's own directory when it is external),
// hex hash_sha256, base64 SHA-1 hash, a Flatcar package's extras (required="false") and the
// postinstall action's base64 sha256, with DisablePayloadBackoff="true" only when the group's
// policy asks for it.
//
// # Performance
//
// Apps, channels, packages and groups are served from an in-memory catalog, rebuilt after
// every admin write and whenever the store's catalog version changes (polled every
// Config.CachePoll, so replicas on PostgreSQL see each other's writes within that time).
// Check-ins and events are queued and written by one goroutine in batches, one transaction
// per batch (group commit). Durability contract: a routine check-in (update check or ping whose
// only event is 3/2) is answered before its row is written, and a crash of the process loses at
// most the rows queued but not committed — in practice the last Config.FlushInterval of
// traffic (bounded by Config.QueueRows); the host's next check writes it again. A request
// carrying any other event (13/1, 14/1, 3/1, a failure 3/0, a rollback 3/0/44, unknown pairs)
// is answered only after its rows and everything queued before them are committed, since
// update_engine never resends an acknowledged event; such a request makes the writer start a
// batch at once instead of waiting for the interval. Grants are decided in the same way, in the
// next batch's transaction, before the answer: a granted update is never lost.
//
// The writer, the only writer of instance rows, keeps the rows it wrote in memory
// (Config.InstanceCache rows, filled from the database at start), so an update check reads
// nothing from the database: when every stored instance fitted, an unknown machine is known to
// be new. Requests of one machine are serialised by a lock of that machine only (held across
// its grant decision, so its next request sees the grant); other machines never wait for it.
// The cache assumes no other server writes the same instances: with replicas on one
// PostgreSQL, route each machine to one replica or run with --instance-cache -1.
//
// # Enrollment
//
// POST /v1/enroll (JSON omaha.EnrollRequest, at most 4 KiB, Content-Type application/json)
// exchanges an enrollment token for a host credential bound to the token's app (and group, if
// it names one) and the machine id; 403 with the reason for a token that is unknown, revoked,
// expired or used up, and nothing is stored. Tokens and credentials are stored as SHA-256
// hashes; every credential hash is kept in memory (loaded at start, added by enrollments, and
// re-read from the database, at most once a second per machine, when a presented credential
// matches nothing, as after an enrollment through another replica). Deleting a credential
// (DELETE /api/v1/apps/{app}/hosts/{machine}/credential) or replacing it (enrolling its machine
// id again) bumps the store's credentials version; every server polls it each Config.CachePoll
// and reloads the credentials when it changed.
//
// A group whose policy has RequireEnrollment trusts an <app> of a request only when the request
// carries "Authorization: Bearer <credential>" matching that app and machine id (and group), or,
// with Anonymous = flatcar, when it carries no credential and comes from update_engine. An
// untrusted update check is answered noupdate (reason not-enrolled) and takes no slot; its
// events are recorded with no target version and change nothing about the instance's grant
// (so they never count toward HaltOnFailures, in status failures, nor toward a promotion gate's
// min_committed); and when the machine id is enrolled, the request does not change its instance
// row at all. The check costs one SHA-256 and one map lookup.
//
// GrantStartTimeout frees a grant's slot when its host has not reported 13/1 within it (the
// instance is still granted, on hold or idle, and has reported neither installing nor failing
// since the grant): store's active count leaves it out, and plan treats the host as holding no
// grant, so its next check asks for a new slot.
//
// # Uploads
//
// A publish streams the body to a temporary file under the store directory while hashing it
// (SHA-256, SHA-1), fsyncs it, verifies it with payload.Open and File.Verify against the app's
// trust root and app id, and only then renames it to sha256/<hex> (content-addressed, fsync of
// the directory) and records the package. A payload that does not verify is refused with 422
// and nothing is kept. Chunk data is not decoded on the server; hosts check every chunk. An
// app without a trust root refuses twinslot payloads (409).
//
// A Flatcar package (update_engine's CrAU payload, whose signature only the host can check) is
// made of files uploaded first (POST …/files: stored by SHA-256 the same way, unverified) and
// then named with their sizes and hashes (POST …/flatcar): each stored file is re-read and must
// have the given size, SHA-256 and SHA-1, and the payload must start with "CrAU", major version
// 1 and a manifest size that fits; else 422 (404 for a file never uploaded) and nothing is
// recorded. An external Flatcar package (a URL) is checked for well-formed fields only. Files
// uploaded but never named stay in the store directory.
package server
