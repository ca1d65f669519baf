// Package updateconf reads twinslot's update.conf, the host's update settings, in the format of
// Flatcar's /etc/flatcar/update.conf: one KEY=VALUE per line, '#' starts a comment line, values may
// be wrapped in single or double quotes, surrounding blanks are ignored.
//
// Files are searched in order and the first file that sets a key wins, so the administrator's
// /etc/twinslot/update.conf overrides the image default /usr/share/twinslot/update.conf key by key.
// A missing file is not an error; an unreadable or malformed one is.
//
// Keys read by twinslot (unknown keys are kept in Config.Values and otherwise ignored):
//
//	SERVER                  Omaha update URL, or "disabled" to stop checking (health gate still runs)
//	GROUP                   the track: a channel (stable, beta, alpha) or a group id/name; default stable
//	MACHINE_ALIAS           a human name sent to the server
//	REBOOT_STRATEGY         reboot (default), etcd-lock, fleetlock or off
//	REBOOT_WINDOW_START     "[Day ]HH:MM"; LOCKSMITHD_REBOOT_WINDOW_START takes precedence
//	REBOOT_WINDOW_LENGTH    a Go duration such as 1h30m; LOCKSMITHD_REBOOT_WINDOW_LENGTH takes precedence
//	REBOOT_WINDOW_TZ        an IANA time zone for the window; default the host's local zone
//	DOWNLOAD_USER, DOWNLOAD_PASSWORD   HTTP basic auth for payload downloads
//
// Invariants: parsing never executes anything (no shell expansion); lines longer than MaxLineLen or
// files larger than MaxFileSize are rejected rather than truncated.
package updateconf
