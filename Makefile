# Install layout follows what a distribution package does (see docs/install.md).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SYSTEMD_SYSTEM_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
SYSTEMD_SYSTEM_GENERATOR_DIR ?= $(PREFIX)/lib/systemd/system-generators
# Kernel settings and networkd's settings for a many-slot host (vendor directories).
SYSCTL_DIR ?= $(PREFIX)/lib/sysctl.d
NETWORKD_CONF_DIR ?= $(PREFIX)/lib/systemd/networkd.conf.d
SYSCONFDIR ?= /etc
DOCDIR ?= $(PREFIX)/share/doc/slot-os
MANDIR ?= $(PREFIX)/share/man
BASH_COMPLETION_DIR ?= $(PREFIX)/share/bash-completion/completions
# Fedora's and upstream zsh's directory; the Debian package uses vendor-completions.
ZSH_COMPLETION_DIR ?= $(PREFIX)/share/zsh/site-functions
FISH_COMPLETION_DIR ?= $(PREFIX)/share/fish/vendor_completions.d
PROFILE ?= release
CARGO ?= cargo
CARGO_TARGET_DIR ?= target

ifeq ($(PROFILE),release)
CARGO_PROFILE_FLAG = --release
else
CARGO_PROFILE_FLAG =
endif
BUILD_DIR = $(CARGO_TARGET_DIR)/$(if $(filter dev debug,$(PROFILE)),debug,$(PROFILE))
# Man pages and completions, written by the built helper (slot-os generate-docs).
GEN_DIR = $(BUILD_DIR)/gen
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
# `make deb` writes the package here (docs/install.md).
DEB = $(CARGO_TARGET_DIR)/debian/slot-os_$(VERSION)_$(DEB_ARCH).deb

.PHONY: all build docs man completions install deb deb-only check test clean

all: build

# The units the generator writes run the helper from BINDIR: the build bakes it in.
build:
	SLOT_OS_BINDIR='$(BINDIR)' $(CARGO) build $(CARGO_PROFILE_FLAG)
	$(MAKE) docs

# Generated from the code (clap model, slot_config::keys), so they cannot drift.
docs:
	$(BUILD_DIR)/slot-os generate-docs $(GEN_DIR)
man completions: docs

# `install` does not build: it installs what `build` made, so it can run as root
# in a tree built by someone else (and the test harness can install debug builds).
install: docs
	install -Dm755 $(BUILD_DIR)/slot-os $(DESTDIR)$(BINDIR)/slot-os
	install -Dm755 $(BUILD_DIR)/slot-os-generator $(DESTDIR)$(SYSTEMD_SYSTEM_GENERATOR_DIR)/slot-os-generator
	install -d $(DESTDIR)$(SYSTEMD_SYSTEM_UNIT_DIR)
	for u in units/*.service units/*.timer units/*.target; do \
		[ -e "$$u" ] || continue; \
		sed 's|/usr/bin/slot-os|$(BINDIR)/slot-os|g' "$$u" > $(DESTDIR)$(SYSTEMD_SYSTEM_UNIT_DIR)/$$(basename "$$u"); \
		chmod 644 $(DESTDIR)$(SYSTEMD_SYSTEM_UNIT_DIR)/$$(basename "$$u"); \
	done
	install -Dm644 conf/sysctl.d/60-slot-os.conf $(DESTDIR)$(SYSCTL_DIR)/60-slot-os.conf
	install -Dm644 conf/networkd.conf.d/60-slot-os.conf $(DESTDIR)$(NETWORKD_CONF_DIR)/60-slot-os.conf
	install -d $(DESTDIR)$(SYSCONFDIR)/slot-os
	[ -e $(DESTDIR)$(SYSCONFDIR)/slot-os/slot-os.toml ] || \
		install -m644 conf/slot-os.toml $(DESTDIR)$(SYSCONFDIR)/slot-os/slot-os.toml
	install -d $(DESTDIR)$(DOCDIR)/examples
	install -m644 conf/*.toml $(DESTDIR)$(DOCDIR)/examples/
	install -m644 README.md $(DESTDIR)$(DOCDIR)/
	install -Dm644 $(GEN_DIR)/man/slot-os.1 $(DESTDIR)$(MANDIR)/man1/slot-os.1
	install -Dm644 $(GEN_DIR)/man/slot-os.toml.5 $(DESTDIR)$(MANDIR)/man5/slot-os.toml.5
	install -Dm644 $(GEN_DIR)/man/slot-os-generator.8 $(DESTDIR)$(MANDIR)/man8/slot-os-generator.8
	install -Dm644 $(GEN_DIR)/completions/slot-os.bash $(DESTDIR)$(BASH_COMPLETION_DIR)/slot-os
	install -Dm644 $(GEN_DIR)/completions/_slot-os $(DESTDIR)$(ZSH_COMPLETION_DIR)/_slot-os
	install -Dm644 $(GEN_DIR)/completions/slot-os.fish $(DESTDIR)$(FISH_COMPLETION_DIR)/slot-os.fish

# The Debian package, from a `make install` staging tree (packaging/debian/build-deb.sh).
deb:
	$(MAKE) build PREFIX=/usr
	$(MAKE) deb-only
# Packages what `build` made, without building (as `install`).
deb-only:
	bash packaging/debian/build-deb.sh "$(MAKE)" "$(PROFILE)" "$(VERSION)" "$(DEB)"

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test

test:
	bash tests/run-all.sh

clean:
	$(CARGO) clean
