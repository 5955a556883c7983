# Issue 13 (first part): copy-on-write slots on ext4. Overlay roots (a read-only version of
# the base image below each slot's own upper directory), idmapped layers for the slots'
# user namespaces, base versions and rebase, and every command on overlay slots.
# releases: bookworm trixie

H=ovl

scenario_setup() {
  th_boot "$H" unified || return 1
  th_copy_slot_image "$H" slot-os || return 1
}

scenario_teardown() {
  # SLOT_OS_TEST_KEEP=1 leaves the host running for a look inside.
  [[ -n ${SLOT_OS_TEST_KEEP:-} ]] || th_destroy "$H"
}

sos() { th_run "$H" slot-os "$@"; }
inslot() { th_run "$H" slot-os exec "$1" -- sh -c "$2"; }
M=/var/lib/machines

test_build_10_makes_overlay_slots_on_ext4() {
  local out rc
  assert_eq ef53 "$(th_run "$H" stat -f -c %t $M)" "the machines dir is ext4 (magic 0xef53)" || return 1
  out=$(sos build 10 2>&1); rc=$?
  assert_eq 0 "$rc" "build 10 ($out)" || return 1
  assert_contains "$out" "storage: overlay (auto:" "auto chose overlay" || return 1
  assert_contains "$out" "slot-os: new read-only version slot-os@1 for overlay slots" || return 1
  local s
  for s in 00 01 02 03 04 05 06 07 08 09; do
    assert_contains "$(th_run "$H" cat /etc/slot-os/slot$s.toml)" 'storage = "overlay"' "slot$s.toml records it" || return 1
    assert_eq "slot-os@1" "$(th_run "$H" cat $M/.slot-os/slot/slot$s/base)" "slot$s pinned" || return 1
  done
  assert_eq 1 "$(th_sh "$H" 'ls /var/lib/machines/.slot-os/lower | grep -c @')" "one version for ten slots" || return 1
}

test_overlay_slots_boot() {
  local out rc st
  out=$(sos start 0 1 2 2>&1); rc=$?
  assert_eq 0 "$rc" "start 0 1 2 ($out)" || return 1
  for s in slot00 slot01 slot02; do
    st=$(th_run "$H" systemctl -M $s is-system-running 2>&1)
    case "$st" in running|degraded) ;; *) t_fail "$s: $st"; th_run "$H" systemctl -M $s --failed; return 1 ;; esac
    assert_eq "$s" "$(inslot $s hostname)" "$s's hostname" || return 1
  done
}
