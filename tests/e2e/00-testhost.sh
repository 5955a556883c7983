# shellcheck shell=bash
# The harness and the platform: a real systemd test host boots in nspawn (unified and hybrid
# cgroups), has the project installed, boots a nested slot with machined, freezes it where the
# kernel lets it (unified), refuses that where it cannot (hybrid), and survives a reboot.
# Run by tests/run-e2e.sh (tests/testhost/lib.sh is sourced).

H=th00   # unified cgroup hierarchy
HY=th00h # hybrid cgroup hierarchy

scenario_setup() {
    th_boot "$H" unified || return 1
}

slot_state() { th_run "$H" machinectl show slot00 -p State --value 2>/dev/null; }

test_host_is_running() {
    local st
    st=$(th_run "$H" systemctl is-system-running)
    case "$st" in running | degraded) ;; *) t_fail "is-system-running: '$st'"; return 1 ;; esac
    assert_eq "$H" "$(th_run "$H" hostname)" "hostname" || return 1
    assert_eq "$(cat "$(th_root "$H")/etc/machine-id")" "$(th_run "$H" cat /etc/machine-id)" "own machine-id" || return 1
    # PID 1 inside is systemd, and machined is reachable over the host's bus
    assert_eq systemd "$(th_run "$H" cat /proc/1/comm)" "PID 1" || return 1
    assert_ok th_run "$H" machinectl list --no-legend || return 1
}

test_project_installed() {
    assert_ok th_run "$H" test -x /usr/bin/slot-os || return 1
    assert_ok th_run "$H" test -x /usr/lib/systemd/system-generators/slot-os-generator || return 1
}

test_nested_slot_boots() {
    th_copy_slot_image "$H" slot00 || return 1
    assert_ok th_run "$H" machinectl start slot00 || return 1
    th_wait_for 30 eval '[ "$(slot_state)" = running ]' || { t_fail "slot00 not running: '$(slot_state)'"; return 1; }
    # the slot's own systemd answers (nested boot finished far enough for systemd-run)
    th_wait_for 30 th_run "$H" systemd-run -M slot00 --wait -q -P true ||
        { t_fail "systemd-run -M slot00 does not work"; return 1; }
    assert_eq slot00 "$(th_run "$H" systemd-run -M slot00 --wait -q -P hostname)" "slot hostname" || return 1
}

test_freeze_works_in_unified_mode() {
    assert_ok th_run "$H" systemctl freeze systemd-nspawn@slot00 || return 1
    assert_eq frozen "$(th_run "$H" systemctl show -P FreezerState systemd-nspawn@slot00)" "FreezerState" || return 1
    assert_ok th_run "$H" systemctl thaw systemd-nspawn@slot00 || return 1
    assert_eq running "$(th_run "$H" systemctl show -P FreezerState systemd-nspawn@slot00)" "FreezerState after thaw" || return 1
    th_wait_for 20 th_run "$H" systemd-run -M slot00 --wait -q -P true || { t_fail "slot00 dead after thaw"; return 1; }
}

test_nested_slot_poweroff() {
    assert_ok th_run "$H" machinectl poweroff slot00 || return 1
    th_wait_for 30 eval '[ "$(th_unit_state "$H" systemd-nspawn@slot00)" = inactive ]' ||
        { t_fail "slot00 unit not inactive: $(th_unit_state "$H" systemd-nspawn@slot00)"; return 1; }
}

test_hybrid_mode_refuses_freeze() {
    th_boot "$HY" hybrid || return 1
    assert_eq 0 "$(th_sh "$HY" 'test -e /sys/fs/cgroup/cgroup.controllers && echo 2 || echo 0')" \
        "hybrid host has no unified root cgroup" || return 1
    assert_ok th_run "$HY" systemd-run --unit=th-sleep -q sleep 300 || return 1
    local out rc=0
    out=$(th_run "$HY" systemctl freeze th-sleep.service 2>&1) || rc=$?
    [[ $rc != 0 ]] || { t_fail "freeze succeeded in hybrid mode"; return 1; }
    assert_contains "$out" "does not support freezing" "freeze refused in hybrid mode" || return 1
    th_destroy "$HY" || return 1
}

test_reboot_keeps_state() {
    th_run "$H" sh -c 'echo kept > /var/lib/th-marker' || return 1
    local leader_before
    leader_before=$(th_leader "$H")
    th_reboot "$H" || return 1
    [[ "$(th_leader "$H")" != "$leader_before" ]] || { t_fail "same PID 1 after reboot"; return 1; }
    local st
    st=$(th_run "$H" systemctl is-system-running)
    case "$st" in running | degraded) ;; *) t_fail "after reboot: '$st'"; return 1 ;; esac
    assert_eq kept "$(th_run "$H" cat /var/lib/th-marker)" "file written before the reboot" || return 1
    assert_ok th_run "$H" test -x /usr/bin/slot-os || return 1
    assert_ok th_run "$H" test -d /var/lib/machines/slot00 || return 1
}
