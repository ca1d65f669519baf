// Package esptest holds test helpers for the ESP kernel-per-slot layout (partition/esp):
// writing files into a layout and describing its content, so a test can compare an ESP before
// and after an operation.
package esptest
