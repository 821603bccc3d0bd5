# The README names these targets; .ci/run calls `make test`.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
UNIT_PKGS := $(shell $(GO) list ./... | grep -v /e2e)
FUZZTIME  ?= 300000x

.PHONY: build build-all cross deps test unit fuzz e2e index-real bench bench-resolve demo vet clean

# Debian packages the tests, the demo and the benchmark need.
# man-db and groff-base render the manual pages; lintian checks the
# Debian package.
DEB_PKGS := qemu-system-x86 qemu-system-arm qemu-user busybox-static cpio kmod xz-utils zstd gcc libc6-dev libkmod-dev e2fsprogs systemd make \
	man-db groff-base lintian

# Where build puts the binary, and install and deb take it from.
BIN       ?= bin/modautoload

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/modautoload

# Static stripped binaries for the embedded targets, bin/linux-<goarch>/:
# arm is ARMv7 (hard float); 386 and mipsle use soft float, as the i586
# boards and router SoCs they run on often lack SSE2 or an FPU.
xbuild = CGO_ENABLED=0 GOOS=linux GOARCH=$(1) $(2) $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
	-o bin/linux-$(1)/modautoload ./cmd/modautoload
build-all:
	$(call xbuild,arm64,)
	$(call xbuild,arm,GOARM=7)
	$(call xbuild,386,GO386=softfloat)
	$(call xbuild,mipsle,GOMIPS=softfloat)
	$(call xbuild,riscv64,)

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
test: deps vet unit cross fuzz e2e index-real

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# TestReal* need the Debian module tree: index-real runs them once e2e has it.
# The scale tests judge time per item only without the race detector,
# whose overhead is not linear: they run again without it.
unit:
	$(GO) test -race -count=1 -skip '^TestReal' $(UNIT_PKGS)
	$(GO) test -count=1 -run '^(TestQueueStormIsLinear|TestColdplugScalesLinearly)$$' ./daemon

# 32-bit targets, where int is 32 bits and struct layouts differ: vet, and
# the unit tests of the packages that read binary input or talk to the
# kernel, under qemu-user (the i386 ones run in the e2e x86-64 guest, as
# qemu-i386 cannot run Go's 386 binaries and not every host kernel runs
# them). qemu-arm leaves a fault's address out of the signal context, so
# the test of a mapping cut short under a lookup runs in the armhf guest.
# What cannot run in a cross build: the comparisons with glibc's fnmatch
# need cgo, the whole Debian tree comes with index-real, and a test that
# runs the test binary again as a child process cannot exec a foreign
# binary without qemu-user; they all run natively in unit and index-real.
CROSS_SKIP := ^TestReal|Glibc$$|^FuzzMatch$$|^TestModprobeDiesOfSIGTERMLikeKmod$$
CROSS_TEST_PKGS := ./loader/index ./uevent ./rules ./internal/fnmatch ./internal/regfile ./cmd/modautoload
cross: build-all
	GOARCH=386 $(GO) vet ./...
	GOARCH=arm GOARM=7 $(GO) vet ./...
	GOARCH=mipsle GOMIPS=softfloat $(GO) vet ./...
	GOARCH=arm GOARM=7 $(GO) test -count=1 -exec qemu-arm -skip '^TestTruncatedWhileMapped$$|$(CROSS_SKIP)' $(CROSS_TEST_PKGS)
	GOARCH=mipsle GOMIPS=softfloat $(GO) test -count=1 -exec qemu-mipsel -skip '$(CROSS_SKIP)' $(CROSS_TEST_PKGS)

# go test fuzzes one target per run; each gets FUZZTIME.
FUZZ_TARGETS := uevent:FuzzParse loader/modprobed:FuzzParse loader/modprobed:FuzzCmdline rules:FuzzEventRules \
	loader/index:FuzzTrie loader/index:FuzzText loader:FuzzXZ loader:FuzzZstd internal/fnmatch:FuzzMatch \
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

.PHONY: man install install-initramfs deb

# The manual pages' and the Debian package's tests (make deps installs them).
DEB_PKGS += man-db groff-base lintian

# The manual pages (dist/man) and the README's command table, generated
# from each command's -h and rules/doc.go; a unit test fails when the
# committed files differ from what this makes.
man:
	$(GO) test -count=1 -run '^TestManPagesAreGenerated$$' ./cmd/modautoload -args -update

