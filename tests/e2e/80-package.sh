# Issue 6 acceptance: the Debian package. `make deb-only` packages the build under test;
# a fresh test host WITHOUT slot-os (TH_INSTALL_PROJECT=0) installs it with apt, runs the
# walkthrough (make-base-image, build 2, start all), then `apt-get purge` removes the
# helper, the generator, the units and what the generator wrote, and leaves the slot
# images alone.
# releases: bookworm trixie

H=pkg
DEB_IN_HOST=/var/tmp/slot-os.deb

# The cached rootfs tells dpkg to skip man pages (faster copies); this host must keep
# them to show that the package installs its manual.
th_pre_boot_hook() {
  rm -f "$2/etc/dpkg/dpkg.cfg.d/50-slot-os-test-nodoc"
}

scenario_setup() {
  TH_INSTALL_PROJECT=0 th_boot "$H" unified || return 1
}

scenario_teardown() {
  th_destroy "$H"
}

sos() { th_run "$H" slot-os "$@"; }

test_make_deb() {
  local deb out
  # Packages the binaries the suite built (SLOT_OS_PROFILE), as `make install` does.
  out=$(make -s --no-print-directory -C "$TH_REPO" deb-only PROFILE="$TH_PROFILE" 2>&1) ||
    { t_fail "make deb-only: $out"; return 1; }
  deb=$(printf '%s\n' "$out" | tail -n 1)
  [[ "$deb" == /* ]] || deb=$TH_REPO/$deb
  [[ -f "$deb" && "$deb" == */debian/slot-os_*_*.deb ]] || { t_fail "no .deb at '$deb'"; return 1; }
  assert_contains "$(dpkg-deb -f "$deb" Depends)" "systemd-container" "Depends: systemd-container" || return 1
  assert_contains "$(dpkg-deb -f "$deb" Depends)" "libc6" "shlibs dependencies" || return 1
  assert_eq "/etc/slot-os/slot-os.toml" "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles)" "conffiles" || return 1
  if command -v lintian >/dev/null; then
    local rc
    out=$(lintian --fail-on error,warning "$deb" 2>&1); rc=$?
    out=$(printf '%s\n' "$out" | grep -v 'running with root privileges')
    assert_eq 0 "$rc" "lintian exit status ($out)" || return 1
    assert_eq "" "$out" "no lintian tag" || return 1
  else
    th_note "lintian not installed: skipped (tests/install-deps.sh installs it)"
  fi
  cp "$deb" "$(th_root "$H")$DEB_IN_HOST" || { t_fail "copying the .deb into the host"; return 1; }
}

test_host_starts_without_slot_os() {
  assert_ok th_sh "$H" '! command -v slot-os' || return 1
  assert_ok th_run "$H" test ! -e /usr/lib/systemd/system-generators/slot-os-generator || return 1
  assert_ok th_run "$H" test ! -e /usr/lib/systemd/system/slot-os-forward.service || return 1
  # scheduled backups stopped (they would call a missing helper), their links purged
  assert_ok th_sh "$H" '! systemctl is-active -q slot-os-backup@slot00.timer' || return 1
  assert_ok th_sh "$H" '! systemctl is-active -q slot-os-metrics.timer' || return 1
  assert_eq "" "$(th_sh "$H" 'ls /etc/systemd/system/*.wants/ | grep slot-os')" "no enablement link left" || return 1
  assert_ok th_run "$H" test ! -e /etc/slot-os || return 1
}

