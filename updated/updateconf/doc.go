// Package updateconf reads twinslot's update.conf, the host's update settings, in the format of
// Flatcar's /etc/flatcar/update.conf: one KEY=VALUE per line, '#' starts a comment line, values may
// be wrapped in single or double quotes, surrounding blanks are ignored.
//
// Files are read in order and a later file wins key by key (DefaultPaths): the image default
// /usr/share/twinslot/update.conf, then /etc/coreos/update.conf and /etc/flatcar/update.conf that
// CoreOS and Flatcar hosts already have, then twinslot's /etc/twinslot/update.conf. The
// environment (systemd's Environment=) wins over every file. Config.Origins records which file set
// each effective value (updatectl config shows it). A missing file is not an error; an
// unreadable or malformed one is, and so is a known key with a value twinslot cannot use
// (ValueError, naming the file).
//
// LOCKSMITHD_REBOOT_WINDOW_START, _LENGTH and _TZ set REBOOT_WINDOW_START, _LENGTH and _TZ: within
// one file the LOCKSMITHD_ spelling wins (as in CoreOS locksmithd); across files the later file
// wins whichever spelling it uses.
//
// Keys read by twinslot (unknown keys are kept in Config.Values and otherwise ignored):
//
//	SERVER                  Omaha update URL, or "disabled" to stop checking (health gate still runs)
//	GROUP                   the track: a channel (stable, beta, alpha) or a group id/name; default stable
//	MACHINE_ALIAS           a human name sent to the server
//	REBOOT_STRATEGY         reboot (default), etcd-lock, fleetlock or off
//	REBOOT_WINDOW_START     "[Day ]HH:MM" (or LOCKSMITHD_REBOOT_WINDOW_START)
//	REBOOT_WINDOW_LENGTH    a Go duration such as 1h30m (or LOCKSMITHD_REBOOT_WINDOW_LENGTH)
//	REBOOT_WINDOW_TZ        an IANA time zone for the window; default the host's local zone
//	DOWNLOAD_USER, DOWNLOAD_PASSWORD   HTTP basic auth for payload downloads
//
// Invariants: parsing never executes anything (no shell expansion); lines longer than MaxLineLen or
// files larger than MaxFileSize are rejected rather than truncated.
package updateconf
