// Package enroll keeps a host's enrollment with its update server: it exchanges an enrollment
// token (ENROLLMENT_TOKEN in update.conf, or `updatectl enroll --token`) for a host credential
// at the server's POST /v1/enroll (omaha.Client.Enroll) and stores the credential in the
// agent's state directory, which updated then sends with every Omaha request
// ("Authorization: Bearer ts-host-…"). Groups that require enrollment serve only hosts that
// present the credential of their own machine id.
//
// The file (FileName, mode 0600, written atomically: temporary file, fsync, rename, fsync of
// the directory) is JSON with a version:
//
//	{"version":1,"app_id":"…","machine_id":"…","group_id":"…","credential":"ts-host-…","enrolled":"…"}
//
// A credential is bound to an app and a machine id: Load ignores (ErrNotEnrolled) a file
// written for another app or machine id, such as one copied along with a disk image, so the
// host enrolls again.
package enroll
