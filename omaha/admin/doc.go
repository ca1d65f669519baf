// Package admin is the update server's JSON admin API: the request and response types and a Go
// client (used by releasectl and omahatest).
//
// # Protocol
//
// Every endpoint lives under /api/v1 and needs "Authorization: Bearer <token>" (tokens come from
// 'omahad token create'). Read-only tokens may GET; writes need an admin token. Bodies are JSON
// (except a publish upload, which is the raw payload file). Errors are
// {"error": "what went wrong and what to do"} with a status code: 400 bad input, 401 missing or
// unknown token, 403 read-only token on a write, 404 unknown app/group/version, 409 conflict,
// 413 too large, 422 payload refused by verification, 5xx server trouble.
//
//	GET    /api/v1/apps                                   []App
//	POST   /api/v1/apps                                   App (id, name, trust) → App
//	GET    /api/v1/apps/{app}                             App
//	PUT    /api/v1/apps/{app}/trust                       trust root JSON → App
//	GET    /api/v1/apps/{app}/channels                    []Channel
//	PUT    /api/v1/apps/{app}/channels/{channel}          ChannelChange → Channel
//	GET    /api/v1/apps/{app}/packages                    []Package
//	POST   /api/v1/apps/{app}/packages?name=N&channel=C[&url=U]  payload file → Package
//	POST   /api/v1/apps/{app}/files                       any file (raw body) → File (size, sha256, sha1)
//	POST   /api/v1/apps/{app}/flatcar                     FlatcarPackage → Package
//	POST   /api/v1/apps/{app}/promote                     Promote → []Package
//	POST   /api/v1/apps/{app}/withdraw                    Withdraw → []Package
//	GET    /api/v1/apps/{app}/groups                      []Group
//	POST   /api/v1/apps/{app}/groups                      Group → Group
//	GET    /api/v1/apps/{app}/groups/{group}              Group ({group} = id or name)
//	PATCH  /api/v1/apps/{app}/groups/{group}              GroupChange → Group
//	GET    /api/v1/apps/{app}/instances?group=&version=&state=&q=&after=&limit=   []Instance (q: part of a machine id or alias)
//	GET    /api/v1/apps/{app}/instances/{machine}         Instance
//	GET    /api/v1/apps/{app}/instances/{machine}/events  []Event
//	GET    /api/v1/apps/{app}/history?range=&buckets=&group=   History (hosts per version over time)
//	GET    /api/v1/apps/{app}/events?failures=1&limit=    []Event
//	GET    /api/v1/apps/{app}/status                      Status
//
// # Flatcar packages
//
// A Flatcar package (update_engine's CrAU payload plus optional OEM/sysext extras) is created in
// one or two steps. Stored on omahad: upload each file's bytes with POST …/files (Content-Type
// application/octet-stream; the answer is {"size", "sha256" (hex), "sha1" (base64)}), then
// POST …/flatcar with
//
//	{"version": "4152.2.0", "board": "amd64-usr", "channel": "stable",
//	 "name": "flatcar_production_update.gz", "size": 481234567,
//	 "sha256": "<64 hex>", "sha1": "<base64 SHA-1>",
//	 "extras": [{"name": "oem-azure.gz", "size": 11534336, "sha256": "<hex>", "sha1": "<base64>"}]}
//
// External (hosts download elsewhere): the same body with "url" set to the main file's full URL
// (ending in name); extras are then expected in the same directory. An app that holds only
// Flatcar packages needs no trust root (create it with "trust" omitted); publishing a twinslot
// payload into it is refused until one is set.
//
// App ids are bare lower-case UUIDs in JSON and paths (braces are accepted in paths). Durations
// are Go duration strings ("1h30m"). Times are RFC 3339 UTC.
package admin
