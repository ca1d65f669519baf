package updated

import "github.com/twinslot/twinslot/partition"

// GPTWriter is what the agent changes the GPT through (*partition.Disk).
type GPTWriter = gptWriter

// WrapGPT makes agents built with c change the GPT through wrap(d) instead of the disk d, so
// that tests can fail the writes.
func WrapGPT(c *Config, wrap func(d *partition.Disk) GPTWriter) {
	c.gpt = func(d *partition.Disk) gptWriter { return wrap(d) }
}
