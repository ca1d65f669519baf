// Package mirror follows an upstream Omaha server and republishes what it offers on a local
// omahad, as Nebraska's syncer does for the public Flatcar channels.
//
// # What it does
//
// For each followed Pair (upstream app, channel, board → local channel) a Mirror checks in to
// the upstream as a synthetic host: a machine id derived from one stored in the mirror's
// directory (so the upstream sees the same instance every time), version 0.0.0 (so it is always
// offered the newest version), track = the channel, the board. When the upstream offers a
// version the local channel does not carry yet, the Mirror downloads every package of the
// offer with grab (several files at once, partial files resumed after a dropped connection),
// checks each file's size, SHA-256 and, when offered, SHA-1, stores the verified files under
// the directory, and hands them to a Local (the local omahad's admin API), which creates the
// package and points the local channel at it.
//
// # Invariants
//
//   - Nothing is published unless every file of the offer has exactly the offered size and
//     hashes; a mismatch is an *IntegrityError naming the file, what was expected and what
//     arrived, and the bad file is deleted so the next attempt fetches it anew.
//   - A twinslot payload whose manifest names another version, board or app than the offer is
//     refused before it is uploaded: the upload itself moves the local channel.
//   - Files are downloaded under DIR/partial/<sha256> and renamed into
//     DIR/packages/<app>/<board>/<version>/<name> only once verified.
//   - A transient failure (upstream unreachable, HTTP 5xx, a cut download) is retried with a
//     capped, jittered exponential backoff; a round that still fails reports it as an
//     *UpstreamError or a download error, and Run keeps going at the backoff's pace.
//   - Publishing is idempotent: a version the local channel already carries with the same
//     SHA-256 is not downloaded again.
//
// # Layout of DIR
//
//	DIR/machine-id                                   32 hex digits, created once
//	DIR/partial/<sha256 hex>                         downloads in progress (resumable)
//	DIR/packages/<app>/<board>/<version>/<name>      verified files
package mirror
