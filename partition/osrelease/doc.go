// Package osrelease is twinslot's one parser of os-release files: the /usr/lib/os-release a
// /usr image carries, which names what a slot holds (ID, version, board). updated reads the
// booted system's copy, updatectl download and payload apply read it to know what runs, and
// partition/slotrelease reads it out of a slot's filesystem; all of them go through Parse, so they
// accept and refuse the same files.
//
// Format (os-release(5), the subset of shell it allows):
//   - one KEY=VALUE per line; KEY is [A-Za-z_][A-Za-z0-9_]*; no spaces around '='.
//   - blank lines and lines whose first non-blank character is '#' are ignored; a '#' after a
//     value is part of the value.
//   - a value is unquoted, or wholly in "double" or 'single' quotes. Inside double quotes and in
//     an unquoted value a backslash escapes the next character (\" \\ \$ \` and, unquoted, any
//     character); inside double quotes a backslash before any other character stays as written,
//     as in shell. Inside single quotes nothing is escaped. Text after a closing quote (shell's
//     concatenation, "a"'b') is refused, as are unquoted whitespace, quotes, $ and ` (which shell
//     would expand or split).
//   - the last of a repeated key wins.
//
// twinslot's fields: ID; the version is VERSION_ID, the machine-readable version os-release(5)
// defines, or VERSION when there is no VERSION_ID (VERSION may be human text such as
// "22.04 LTS (Jammy)", so it only counts when VERSION_ID is absent); BUILD_ID is kept but never
// taken as the version (it names a build, not an order); the board is BOARD, else Flatcar's
// FLATCAR_BOARD. ID, the version and the board are required and CheckField-clean, because they
// end up in file names, Omaha requests and version comparisons.
//
// Invariants: input is untrusted. Parse reads at most MaxSize bytes and MaxLineLen per line,
// fails with a *SyntaxError naming the line for malformed input, and never returns a Release
// whose fields fail CheckField.
package osrelease
