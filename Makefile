# twinslot — build, test, lint, bench, demo.
# Everything runs with the Go toolchain on this machine (GOTOOLCHAIN=local); see README.md.

GO      ?= go
BIN     ?= bin
export GOTOOLCHAIN := local

# Every binary lives at <component>/cmd/<name>/main.go.
CMDS := $(wildcard */cmd/*/main.go)
BINARIES := $(patsubst %/main.go,%,$(CMDS))

.PHONY: all build test test-short lint bench fuzz e2e demo clean

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

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; else echo "staticcheck not installed; skipped"; fi

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./...

fuzz:
	@for p in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$p | grep '^Fuzz'); do \
			echo "fuzz $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s $$p || exit 1; \
		done; \
	done

e2e:
	TWINSLOT_E2E=1 $(GO) test -run 'E2E' -timeout 30m -v ./testimages/...

demo: build
	@echo "demo: not yet wired"

clean:
	rm -rf $(BIN)
