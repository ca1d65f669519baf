// Package dist carries the files that install updated on a host: its systemd unit
// (updated.service) and the D-Bus system bus policy of com.coreos.update1
// (com.coreos.update1.conf). Image builders (testimages/osimage) take them from FS, so an
// image always ships the files in this directory.
package dist
