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
//	POST   /api/v1/apps/{app}/promote                     Promote → []Package
//	POST   /api/v1/apps/{app}/withdraw                    Withdraw → []Package
//	GET    /api/v1/apps/{app}/groups                      []Group
//	POST   /api/v1/apps/{app}/groups                      Group → Group
//	GET    /api/v1/apps/{app}/groups/{group}              Group ({group} = id or name)
//	PATCH  /api/v1/apps/{app}/groups/{group}              GroupChange → Group
//	GET    /api/v1/apps/{app}/instances?group=&version=&state=&after=&limit=   []Instance
//	GET    /api/v1/apps/{app}/instances/{machine}/events  []Event
//	GET    /api/v1/apps/{app}/events?failures=1&limit=    []Event
//	GET    /api/v1/apps/{app}/status                      Status
//
// App ids are bare lower-case UUIDs in JSON and paths (braces are accepted in paths). Durations
// are Go duration strings ("1h30m"). Times are RFC 3339 UTC.
package admin
