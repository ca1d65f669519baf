// Package omahad is omahad's command line: serve (the default), token create|list|revoke and
// migrate. It parses flags, opens the database and runs package server's Config and Serve;
// omaha/cmd/omahad/main.go only builds the signal context and the Env from the process
// environment. Env.Main (and Main, with an empty Env) has the signature every twinslot CLI
// exposes, so tests run omahad in-process.
//
// It is also the one place the garbage collector is tuned (DefaultGCPercent, SetGCPercent).
package omahad
