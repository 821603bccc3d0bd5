# The README names these targets; .ci/run calls `make test`.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
UNIT_PKGS := $(shell $(GO) list ./... | grep -v /e2e)
FUZZTIME  ?= 300000x

.PHONY: build deps test unit fuzz e2e index-real bench bench-resolve demo vet clean

# Debian packages the tests, the demo and the benchmark need.
DEB_PKGS := qemu-system-x86 busybox-static cpio kmod gcc libc6-dev libkmod-dev e2fsprogs systemd make

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/modautoload ./cmd/modautoload

# Installs what is missing (as root, with apt), so that demo and test work
# on a fresh Debian machine.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing packages (install as root): $$missing"; exit 1; fi; \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Everything: static checks, unit tests under the race detector, a bounded
# fuzz run, and the real-kernel tests in qemu.
test: deps vet unit fuzz e2e index-real

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# TestReal* need the Debian module tree: index-real runs them once e2e has it.
unit:
	$(GO) test -race -count=1 -skip '^TestReal' $(UNIT_PKGS)

# go test fuzzes one target per run; each gets FUZZTIME.
FUZZ_TARGETS := uevent:FuzzParse loader/modprobed:FuzzParse loader/modprobed:FuzzCmdline rules:FuzzEventRules \
	loader/index:FuzzTrie loader/index:FuzzText internal/fnmatch:FuzzMatch \
	loader/modlist:FuzzParse loader/modlist:FuzzCmdline

# Each run starts from the committed seeds, and FUZZTIME counts inputs, not
# seconds: with a duration, Go 1.26's coordinator can report its own
# deadline as a failure (go.dev/issue/75804, fixed in Go 1.27).
fuzz:
	$(GO) clean -fuzzcache
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) ./$${t%%:*}; \
	done

# MODAUTOLOAD_E2E=1 turns a missing qemu or kernel into a failure, not a skip.
e2e:
	MODAUTOLOAD_E2E=1 $(GO) test -count=1 -timeout 30m -v ./e2e/...

# The index tests on the whole Debian module tree the e2e rig caches.
index-real:
	MODAUTOLOAD_MODULE_DIR="$$($(GO) run ./e2e/demo -module-dir)" \
		$(GO) test -count=1 -run '^TestReal' -v ./loader/index

# Coldplug (time, finit_module calls, the agent's CPU and memory) and 5
# hotplugs (split into kernel probe, agent reaction and kernel load) of the
# VM-TESTING device set: modautoload beside systemd-udevd,
# kmod's modprobe fixpoint loop and busybox mdev, in one run; writes
# bench/bench.md and bench/bench.svg. Then 40 listed modules loaded by
# kmod's modprobe (one by one, -a), systemd-modules-load and load-static:
# bench/static.md (alone: go run ./e2e/bench -out bench -only
# static-kmod,static-kmod-a,static-systemd,static-modautoload).
bench: deps bench-resolve
	$(GO) run ./e2e/bench -out bench

# The resolver beside libkmod on the Debian kernel's ~128,000 test inputs,
# and the exec-to-answer time beside kmod's modprobe.
bench-resolve:
	$(GO) test ./e2e -run '^$$' -bench 'Resolver|Libkmod|FirstAnswer' -benchtime 3x

demo: deps
	$(GO) run ./e2e/demo

clean:
	rm -rf bin