# make install: the tree README's "Install" lists, under $(DESTDIR). An
# empty directory variable leaves its part out (OPENRCDIR= on a systemd
# machine). RULESDIR is where the daemon reads its rules, whatever PREFIX.
PREFIX         ?= /usr/local
SYSCONFDIR     ?= /etc
SBINDIR        ?= $(PREFIX)/sbin
MANDIR         ?= $(PREFIX)/share/man
DATADIR        ?= $(PREFIX)/share/modautoload
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
OPENRCDIR      ?= $(SYSCONFDIR)/init.d
RULESDIR       ?= /usr/lib/modautoload/rules.d
# 1: $(SBINDIR)/modprobe is a link to modautoload (it then replaces kmod's
# modprobe for whatever finds it first in PATH or /proc/sys/kernel/modprobe).
INSTALL_MODPROBE_LINK ?= 0

# The units and the OpenRC script name the binary where it is installed.
SET_BINARY := sed -e 's|\(/usr\)\{0,1\}/sbin/modautoload|$(SBINDIR)/modautoload|g'

install: build install-initramfs
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/modautoload
	if [ "$(INSTALL_MODPROBE_LINK)" = 1 ]; then ln -sf modautoload $(DESTDIR)$(SBINDIR)/modprobe; fi
	if [ -n "$(SYSTEMDUNITDIR)" ]; then \
		install -d -m 0755 $(DESTDIR)$(SYSTEMDUNITDIR) && \
		for u in modautoload.service modautoload-settle.service; do \
			$(SET_BINARY) dist/systemd/$$u >$(DESTDIR)$(SYSTEMDUNITDIR)/$$u && chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; \
		done; \
	fi
	if [ -n "$(OPENRCDIR)" ]; then \
		install -d -m 0755 $(DESTDIR)$(OPENRCDIR) && \
		$(SET_BINARY) dist/openrc/modautoload >$(DESTDIR)$(OPENRCDIR)/modautoload && \
		chmod 0755 $(DESTDIR)$(OPENRCDIR)/modautoload; \
	fi
	install -D -m 0644 dist/rules.d/80-drivers.rules $(DESTDIR)$(RULESDIR)/80-drivers.rules
	install -D -m 0644 dist/man/modautoload.8 $(DESTDIR)$(MANDIR)/man8/modautoload.8
	install -D -m 0644 dist/man/modautoload-rules.5 $(DESTDIR)$(MANDIR)/man5/modautoload-rules.5
	install -D -m 0644 dist/udev/80-drivers.rules $(DESTDIR)$(DATADIR)/udev/80-drivers.rules
	install -D -m 0644 dist/busybox/inittab $(DESTDIR)$(DATADIR)/busybox/inittab
	install -D -m 0755 dist/initramfs/init $(DESTDIR)$(DATADIR)/initramfs/init

# The initramfs generators' hooks (initramfs-tools, dracut) add their
# install steps here, each in a rule of its own: `install-initramfs::`.
install-initramfs::
	@:

# initramfs-tools reads hooks and boot scripts from INITRAMFSTOOLSDIR
# whatever PREFIX; the hook names the binary in SBINDIR. The example
# configuration goes to /etc/initramfs-tools/conf.d/modautoload.
INITRAMFSTOOLSDIR ?= /usr/share/initramfs-tools
install-initramfs::
	if [ -n "$(INITRAMFSTOOLSDIR)" ]; then \
		install -d -m 0755 $(DESTDIR)$(INITRAMFSTOOLSDIR)/hooks && \
		sed -e 's|^BIN=/usr/sbin/modautoload$$|BIN=$(SBINDIR)/modautoload|' dist/initramfs-tools/hooks/modautoload \
			>$(DESTDIR)$(INITRAMFSTOOLSDIR)/hooks/modautoload && \
		chmod 0755 $(DESTDIR)$(INITRAMFSTOOLSDIR)/hooks/modautoload && \
		for s in init-top init-premount init-bottom; do \
			install -D -m 0755 dist/initramfs-tools/scripts/$$s/modautoload \
				$(DESTDIR)$(INITRAMFSTOOLSDIR)/scripts/$$s/modautoload || exit 1; \
		done && \
		install -D -m 0644 dist/initramfs-tools/modautoload.conf $(DESTDIR)$(DATADIR)/initramfs-tools/modautoload.conf; \
	fi

# dracut reads its modules from DRACUTMODDIR whatever PREFIX; module-setup.sh
# names the binary in SBINDIR.
DRACUTMODDIR ?= /usr/lib/dracut/modules.d
DRACUT_FILES := modautoload-initrd.service modautoload-initrd-settle.service \
	modautoload-start.sh modautoload-settle.sh modautoload-stop.sh
