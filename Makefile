# twinslot — build, test, lint, bench, demo.
# Everything runs with the Go toolchain on this machine (GOTOOLCHAIN=local); see README.md.

GO      ?= go
BIN     ?= bin
export GOTOOLCHAIN := local
SHELL   := /bin/bash

# Every binary lives at <component>/cmd/<name>/main.go.
CMDS := $(wildcard */cmd/*/main.go)
BINARIES := $(patsubst %/main.go,%,$(CMDS))

.PHONY: all build test test-short lint bench bench-peers fuzz e2e e2e-boot guest-bin faults demo demo-slots clean grub-efi grub-test os-image vm

all: build

build:
	@mkdir -p $(BIN)
	@for d in $(BINARIES); do \
		n=$$(basename $$d); echo "go build -o $(BIN)/$$n ./$$d"; \
		$(GO) build -o $(BIN)/$$n ./$$d || exit 1; \
	done

# The default tier: every package with the race detector. Heavy tiers skip themselves
# (testing.Short, missing tools) and live behind e2e, bench and fuzz.
test:
	$(GO) test -race -timeout 14m ./...

test-short:
	$(GO) test -short ./...

# staticcheck at a pinned version, built by the go command from the module proxy (and cached):
# nothing to install, and every machine runs the same checks.
STATICCHECK_VERSION := v0.8.2
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy (diff above): run 'go mod tidy' and commit the result"; exit 1; }
	$(STATICCHECK) ./...

# Every benchmark once (most do a whole run per op), the 1 GiB installs three times (one run
# is at the mercy of the disk's writeback), then one table row per benchmark from bin/bench.txt.
# Set TWINSLOT_TEST_POSTGRES to a postgres:// DSN to include the PostgreSQL server runs.
BENCH_OUT ?= $(BIN)/bench.txt
bench:
	@mkdir -p $(BIN)
	@set -o pipefail; { \
		$(GO) test -run '^$$' -bench . -skip 'BenchmarkInstall(File|HTTP)$$' -benchtime 1x -timeout 60m ./... && \
		$(GO) test -run '^$$' -bench 'BenchmarkInstall(File|HTTP)$$' -benchtime 3x -timeout 20m ./payload; \
	} | tee $(BENCH_OUT)
	@echo; echo "== summary (from $(BENCH_OUT))"; \
	awk '/^Benchmark/ { n=$$1; sub(/-[0-9]+$$/, "", n); line=sprintf("%-46s", n); \
		for (i = 3; i < NF; i += 2) if ($$(i+1) != "ns/op" || NF == 4) line = line sprintf("  %s %s", $$i, $$(i+1)); print line }' $(BENCH_OUT)

# twinslot, casync and zchunk side by side on the same /usr image pairs over one loopback HTTP
# server, interleaved rounds, outputs checked byte for byte; one table with the machine's raw
# limit (testimages/benchpeers). casync, zchunk and GNU time are installed from Debian when
# missing (as root). BENCH_PEERS_SIZE=1GiB or 2GiB for the large runs; images are kept in
# $(BIN)/peers-data and reused.
BENCH_PEERS_APT  := casync zchunk time
BENCH_PEERS_SIZE ?= 256MiB
BENCH_PEERS_FLAGS ?=
bench-peers:
	@need=; for t in casync zck zckdl unzck /usr/bin/time; do command -v $$t >/dev/null 2>&1 || need=1; done; \
	if [ -n "$$need" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "bench-peers: installing $(BENCH_PEERS_APT)"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BENCH_PEERS_APT) >/dev/null) || exit 1; \
		else echo "bench-peers: casync, zchunk or GNU time is missing and this is not root with apt-get: apt-get install $(BENCH_PEERS_APT)"; exit 1; fi; \
	fi
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/payload ./tools/cmd/payload
	$(GO) build -o $(BIN)/benchpeers ./testimages/cmd/benchpeers
	$(BIN)/benchpeers -payload $(BIN)/payload -dir $(BIN)/peers-data -size $(BENCH_PEERS_SIZE) $(BENCH_PEERS_FLAGS)

fuzz:
	@for p in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$p | grep '^Fuzz'); do \
			echo "fuzz $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s $$p || exit 1; \
		done; \
	done

# The heavy end-to-end tier. The real boot under QEMU (testimages/qemuboot) needs
# qemu-system-x86_64 and a Linux kernel: as root with apt-get they are installed when missing
# (TWINSLOT_KERNEL names another kernel); otherwise that test skips and says why.
E2E_APT := qemu-system-x86 linux-image-cloud-amd64 ovmf socat swtpm swtpm-tools mmdebstrap mtools dosfstools
e2e:
	@need=; command -v qemu-system-x86_64 >/dev/null 2>&1 || need=1; \
	if [ -z "$$TWINSLOT_KERNEL" ] && ! ls /boot/vmlinuz-* >/dev/null 2>&1; then need=1; fi; \
	if [ -n "$$need" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "e2e: installing $(E2E_APT) for the QEMU boot test"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(E2E_APT) >/dev/null) \
				|| echo "e2e: apt-get failed; the QEMU boot test will skip"; \
		else echo "e2e: qemu-system-x86_64 or a kernel is missing and this is not root with apt-get: the QEMU boot test will skip"; fi; \
	fi
	TWINSLOT_E2E=1 $(GO) test -run 'E2E' -timeout 60m -v ./testimages/...

# The real-boot tier (testimages/realboot): a UEFI VM (QEMU + OVMF, TCG unless E2E_BOOT_FLAGS has
# --kvm) boots an image from `mkimage os` under our GRUB, runs updated and locksmithd under
# systemd, and is walked through a cut download, an update and a rollback with omahad and etcd
# on loopback. As root with apt-get it installs what it needs. The bootstrap and the GRUB build
# are cached under ~/.cache/twinslot; every console log and image stays in E2E_BOOT_DIR.
E2E_BOOT_APT := qemu-system-x86 ovmf swtpm swtpm-tools socat mmdebstrap e2fsprogs dosfstools mtools gdisk
E2E_BOOT_DIR ?= $(BIN)/e2e-boot
E2E_BOOT_FLAGS ?=
e2e-boot: guest-bin
	@missing=; for p in $(E2E_BOOT_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "e2e-boot: installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else echo "e2e-boot: missing Debian packages:$$missing (install them as root)"; exit 1; fi; \
	fi
	$(GO) build -o $(BIN)/e2eboot ./testimages/cmd/e2eboot
	@set -e; efi=$$(partition/grub/build.sh | tail -n 1); rm -rf $(E2E_BOOT_DIR); \
	echo "$(BIN)/e2eboot --bin $(BIN)/guest --grub-efi $$efi --dir $(E2E_BOOT_DIR) $(E2E_BOOT_FLAGS)"; \
	time $(BIN)/e2eboot --bin $(BIN)/guest --grub-efi "$$efi" --dir $(E2E_BOOT_DIR) $(E2E_BOOT_FLAGS)

# The host binaries an OS image carries in /usr/bin, static.
GUEST_CMDS := updated/cmd/updated updated/cmd/updatectl locksmith/cmd/locksmithd locksmith/cmd/locksmithctl
guest-bin:
	@mkdir -p $(BIN)/guest
	@for d in $(GUEST_CMDS); do CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/guest/$$(basename $$d) ./$$d || exit 1; done

# The fault-injection tier (testimages/faults): a real 3-member etcd cluster (the system's etcd)
# with its leader killed, quorum lost and a member stopped under lock contention; omahad killed
# with SIGKILL under load on SQLite and as two PostgreSQL replicas. Invariants are checked from
# outside (an etcd history replay, the database). As root with apt-get, etcd-server, etcd-client
# and postgresql are installed when missing; without them those tests skip and say why. A
# PostgreSQL cluster is started for the run unless TWINSLOT_TEST_POSTGRES names one. Ends with
# one summary row per fault.
FAULTS_APT := etcd-server etcd-client postgresql
FAULTS_SUMMARY ?= $(BIN)/faults-summary.tsv
faults:
	@need=; command -v etcd >/dev/null 2>&1 || need="$$need etcd-server"; \
	command -v etcdctl >/dev/null 2>&1 || need="$$need etcd-client"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	if [ -n "$$need" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "faults: installing$$need"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need >/dev/null) \
				|| echo "faults: apt-get failed; the tests that need$$need will skip"; \
		else echo "faults:$$need missing and this is not root with apt-get: those tests will skip"; fi; \
	fi
	@mkdir -p $(BIN); rm -f $(FAULTS_SUMMARY)
	@start=$$(date +%s); set -o pipefail; \
	TWINSLOT_FAULTS=1 TWINSLOT_FAULTS_SUMMARY=$(CURDIR)/$(FAULTS_SUMMARY) $(GO) test -count=1 -v -timeout 15m ./testimages/faults/ \
		| grep --line-buffered -v '^    [a-z_]*_test.go:[0-9]*: SUMMARY '; rc=$$?; \
	echo; echo "== make faults: $$(( $$(date +%s) - start ))s"; \
	if [ -s $(FAULTS_SUMMARY) ]; then \
		awk -F'\t' '{ printf "\n%s\n  invariants:  %s\n  max holders: %s\n  lost acked:  %s\n  recovery:    %s\n  notes:       %s\n", $$1, $$2, $$3, $$4, $$5, $$6 }' $(FAULTS_SUMMARY); \
	else echo "(no fault ran: see the skips above)"; fi; \
	exit $$rc

# The whole system in one process (testimages/demo): omahad on SQLite, an embedded etcd and
# DEMO_HOSTS simulated hosts running the real agent and locksmithd; 1.0.1 rolls out DEMO_MAX at a
# time, then a broken 1.0.2 is stopped by the health gate, locksmith and the server's halt.
# Exits non-zero unless that is what happened. DEMO_DIR keeps every file; DEMO_FLAGS adds flags.
DEMO_DIR ?=
DEMO_HOSTS ?= 6
DEMO_MAX ?= 2
DEMO_FLAGS ?=
demo:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/demo ./testimages/cmd/demo
	$(BIN)/demo --hosts $(DEMO_HOSTS) --max $(DEMO_MAX) $(if $(DEMO_DIR),--dir $(DEMO_DIR)) $(DEMO_FLAGS)

# The slot lifecycle on a fresh disk image (issue 2's walk): install 1.0.1 into USR-B, boot it
# (tries 1 -> 0), mark it good; then install 1.0.2 into USR-A and, without mark-good, fall back
# to USR-B on the following boot; and on a fresh disk, 1.0.1 never marked good falls back to
# USR-A. Each step is shown, and checked; DEMO_DIR keeps the images.
demo-slots:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/mkimage ./testimages/cmd/mkimage
	$(GO) build -o $(BIN)/updatectl ./updated/cmd/updatectl
	@set -e; d="$(DEMO_DIR)"; if [ -z "$$d" ]; then d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; else mkdir -p "$$d"; fi; \
	mk="$(CURDIR)/$(BIN)/mkimage"; uc="$(CURDIR)/$(BIN)/updatectl"; cd "$$d"; \
	step() { printf '\n$$ %s\n' "$$*"; "$$@"; }; \
	expect() { if ! printf '%s' "$$out" | grep -q "$$1"; then echo "demo FAILED: expected '$$1'"; exit 1; fi; }; \
	boots() { out=$$(step $$mk boot "$$1"); echo "$$out"; expect "$$2"; }; \
	echo "== a fresh disk: 1.0.0 in USR-A (P=1 S=1), USR-B empty"; \
	step $$mk disk -o disk.img -version 1.0.0; \
	step $$uc slots --disk disk.img; \
	echo; echo "== build 1.0.1 and install it into the inactive slot"; \
	step $$mk usr -o usr-1.0.1.img -version 1.0.1; \
	step $$mk install disk.img usr-1.0.1.img; \
	echo; echo "== boot: GRUB tries USR-B once (tries 1 -> 0)"; \
	boots disk.img 'booted USR-B (#4): version 1.0.1 amd64-usr (P=2 T=0 S=0)'; \
	echo; echo "== the health gate passed: mark the booted slot good"; \
	step $$uc mark-good --disk disk.img; \
	out=$$(step $$uc slots --disk disk.img); echo "$$out"; expect 'USR-B.*2 *0 *yes *1.0.1 amd64-usr *active, boots next'; \
	boots disk.img 'booted USR-B (#4): version 1.0.1'; \
	echo; echo "== second walk: 1.0.2 (5% of the files changed) into USR-A, and no mark-good"; \
	step $$mk usr -o usr-1.0.2.img -version 1.0.2 -base usr-1.0.1.img -change 0.05; \
	step $$mk install disk.img usr-1.0.2.img; \
	boots disk.img 'booted USR-A (#3): version 1.0.2 amd64-usr (P=2 T=0 S=0)'; \
	echo; echo "== 1.0.2 never got marked good: the following boot falls back to USR-B"; \
	boots disk.img 'booted USR-B (#4): version 1.0.1 amd64-usr (P=1 T=0 S=1)'; \
	step $$uc slots --disk disk.img; \
	echo; echo "== rolling back to the failed 1.0.2 is refused"; \
	if out=$$($$uc rollback --disk disk.img 2>&1); then echo "$$out"; echo "demo FAILED: rollback was not refused"; exit 1; fi; \
	echo "$$out"; expect 'never booted successfully'; \
	echo; echo "== once more on a fresh disk: 1.0.1 into USR-B, booted, never marked good: back to USR-A"; \
	step $$mk disk -o fresh.img -version 1.0.0; \
	step $$mk install fresh.img usr-1.0.1.img; \
	boots fresh.img 'booted USR-B (#4): version 1.0.1 amd64-usr (P=2 T=0 S=0)'; \
	boots fresh.img 'booted USR-A (#3): version 1.0.0 amd64-usr (P=1 T=0 S=1)'; \
	echo; echo "demo OK"

# BOOTX64.EFI: Debian's GRUB with our gptprio module (partition/grub, GPL-3.0-or-later), built
# once and cached in $TWINSLOT_CACHE (default ~/.cache/twinslot)/grub; prints the image's path last.
grub-efi:
	partition/grub/build.sh

# The gptprio module against the shared case table in one QEMU + OVMF boot (builds grub-efi).
GRUB_TEST_APT := qemu-system-x86 ovmf mtools dosfstools gdisk
grub-test:
	@missing=; for p in $(GRUB_TEST_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi
	TWINSLOT_E2E=1 $(GO) test -count=1 -run 'TestE2EGptprioModule' -timeout 60m -v ./testimages/uefivm

# A bootable UEFI Debian host image (testimages/osimage): usr.img, vmlinuz, initrd.img and
# disk.img in OS_DIR. GRUB_EFI is a GRUB EFI image with the gptprio module (default: make grub-efi's).
# The first run bootstraps Debian with mmdebstrap as root (minutes); later runs use the cache
# ($$TWINSLOT_CACHE or ~/.cache/twinslot). OS_FLAGS adds flags (--broken, --filler 64M, …).
OS_DIR ?= $(BIN)/os
OS_VERSION ?= 1.0.0
GRUB_EFI ?=
OS_FLAGS ?=
os-image: guest-bin
	$(GO) build -o $(BIN)/mkimage ./testimages/cmd/mkimage
	@set -e; efi="$(GRUB_EFI)"; [ -n "$$efi" ] || efi=$$(partition/grub/build.sh | tail -n 1); \
	echo "$(BIN)/mkimage os -o $(OS_DIR) --version $(OS_VERSION) --bin $(BIN)/guest --grub-efi $$efi $(OS_FLAGS)"; \
	$(BIN)/mkimage os -o $(OS_DIR) --version $(OS_VERSION) --bin $(BIN)/guest --grub-efi "$$efi" $(OS_FLAGS)

# Boot a disk image under QEMU (TCG) with UEFI firmware, the serial console on this terminal
# (root logs in by itself; Ctrl-A X quits) and user networking that reaches nothing outside.
# The disk is used as it is: a boot decrements tries and a reboot boots again, like a real machine.
VM_DISK ?= $(OS_DIR)/disk.img
OVMF_CODE ?= /usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS ?= /usr/share/OVMF/OVMF_VARS_4M.fd
vm:
	@test -f "$(VM_DISK)" || { echo "no $(VM_DISK): make os-image first, or set VM_DISK"; exit 2; }
	@mkdir -p $(BIN)
	cp $(OVMF_VARS) $(BIN)/vm-vars.fd
	qemu-system-x86_64 -machine q35 -accel tcg -m 1024 -smp 2 -nographic \
		-drive if=pflash,format=raw,readonly=on,file=$(OVMF_CODE) \
		-drive if=pflash,format=raw,file=$(BIN)/vm-vars.fd \
		-drive if=virtio,format=raw,file=$(VM_DISK) \
		-netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0

clean:
	rm -rf $(BIN)
