// Package updatectl is the updatectl command, the operator's view of a host's update state.
//
// This package holds the slot commands; other commands (status, check, watch, history,
// download) are added as further entries of Commands, each in its own file:
//
//	updatectl slots [--disk PATH] [--repair] [--json]   partition number, label, PARTUUID,
//	                                            priority, tries, successful, version, active,
//	                                            next boot, GPT copies; --repair rewrites a
//	                                            damaged copy (refused for a foreign layout)
//	updatectl mark-good [--disk PATH] [--slot S]  commit the booted slot (S=1, T=0, top priority)
//	updatectl rollback [--disk PATH] [--slot S]   make the other slot boot next, if it is good
//
// Commands that talk to the update agent, updated (agent.go, history.go, download.go):
//
//	updatectl status [--json] [--bus ADDR]   GetStatus + GetBootStatus over D-Bus
//	updatectl check [--wait]                 AttemptUpdate; --wait follows it to the end
//	updatectl watch                          StatusUpdate/BootStatus signals, a progress bar
//	updatectl reset                          ResetStatus (clear failures / cancel an install)
//	updatectl history [--json] [--state-dir DIR]   past attempts from updated's state file
//	updatectl download --to FILE [--trust T]       the offered payload, via grab, resumable
//	updatectl config [--json] [--root DIR]         effective update.conf values and their files
//
// --bus is "system" (the default) or a bus address, so tests use a private dbus-daemon.
//
// Without --disk the commands work on the disk holding the booted /usr, found from
// /proc/cmdline (verity.usr=, mount.usr=, usr=) or the mount at /usr, through the Env's
// host filesystem. With --disk on an image file the booted slot is read from the emulated
// command line DISK.cmdline that `mkimage boot` writes; --slot names it explicitly.
//
// Main runs updatectl against the real host; Run takes an Env so tests supply their own.
package updatectl
