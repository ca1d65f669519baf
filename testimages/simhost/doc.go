// Package simhost is a simulated twinslot host: a GPT disk image with two /usr slots, a machine
// id, a state directory and a boot counter, on which the real update agent (updated.Agent) runs
// unchanged. It is the host of the agent's full-cycle tests and of the fleet simulation.
//
// Boot emulates the machine starting: GRUB's gptprio.next picks the slot (testimages.Boot,
// which writes the decremented tries counter), a new boot id is drawn, and the version is read
// from the chosen slot's filesystem (lib/os-release). The agent sees that boot through the
// Host's BootFinder. Its health probe reports systemd "degraded" with a failed unit when the
// booted image carries the broken marker (lib/twinslot/broken), "running" otherwise. Its
// reboot action records the request and stops the agent, as a real reboot would; Run reports
// it, and Live boots again and restarts the agent.
//
// Layout of Dir:
//
//	disk.img          the disk (testimages.BuildDisk)
//	state/            the agent's state directory (state.json, floor.json)
//	etc/update.conf   SERVER, GROUP (+ anything Options.Conf adds)
//	etc/trust.json    the host's trust root
//	etc/health.d/     health checks (empty unless a test adds some)
//
// A Host holds no global state and starts no goroutine outside Run/Live, so a fleet
// simulation can run many in one process. Its methods are safe for concurrent use.
package simhost
