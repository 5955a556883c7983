# shellcheck shell=bash
# The harness and the platform: a real systemd test host boots in nspawn (unified and hybrid
# cgroups), has the project installed, boots a nested slot with machined, freezes it where the
# kernel lets it (unified), refuses that where it cannot (hybrid), and survives a reboot.
# On each release the host is shaped like a stock Debian server (ifupdown NIC, sshd, cron,
# rsyslog, fstab by UUID, networkd installed and disabled), and the harness keeps the
# journals of what failed. Run by tests/run-e2e.sh (tests/testhost/lib.sh is sourced).
# releases: bookworm trixie

H=th00   # unified cgroup hierarchy
HY=th00h # hybrid cgroup hierarchy
HF=th00f # a host with a unit that fails at boot

scenario_setup() {
    th_boot "$H" unified || return 1
}

th_pre_boot_hook() {
    [[ "$1" == "$HF" ]] || return 0
    printf '[Unit]\nDescription=fails at boot\n[Service]\nType=oneshot\nExecStart=/bin/false\n[Install]\nWantedBy=multi-user.target\n' \
        >"$2/etc/systemd/system/th-fail.service" &&
        systemctl --root="$2" enable th-fail.service >/dev/null 2>&1
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

test_stock_host_release() {
    local want_id want_sd
    case "$TH_RELEASE" in bookworm) want_id=12 want_sd=252 ;; trixie) want_id=13 want_sd=257 ;; esac
    assert_eq "$want_id" "$(th_sh "$H" '. /etc/os-release; echo "$VERSION_ID"')" "Debian version" || return 1
    assert_eq "$want_sd" "$(th_sh "$H" 'systemctl --version | sed -n "s/^systemd \([0-9]*\).*/\1/p"')" "systemd version" || return 1
}

test_stock_host_networkd_disabled() {
    assert_eq disabled "$(th_run "$H" systemctl is-enabled systemd-networkd.service)" "systemd-networkd enabled?" || return 1
    assert_eq inactive "$(th_unit_state "$H" systemd-networkd.service)" "systemd-networkd state" || return 1
}

test_stock_host_ifupdown_nic() {
    assert_eq active "$(th_unit_state "$H" networking.service)" "networking.service" || return 1
    assert_contains "$(th_run "$H" ip -4 -o addr show dev "$TH_NIC")" "inet $TH_NIC_ADDR " "$TH_NIC has its address" || return 1
    assert_contains "$(th_run "$H" ip -4 route show default)" "default via $TH_UPSTREAM_ADDR dev $TH_NIC" "default route" || return 1
    assert_ok th_run "$H" ifquery --state "$TH_NIC" || return 1
    # the cable is real: the upstream namespace answers, and sees the host's address
    assert_ok th_run "$H" ping -c1 -W5 "$TH_UPSTREAM_ADDR" || return 1
    assert_ok ip netns exec "$(th_upstream "$H")" ping -c1 -W5 "${TH_NIC_ADDR%/*}" || return 1
}

test_stock_host_services() {
    local u
    for u in ssh.service cron.service rsyslog.service; do
        assert_eq active "$(th_unit_state "$H" "$u")" "$u" || return 1
    done
    assert_ok th_sh "$H" 'test -s /etc/ssh/ssh_host_ed25519_key && test -s /etc/ssh/ssh_host_rsa_key && sshd -t' || return 1
    assert_contains "$(th_run "$H" ssh-keyscan -T 5 -t ed25519 127.0.0.1 2>/dev/null)" "ssh-ed25519" "sshd answers with its host key" || return 1
}

test_stock_host_fstab_by_uuid() {
    local fstab
    fstab=$(th_sh "$H" 'grep -v "^#" /etc/fstab')
    assert_contains "$fstab" "UUID=" "UUID entries" || return 1
    assert_eq "1 1" "$(printf '%s\n' "$fstab" | awk '$1 ~ /^UUID=/ && $2 == "/" {r++} $1 ~ /^UUID=/ && $3 == "swap" {s++} END {print r+0, s+0}')" "a UUID root and a UUID swap" || return 1
}