test_apt_install() {
  local out
  # The test host has no network and no apt lists: apt resolves the Depends from the
  # packages already installed, which is all of them.
  out=$(th_run "$H" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$DEB_IN_HOST" 2>&1) ||
    { t_fail "apt-get install: $out"; return 1; }
  assert_eq "install ok installed" "$(th_run "$H" dpkg-query -W -f='${Status}' slot-os)" "dpkg status" || return 1
  local f
  for f in /usr/bin/slot-os /usr/lib/systemd/system-generators/slot-os-generator \
    /etc/slot-os/slot-os.toml \
    /usr/share/man/man1/slot-os.1.gz /usr/share/man/man5/slot-os.toml.5.gz \
    /usr/share/man/man8/slot-os-generator.8.gz \
    /usr/share/bash-completion/completions/slot-os /usr/share/zsh/vendor-completions/_slot-os \
    /usr/share/fish/vendor_completions.d/slot-os.fish /usr/share/doc/slot-os/copyright \
    /usr/lib/systemd/system/slot-os-forward.service /usr/lib/systemd/system/slot-os-backup@.timer \
    /usr/lib/systemd/system/slot-os-metrics.timer /usr/lib/systemd/system/slot-os-metrics.service; do
    assert_ok th_run "$H" test -s "$f" || { t_fail "$f not installed"; return 1; }
  done
  assert_contains "$(th_sh "$H" 'zcat /usr/share/man/man5/slot-os.toml.5.gz')" "nat_address" "slot-os.toml(5) documents the keys" || return 1
  assert_contains "$(th_sh "$H" 'zcat /usr/share/man/man1/slot-os.1.gz')" 'slot-os make-base-image' "slot-os(1) documents the subcommands" || return 1
  assert_contains "$(th_run "$H" bash -c 'source /usr/share/bash-completion/completions/slot-os; complete -p slot-os')" "slot-os" "bash completion loads" || return 1
  assert_contains "$(sos --version)" "slot-os" "the packaged helper runs" || return 1
  assert_ok sos check || return 1
}

test_walkthrough_with_the_package() {
  local out s
  out=$(sos make-base-image 2>&1) || { t_fail "make-base-image: $out"; return 1; }
  out=$(sos build 2 2>&1) || { t_fail "build 2: $out"; return 1; }
  # the packaged generator wrote the slots' files
  for s in slot00 slot01; do
    assert_ok th_run "$H" test -f /run/systemd/nspawn/$s.nspawn || return 1
    assert_ok th_run "$H" test -f /run/systemd/generator/systemd-nspawn@$s.service.d/50-slot-os.conf || return 1
  done
  out=$(sos start all 2>&1) || { t_fail "start all: $out"; return 1; }
  out=$(th_run "$H" machinectl list --no-legend)
  assert_contains "$out" "slot00" "slot00 runs" || return 1
  assert_contains "$out" "slot01" "slot01 runs" || return 1
  assert_eq active "$(th_run "$H" systemctl show -P ActiveState systemd-nspawn@slot01)" "slot01 active" || return 1
  assert_eq slot00 "$(sos exec 0 -- hostname)" "slot00 is a booted machine" || return 1
  # a scheduled backup, for the purge to clean up
  assert_ok th_run "$H" systemctl enable --now slot-os-backup@slot00.timer || return 1
  assert_eq active "$(th_run "$H" systemctl show -P ActiveState slot-os-backup@slot00.timer)" "backup timer active" || return 1
  assert_ok th_run "$H" systemctl enable --now slot-os-metrics.timer || return 1
}

test_purge_removes_the_package_and_keeps_the_slots() {
  local files out f
  files=$(th_sh "$H" 'dpkg -L slot-os | while read -r f; do [ -d "$f" ] || echo "$f"; done')
  assert_contains "$files" "/usr/lib/systemd/system-generators/slot-os-generator" "dpkg -L lists the generator" || return 1
  out=$(th_run "$H" env DEBIAN_FRONTEND=noninteractive apt-get purge -y slot-os 2>&1) ||
    { t_fail "apt-get purge: $out"; return 1; }
  assert_eq "" "$(th_run "$H" dpkg-query -W -f='${Status}' slot-os 2>/dev/null)" "no dpkg record left" || return 1
  # every file of the package (helper, generator, units, man pages, completions, conffile)
  while IFS= read -r f; do
    [[ -n "$f" ]] || continue
    assert_ok th_run "$H" test ! -e "$f" || { t_fail "$f left after purge"; return 1; }
  done <<<"$files"
  assert_ok th_run "$H" test ! -e /usr/lib/systemd/system-generators/slot-os-generator || return 1
  assert_ok th_run "$H" test ! -e /usr/lib/systemd/system/slot-os-forward.service || return 1
  # scheduled backups stopped (they would call a missing helper), their links purged
  assert_ok th_sh "$H" '! systemctl is-active -q slot-os-backup@slot00.timer' || return 1
  assert_ok th_sh "$H" '! systemctl is-active -q slot-os-metrics.timer' || return 1
  assert_eq "" "$(th_sh "$H" 'ls /etc/systemd/system/*.wants/ | grep slot-os')" "no enablement link left" || return 1
  # what the generator wrote at runtime is gone too, and systemd dropped the drop-ins
  assert_eq "" "$(th_sh "$H" 'ls /run/systemd/nspawn/*.nspawn /run/systemd/network/*slot-os* 2>/dev/null; ls -d /run/systemd/generator/systemd-nspawn@* 2>/dev/null')" "no generated file left" || return 1
  assert_not_contains "$(th_run "$H" systemctl show -P DropInPaths systemd-nspawn@slot00)" "slot-os" "no slot-os drop-in loaded" || return 1
  # the slots' data stays: images, and the slot files the administrator (build) wrote
  for s in slot-os slot00 slot01; do
    assert_ok th_run "$H" test -x /var/lib/machines/$s/usr/lib/systemd/systemd || { t_fail "image $s removed"; return 1; }
  done
  assert_contains "$(th_run "$H" machinectl list-images --no-legend)" "slot01" "machined still lists the images" || return 1
  assert_ok th_run "$H" test -f /etc/slot-os/slot00.toml || return 1
  assert_ok th_run "$H" test ! -e /etc/slot-os/slot-os.toml || return 1
}