install-initramfs::
	if [ -n "$(DRACUTMODDIR)" ]; then \
		d=$(DESTDIR)$(DRACUTMODDIR)/90modautoload && install -d -m 0755 $$d && \
		sed -e 's|^BIN=/usr/sbin/modautoload$$|BIN=$(SBINDIR)/modautoload|' dist/dracut/90modautoload/module-setup.sh \
			>$$d/module-setup.sh && chmod 0755 $$d/module-setup.sh && \
		for f in $(DRACUT_FILES); do \
			case $$f in *.sh) m=0755 ;; *) m=0644 ;; esac; \
			install -m $$m dist/dracut/90modautoload/$$f $$d/$$f || exit 1; \
		done; \
	fi

# make deb: a Debian package of this tree for GOARCH (default: the Go
# toolchain's), built with dpkg-deb alone, owned by root without fakeroot.
# It installs what make install does under /usr, with the OpenRC script as
# an example (Debian's /etc/init.d is for its own scripts) and no modprobe
# link (kmod owns /sbin/modprobe). It has no maintainer scripts: nothing
# is enabled and udev keeps loading modules until the administrator says
# otherwise (README, "Install").
DEBDIR         ?= bin
DEB_GOARCH     := $(shell $(GO) env GOARCH)
DEB_ARCH        = $(or $(DEB_ARCH_$(DEB_GOARCH)),$(error no Debian architecture for GOARCH=$(DEB_GOARCH)))
DEB_ARCH_amd64 := amd64
DEB_ARCH_arm64 := arm64
DEB_ARCH_386   := i386
DEB_ARCH_arm   := armhf
DEB_ARCH_ppc64le := ppc64el
DEB_ARCH_s390x := s390x
DEB_ARCH_riscv64 := riscv64
DEB_ARCH_mips64le := mips64el
DEB_ARCH_loong64 := loong64
# A Debian version must start with a digit: the last release, then the
# commit's date and hash (none outside a git checkout).
DEB_VERSION    ?= 0.1$(shell git log -1 --format=+git%cd.%h --date=format:%Y%m%d 2>/dev/null)
# Who built the package, from DEBFULLNAME and DEBEMAIL as dch(1) takes
# them; without them an address in the reserved .invalid domain says that
# nobody signed this build.
DEB_MAINTAINER ?= $(or $(DEBFULLNAME),modautoload builder) <$(or $(DEBEMAIL),builder@modautoload.invalid)>
# File dates in the package: the commit's, else now (lintian refuses 1970).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
DEB_ROOT        = $(DEBDIR)/deb-root
DEB_FILE        = $(DEBDIR)/modautoload_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_DOC         = $(DEB_ROOT)/usr/share/doc/modautoload

deb:
	rm -rf $(DEB_ROOT)
	GOARM=$${GOARM:-7} $(MAKE) --no-print-directory install DESTDIR=$(DEB_ROOT) PREFIX=/usr \
		OPENRCDIR=/usr/share/modautoload/openrc INSTALL_MODPROBE_LINK=0
	gzip -9n $(DEB_ROOT)/usr/share/man/man8/modautoload.8 $(DEB_ROOT)/usr/share/man/man5/modautoload-rules.5
	install -d -m 0755 $(DEB_DOC) $(DEB_ROOT)/DEBIAN
	install -m 0644 dist/deb/copyright $(DEB_DOC)/copyright
	install -D -m 0644 dist/deb/lintian-overrides $(DEB_ROOT)/usr/share/lintian/overrides/modautoload
	gzip -9nc README.md >$(DEB_DOC)/README.md.gz
	gzip -9nc CHANGELOG.md >$(DEB_DOC)/CHANGELOG.md.gz
	printf 'modautoload (%s) unstable; urgency=medium\n\n  * Built from the source tree at %s; its changes are in CHANGELOG.md.gz.\n\n -- %s  %s\n' \
		'$(DEB_VERSION)' "$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" '$(DEB_MAINTAINER)' \
		"$$(date -R -u -d @$(SOURCE_DATE_EPOCH))" | gzip -9n >$(DEB_DOC)/changelog.gz
	sed -e 's|@VERSION@|$(DEB_VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' -e 's|@MAINTAINER@|$(DEB_MAINTAINER)|' \
		-e "s|@SIZE@|$$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1)|" dist/deb/control >$(DEB_ROOT)/DEBIAN/control
	cd $(DEB_ROOT) && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums
	chmod 0644 $(DEB_ROOT)/DEBIAN/control $(DEB_ROOT)/DEBIAN/md5sums
	# install -D made directories under the builder's umask.
	find $(DEB_ROOT) -type d -exec chmod 0755 {} +
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) dpkg-deb --root-owner-group -Zxz --build $(DEB_ROOT) $(DEB_FILE)
	@echo $(DEB_FILE)
