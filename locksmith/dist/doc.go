// Package dist carries the files that install locksmithd on a host: its systemd unit
// (locksmithd.service). Image builders (testimages/osimage) take it from FS, so an image
// always ships the unit in this directory.
package dist
