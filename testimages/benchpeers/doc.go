// Package benchpeers measures what a host downloads and how long it takes to update a /usr
// image with twinslot, casync and zchunk side by side, on the same image pairs, over the same
// loopback HTTP server (issue 17). It is what `make bench-peers` runs.
//
// # Images
//
// A base /usr image (ext4, seeded by Seed) and, from it, one new build for each kind of change
// (testimages.ChangeEdit: small in-place edits; testimages.ChangeRewrite: files rewritten whole)
// and each fraction of changed files, plus a "full" target: an unrelated image of the same size,
// where nothing but zeros can be reused. The same options give the same bytes; everything
// built is kept in Dir and reused by the next run.
//
// # What each tool does, timed as a whole process
//
//   - twinslot: `payload apply --disk D URL` into a GPT disk whose active slot (USR-A) holds the
//     base image and whose USR-B is empty: verification, the scans of both slots, the fetch,
//     the writes, the read-back and the sync.
//   - casync: `casync extract --store=URL --seed=base.img URL.caibx out` (blob index, default
//     chunking).
//   - zchunk: `zckdl -s base.img.zck URL.zck` then `unzck` (a host keeps the base as a .zck).
//
// The three fetch from one in-process HTTP server that counts requests and response bytes, so
// "fetched" includes every header, index and manifest. After each run the output is compared
// byte for byte (by SHA-256) with the target image. Rounds are interleaved: each round runs
// every case with every tool, the tools in a rotating order, and the figures are the medians
// over the rounds (with min–max for the wall time).
//
// # The raw limit
//
// Each round also measures the machine's raw limit in the same process: SHA-256 plus zstd
// decode of the full target image's bytes, cut in 64 KiB blocks, on all cores. A full install
// cannot be faster than decoding and checking every byte once.
package benchpeers