test_stock_host_failed_units_only_remount_fs() {
    assert_eq degraded "$(th_run "$H" systemctl is-system-running)" "is-system-running" || return 1
    assert_eq systemd-remount-fs.service \
        "$(th_run "$H" systemctl list-units --state=failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ' | sed 's/ $//')" \
        "failed units" || return 1
    assert_contains "$(th_run "$H" journalctl -b -u systemd-remount-fs.service --no-pager)" "UUID=" "it failed on the fstab's UUID" || return 1
}

test_boot_fails_on_other_failed_units() {
    local out rc=0
    out=$(th_boot "$HF" unified 2>&1) || rc=$?
    th_destroy "$HF"
    printf '%s\n' "$out" | tail -n 40
    assert_eq 1 "$rc" "th_boot of a host with a failing unit" || return 1
    assert_contains "$out" "units failed at boot: th-fail.service" "says which" || return 1
    assert_contains "$out" "journalctl -u th-fail.service" "with its journal" || return 1
}

test_failed_test_keeps_the_journals() {
    # a unit failing inside the host, then a failing test step: its log must hold the journal
    th_run "$H" systemd-run --unit=th-diag -p Type=oneshot sh -c 'echo th-diag-says-why; exit 3'
    assert_eq failed "$(th_unit_state "$H" th-diag.service)" "th-diag.service" || return 1
    local log
    log=$(mktemp)
    # shellcheck disable=SC2317 # run by th__run_step
    fn_failing() { t_fail "deliberately"; }
    (th__run_step fn_failing "$log") && { t_fail "the failing step passed"; rm -f "$log"; return 1; }
    local text
    text=$(cat "$log")
    rm -f "$log"
    printf '%s\n' "$text" | tail -n 20
    assert_contains "$text" "$TH_DIAG_MARK" "diagnostics section" || return 1
    assert_contains "$text" "journalctl -u th-diag.service" "the failed unit's journal" || return 1
    assert_contains "$text" "th-diag-says-why" "what it said" || return 1
    th_run "$H" systemctl reset-failed th-diag.service
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

test_slot_image_is_slot_ready() {
    # th_copy_slot_image's images: their own SSH host keys, no fstab, no ifupdown NIC
    local hk sk
    hk=$(th_run "$H" ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)
    sk=$(th_run "$H" ssh-keygen -lf /var/lib/machines/slot00/etc/ssh/ssh_host_ed25519_key.pub)
    [[ -n "$sk" && "$hk" != "$sk" ]] || { t_fail "slot00 has the host's SSH host key ($sk)"; return 1; }
    th_wait_for 30 eval '[ "$(th_run "$H" systemd-run -M slot00 --wait -q -P systemctl is-system-running --wait)" = running ]' ||
        { t_fail "slot00: $(th_run "$H" systemd-run -M slot00 --wait -q -P systemctl --failed --no-legend 2>&1)"; return 1; }
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

# systemd >= 256 does not boot in the hybrid hierarchy: Debian 12 only.
if [[ "$TH_RELEASE" == bookworm ]]; then
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
fi

# Two hosts up at once (a scenario's pair, parallel runs) must not share a cgroup tree: with
# one "/payload" both systemds managed the same units, and a slot start failed (status 219).
test_two_hosts_have_cgroups_of_their_own() {
    local h2=th00b a b
    th_boot "$h2" unified || return 1
    a=$(grep '^0::' "/proc/$(th_leader "$H")/cgroup")
    b=$(grep '^0::' "/proc/$(th_leader "$h2")/cgroup")
    th_destroy "$h2" || return 1
    [[ "$a" == 0::/th-*/payload/init.scope ]] || { t_fail "host $H's PID 1 is in '$a'"; return 1; }
    [[ "$a" != "$b" ]] || { t_fail "both hosts' PID 1 in '$a'"; return 1; }
    assert_ok test ! -e "/sys/fs/cgroup/unified/${b#0::/}" -a ! -e "/sys/fs/cgroup/${b#0::/}" || return 1
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
    # a reboot resets the NIC, as on a server: ifupdown configures it again
    assert_eq active "$(th_unit_state "$H" networking.service)" "networking.service after reboot" || return 1
    assert_contains "$(th_run "$H" ip -4 -o addr show dev "$TH_NIC")" "inet $TH_NIC_ADDR " "$TH_NIC after reboot" || return 1
    assert_ok th_run "$H" ping -c1 -W5 "$TH_UPSTREAM_ADDR" || return 1
}
