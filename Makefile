# Install layout follows what a distribution package does (see docs/install.md).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SYSTEMD_SYSTEM_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
SYSTEMD_SYSTEM_GENERATOR_DIR ?= $(PREFIX)/lib/systemd/system-generators
SYSCONFDIR ?= /etc
DOCDIR ?= $(PREFIX)/share/doc/slot-os
PROFILE ?= release
CARGO ?= cargo
CARGO_TARGET_DIR ?= target

ifeq ($(PROFILE),release)
CARGO_PROFILE_FLAG = --release
else
CARGO_PROFILE_FLAG =
endif
BUILD_DIR = $(CARGO_TARGET_DIR)/$(if $(filter dev debug,$(PROFILE)),debug,$(PROFILE))

.PHONY: all build install check test clean

all: build

build:
	$(CARGO) build $(CARGO_PROFILE_FLAG)

# `install` does not build: it installs what `build` made, so it can run as root
# in a tree built by someone else (and the test harness can install debug builds).
install:
	install -Dm755 $(BUILD_DIR)/slot-os $(DESTDIR)$(BINDIR)/slot-os
	install -Dm755 $(BUILD_DIR)/slot-os-generator $(DESTDIR)$(SYSTEMD_SYSTEM_GENERATOR_DIR)/slot-os-generator
	install -d $(DESTDIR)$(SYSTEMD_SYSTEM_UNIT_DIR)
	for u in units/*.service units/*.timer units/*.target; do \
		[ -e "$$u" ] || continue; \
		sed 's|/usr/bin/slot-os|$(BINDIR)/slot-os|g' "$$u" > $(DESTDIR)$(SYSTEMD_SYSTEM_UNIT_DIR)/$$(basename "$$u"); \
		chmod 644 $(DESTDIR)$(SYSTEMD_SYSTEM_UNIT_DIR)/$$(basename "$$u"); \
	done
	install -d $(DESTDIR)$(SYSCONFDIR)/slot-os
	[ -e $(DESTDIR)$(SYSCONFDIR)/slot-os/slot-os.toml ] || \
		install -m644 conf/slot-os.toml $(DESTDIR)$(SYSCONFDIR)/slot-os/slot-os.toml
	install -d $(DESTDIR)$(DOCDIR)/examples
	install -m644 conf/*.toml $(DESTDIR)$(DOCDIR)/examples/
	install -m644 README.md $(DESTDIR)$(DOCDIR)/

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test

test:
	bash tests/run-all.sh

clean:
	$(CARGO) clean
