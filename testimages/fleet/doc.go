// Package fleet simulates a fleet of twinslot hosts in one process, each running the real
// update agent (updated.Agent) and the real reboot coordinator (locksmith/reboot), against a
// real update server and a real etcd. It is what the end-to-end test and `make demo` run.
//
// # A host
//
// Every host is a simhost.Host: its own copy of one built disk image (GPT, USR-A/USR-B), its own
// machine id, state directory and update.conf (SERVER, GROUP, REBOOT_STRATEGY=etcd-lock,
// HEALTH_TIMEOUT). A boot runs two things until the machine goes down:
//
//   - the agent, with a schedule scaled to Timings.CheckInterval;
//   - locksmithd (strategy etcd-lock, the host's group, this boot's id), talking to the agent
//     without D-Bus: an in-process daemon.Updated whose GetStatus/GetBootStatus/Subscribe are
//     fed by the agent's OnStatus and OnBootStatus hooks (the same tuples the agent emits as
//     StatusUpdate and BootStatus signals), and a daemon.Rebooter that takes the machine down.
//
// A reboot (asked by locksmithd once it holds a slot, or by the agent after a failed health
// gate) stops both; after Timings.RebootDuration the emulated boot loader (GRUB's gptprio.next,
// which writes the decremented tries counter) picks a slot, the version is read from that slot's
// filesystem, and a new agent and a new locksmithd start, as after a real boot. A locksmithd
// started after a reboot finds its held slot and releases or keeps it per daemon.Decide: it
// releases once the new boot is committed, and keeps it after a rollback. A /usr image built
// Broken fails the health gate (simhost's probe reports a failed unit), so the agent marks the
// slot bad and reboots into the old one.
//
// # Observing
//
// State is a snapshot: per host its name, machine id, agent operation, boot state, locksmithd
// state, booted version and slot, whether that slot is committed (the GPT successful bit),
// reboots, update checks and the history of boots with their outcome; and the group's reboot
// slot holders, read from etcd through a watch of the group's keys. Changed and Wait follow it;
// Config.OnEvent sees every event in order ("reboot requested", "down", "booted", agent and
// locksmithd state changes, holder changes), each with the number of hosts then between a reboot
// request and the next boot.
//
// # Scenario
//
// BuildImages builds the scenario's images (a 1.0.0 disk, a healthy 1.0.1 and a broken 1.0.2
// /usr image); Clock lets a simulation move the update server's clock ahead so hour-long rate
// windows pass in a moment. Timings are configurable so a rollout takes seconds; nothing here
// measures or asserts wall-clock durations.
//
// A Fleet holds no global state; Run returns once every host's agent and locksmithd stopped.
package fleet
