// Package releasectl is the releasectl command line, for release engineers and update server
// operators: publish payloads (with a progress bar; omahad verifies them against the app's trust
// root and refuses what does not verify), promote versions between channels, withdraw a bad
// build, manage apps, channels' download URLs and groups with their rollout policy, and read
// hosts, events and per-group status. It talks to omahad's admin API (package omaha/admin) with
// a bearer token. Tables are for people; --json output is for scripts.
//
//	releasectl --server https://omaha.example --token $T publish --channel alpha p.tsp
//	releasectl promote --version 4152.2.0 --from alpha --to beta
//	releasectl group create --name canary --channel beta --max-updates 10 --period 1h
//	releasectl group create --name canary --channel beta --halt-on-failures 1
//	releasectl enroll-token create --group fleet --expires 24h --uses 100
//	releasectl group pause canary
//	releasectl group resume canary          # also re-enables a halted group, clearing its reason
//	releasectl status                       # halted groups are listed with the reason
//	releasectl mirror --upstream https://public.update.flatcar-linux.net/v1/update/ \
//	    --pair e96281a6-d1af-4bde-9a0a-97b76e56dc57/stable/amd64-usr   # follow another Omaha server
//
// Main is what the binary runs (tools/cmd/releasectl), with RELEASECTL_SERVER and
// RELEASECTL_TOKEN passed in as Env by main; tests run Env.Main in-process against omahatest.
package releasectl
