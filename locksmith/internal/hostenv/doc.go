// Package hostenv finds what locksmithctl and locksmithd need from the host: the system bus
// address (DBUS_SYSTEM_BUS_ADDRESS from the environment the caller passes, else the standard
// socket) and the machine id (an explicit --id, else /etc/machine-id).
package hostenv
