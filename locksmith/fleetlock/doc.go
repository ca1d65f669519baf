// Package fleetlock speaks the FleetLock protocol (Zincati's reboot-coordination protocol) on
// top of the locksmith semaphore: a Server that Zincati, locksmithd and other FleetLock clients
// can use, and a Client.
//
// # Protocol
//
// Two operations, each a POST with the header "fleet-lock-protocol: true" and the JSON body
//
//	{"client_params": {"id": "<client id>", "group": "<group>"}}
//
//	POST /v1/pre-reboot     RecursiveLock: take a reboot slot in group for id (re-locking one it
//	                        already holds succeeds)
//	POST /v1/steady-state   UnlockIfHeld: give the slot back; not holding one is success too
//
// id is 1..256 printable characters without spaces, case-sensitive, not starting with "corrupt:"
// (reserved for slot keys the semaphore cannot read). group matches
// ^[a-zA-Z0-9.-]+$ and is at most 128 bytes; it names the same semaphore group locksmithd and
// locksmithctl use, so FleetLock clients and locksmithd hosts can share one group. FleetLock
// clients ask again rather than wait in the semaphore's queue, so a free slot goes to hosts
// queued by locksmithd first.
//
// Success is 200 with an empty body. A failure is a 4xx or 5xx with the JSON body
// {"kind": "...", "value": "..."}; kind is one of a fixed set (clients use it as a metrics
// label), value is a message for people:
//
//	400 invalid_fleet_lock_header    the header is missing or not "true"
//	400 invalid_request_body         not JSON, or client_params missing
//	400 invalid_client_id            id empty, too long, unprintable or reserved
//	400 invalid_group                group empty, too long or outside ^[a-zA-Z0-9.-]+$
//	404 not_found                    another path
//	405 method_not_allowed           not POST (Allow: POST)
//	409 failed_lock_semaphore_full   every slot is taken: try again later (Retry-After is set);
//	                                 a clear "not now", never a 5xx
//	413 request_too_large            body over MaxRequestBody
//	503 backend_unavailable          etcd did not answer in time, is unreachable or has no leader
//	                                 (quorum lost): try again later (Retry-After is set)
//	500 internal_error               anything else (e.g. etcd refused the server's credentials)
//
// Request bodies are read through http.MaxBytesReader with MaxRequestBody; ParseRequest, the
// parser, is fuzzed (FuzzFleetLockRequest) from testdata/.
package fleetlock
