package payloadcmd

import "github.com/twinslot/twinslot/partition"

// GPTWriter is what apply changes the GPT through (*partition.Disk).
type GPTWriter = gptWriter

// WrapGPT makes env's apply change the GPT through wrap(d) instead of the disk d, so that
// tests can fail the writes.
func WrapGPT(env *Env, wrap func(d *partition.Disk) GPTWriter) {
	env.gpt = func(d *partition.Disk) gptWriter { return wrap(d) }
}
