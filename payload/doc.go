// Package payload is twinslot's update payload: one /usr image, cut into chunks, compressed,
// described by a signed manifest; and the streaming, adaptive installer that writes it into a slot.
//
// # Goals
//
// Sign the small part, stream the big part, never trust a byte before it is checked, and ship one
// file that serves full and delta installs from any older version: a host reuses every chunk it
// already has (in the active slot, or in the target slot from an interrupted attempt) and fetches
// only the rest with HTTP Range requests.
//
// # File format, versions 1 and 2 (all integers big-endian)
//
//	offset  size  field
//	0       8     magic "TWINSLOT"
//	8       2     format version = 1, or 2 with delta sections (readers refuse others)
//	10      2     flags = 0 (readers refuse others)
//	12      4     E: envelope length in bytes (1 ≤ E ≤ A)
//	16      4     A: envelope area length (≤ MaxEnvelopeArea = 1 MiB)
//	20      4     reserved = 0
//	24      8     D: data section length (≤ MaxDataSize)
//	32      8     T: chunk table length (multiple of 64, ≤ MaxChunks·64)
//	40      8     reserved = 0
//	48      A     envelope area: E bytes of DSSE envelope JSON, then zero padding
//	48+A    D     data section: stored chunk bytes
//	48+A+D  T     chunk table: T/64 records of 64 bytes
//
// The file is exactly 48+A+D+T bytes; shorter is ReasonTruncated, longer ReasonMalformed.
// The padding lets 'payload sign' add signatures without moving the data (it still rewrites the
// file through a temporary file and a rename). It is not signed, so readers refuse a payload
// whose padding is not all zero (ReasonMalformed).
//
// The envelope is a DSSE envelope (https://github.com/secure-systems-lab/dsse), made with
// sigstore's pkg/signature/dsse: {"payloadType":PayloadType,"payload":base64(manifest JSON),
// "signatures":[{"keyid":KeyID,"sig":base64(signature over PAE(payloadType, manifest))}]}.
// The key id is the lower-case hex SHA-256 of the signer's DER SubjectPublicKeyInfo. ECDSA P-256
// signs SHA-256 of the PAE (ASN.1 signature); Ed25519 signs the PAE itself. Only the manifest is
// signed (pure Ed25519 buffers the whole message, so the image is never signed directly).
//
// The manifest JSON (schema version = formatVersion = the header's version; unknown fields are
// refused; "deltas" only, and always, in version 2):
//
//	{"formatVersion":1, "appId":…, "board":…, "version":…, "securityVersion":N,
//	 "created":RFC 3339, "imageSize":bytes, "imageSha256":hex,
//	 "chunking":{"algorithm":"rabin","min":…,"max":…,"averageBits":…,"polynomial":…}
//	           or {"algorithm":"fixed","size":…},
//	 "chunkCount":n, "tableSize":64·n, "tableSha256":hex, "dataSize":D,
//	 "deltas":[{"baseVersion":…, "baseSize":bytes, "baseSha256":hex, "offset":…, "length":…,
//	            "opCount":n, "indexSha256":hex}, …]}
//
// It binds the chunk table by hash and the section lengths by value, so every byte a host uses
// is covered by the signature transitively. A chunk-table record (64 bytes):
//
//	0   8  image offset (chunks are contiguous from 0 and cover imageSize exactly)
//	8   4  length (1..MaxChunkSize = 16 MiB; at most the chunking's largest chunk, for a zero
//	       chunk max(1 MiB, that))
//	12  1  encoding: 0 zero (nothing stored), 1 raw, 2 zstd (one frame)
//	13  3  reserved = 0
//	16  8  data offset, relative to the data section
//	24  4  stored length (0 for zero; = length for raw; ≤ length+length/128+1024 for zstd)
//	28  4  probe: CRC-32C (Castagnoli) of the decoded chunk's first min(4096, length) bytes
//	32  32 SHA-256 of the chunk's decoded bytes
//
// Stored ranges lie inside the data section and may be shared: identical chunks are stored once.
// Build writes a run of zeros as one zero chunk of up to 1 MiB (the chunker cuts zeros at its
// minimum size; one record per cut cost a 256 MiB image a third of its table), never longer, as
// installers read a chunk back whole into a buffer of max(1 MiB, the chunking's maximum); they
// refuse a table with a longer chunk (ReasonLengthOverflow) before writing anything.
//
// # Delta sections
//
// A chunk install costs every host the whole chunk table (64 bytes a chunk: 0.47 MB for a
// 256 MiB ext4 image) and fetches a changed chunk whole even when a few bytes of it changed.
// So a payload may also carry, for each of the last few releases (BuildOptions.DeltaFrom,
// 'payload build --delta-from OLD.img'), a delta section inside its data section: an index of
// ops that rebuild the image from that base — copy a base extent (coalesced up to 1 MiB), zero,
// zstd, or patch: the target bytes compressed with zstd against the base's bytes at the same
// place (and at the place the last copy came from, ±64 KiB) as a raw dictionary, at zstd's best
// level — each op carrying the SHA-256 of the target extent it writes. Its byte layout and
// limits are in delta.go. A payload with sections is version 2; one without stays version 1, so
// older installers still read it.
//
// A host whose active slot runs a section's base version (Target.ActiveVersion; 'payload
// apply' reads it from the active slot's os-release) reads no chunk table: it reads the
// section's index (checked against the signed hash), then copies and zeroes locally and checks
// the target extents of the stored ops (an interrupted attempt's bytes are kept), fetches the
// stored bytes of the missing ops in coalesced Range requests, decodes, checks each op's hash,
// writes it and reads it back. A copy or patch whose result does not match its hash means the
// active slot is not the base: the install goes on by the chunk path, which keeps what was
// written (Result.DeltaFallback says why).
//
// # Trust
//
// A TrustRoot (JSON, "version":1) lists public keys by id, a threshold, revoked ids and a security
// floor. Verify counts distinct keys that are listed, not revoked, and whose signature verifies;
// it needs at least threshold of them. Key rotation: sign with the old and the new key during the
// overlap (hosts trusting either accept), then ship a trust root without (or revoking) the old key.
// A payload whose security version is below max(trust floor, Expect.Floor) is refused.
//
// # Chunking
//
// Content-defined chunking (Rabin fingerprints, github.com/restic/chunker) is the default because
// a rebuilt filesystem moves file contents to other block offsets: fixed-size chunks lose every
// chunk behind a shift, content-defined chunks re-synchronise. BenchmarkChunking measured it on a
// 256 MiB testimages /usr image rebuilt with 5% of its files changed (a host running the old
// image installs the new one; "changed files" is the zstd size of the changed files alone,
// 4.7 MB):
//
//	chunking                 fetched   × changed files   chunks   table
//	fixed 64 KiB             109.3 MB   23.0              4096     262 KB
//	fixed 1 MiB               98.1 MB   20.7               256      16 KB
//	rabin 4–64 KiB (~16K)      3.6 MB    0.76            38857    2487 KB
//	rabin 16–256 KiB (~64K)    5.4 MB    1.15            11215     718 KB
//	rabin 64 KiB–1 MiB        28.6 MB    6.03             3006     192 KB
//	rabin 256 KiB–4 MiB       50.5 MB   10.6               807      52 KB
//
// Fixed chunks re-download almost the whole image; ~64 KiB content-defined chunks fetch about the
// changed files' compressed size with a table of 0.3% of the image (16 KiB chunks save little
// more and quadruple the table and the index work), so DefaultChunking is Rabin 16 KiB/64 KiB/
// 256 KiB (casync's choice too). Indexing the active slot (cutting and hashing it) is the price:
// one sequential read of the active slot, cut in parallel segments, hashing only chunks whose
// probe matches a wanted chunk; its memory is the missing chunks' indices sorted by hash and
// their probes sorted (about 9 bytes a chunk, no maps). Cutting costs about as much CPU as
// decoding and hashing the payload, so up to 16 windows spread over the slot (1 MiB each by
// default) are cut first, beside the scan of the target, one per core at a time until one holds
// a chunk of the payload or 4 MiB of non-zero data held none: then the active slot holds an
// unrelated image (a full install) and the rest is not cut.
//
// # Install
//
// Install opens the source, verifies the envelope and the chunk table, and only then touches the
// target. For each chunk (in image order) it reuses the target's bytes when their hash already
// matches (an interrupted earlier attempt), else copies a chunk with the same hash from the active
// slot (found by cutting the active slot with the manifest's chunking), else fetches the stored
// bytes — neighbouring stored ranges coalesced into requests of at most InstallOptions.MaxRequest,
// several in flight, retried with jittered backoff and resumed after a cut — decodes, hashes and
// only then writes, in batches of neighbouring chunks of up to 256 KiB (small enough to be still
// in the core's cache when they are hashed and copied). Each fetch worker decodes stored chunks
// straight from its read buffer, so both cores decode and hash while the others read and write.
//
// The final read-back trails the writes on every core: each chunk, once in place, is read back
// from the target and compared with the bytes it was written from (their CRC-32C, taken after
// their SHA-256 matched the signed table). It looks for lost or misplaced writes, not forgeries,
// so it does not SHA-256 every byte a second time: the chunks cover the image exactly and each
// matched its signed hash, which binds the image as the manifest's imageSha256 does
// (InstallOptions.RehashImage adds that whole-image SHA-256 pass, at about the CPU cost of the
// chunk hashes again). Zero chunks are settled by the read-back alone: kept when the target
// already reads zero, else written and read back again. Every write is handed on for writeback
// soon after it is made (the slot's StartWriteback, or Linux sync_file_range when the slot is a
// file): a fetch worker hands on its neighbouring writes together, up to 8 MiB and at the end of
// each request, other writes go at once. The device writes while the install goes on and what
// was written before a power cut is there for the resumed install to reuse. The slot is also
// synced every 64 MiB written, in the background, so that the device makes data durable while
// the install still decodes; after the last write and check comes the last Sync. Install
// returns only after everything is written, read back, checked and synced, so a caller marks
// the slot bootable only after that. Every refusal is a
// *RejectError (see Reason); I/O failures are plain errors.
//
// # Invariants
//
//   - Nothing is written to the target before the envelope and the chunk table verified.
//   - No byte is written to the target before the SHA-256 of its chunk matched the signed table.
//   - Every length read from a file or a server is bounded by a named limit before use.
//   - No byte is read back as good unless it equals what was written after its hash matched.
//   - A delta install holds its section's index (at most MaxDeltaOps ops, about 150 bytes an
//     op while parsing) and per worker one op's source, target and read-back (MaxDeltaDict +
//     2·MaxDeltaOpSize) and one request (at most 4 MiB).
//   - Memory is bounded by the chunk table (at most MaxChunks = 2^17 chunks; a payload with more
//     is refused before its table is read, which is read and parsed 1 MiB at a time), about 36
//     bytes a chunk for the fetch plan, and a few buffers per worker (readBufferSize,
//     writeBatchSize, rehashBufferSize, or one chunk when larger).
package payload
