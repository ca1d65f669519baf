package payloadcmd

import "github.com/twinslot/twinslot/partition"

// GPTWriter is what apply changes the GPT through (*partition.Disk).
type GPTWriter = gptWriter

// WrapGPT makes env's apply change the GPT through wrap(d) instead of the disk d, so that
// tests can fail the writes.
func WrapGPT(env *Env, wrap func(d *partition.Disk) GPTWriter) {
	env.gpt = func(d *partition.Disk) gptWriter { return wrap(d) }
}

// AfterKeygenCheck makes env's keygen call f after it checked its output paths and before it
// writes them.
func AfterKeygenCheck(env *Env, f func()) { env.keygenChecked = f }

// PlaceNoReplace and LinkNoReplace are keygen's no-overwrite placements: renameat2 with the
// link(2) fallback, and the fallback alone.
var PlaceNoReplace, LinkNoReplace = placeNoReplace, linkNoReplace
