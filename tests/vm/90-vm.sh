# shellcheck shell=bash disable=SC2016  # single-quoted code runs in the VM, expanded there
# Issue 11: kernel-enforced limits, proven on a real kernel. An nspawn test host cannot
# enforce CPUQuota/MemoryMax (cgroup v1, read-only, on these machines) and has no /dev/kmsg,
# so this scenario boots a Debian VM with qemu (tests/vm/lib.sh: KVM where usable, TCG
# otherwise), installs the .deb in it, starts one slot, and checks inside the slot what the
# kernel does: MemoryMax OOM-kills, CPUQuota throttles, `resource` changes both live, `suspend`
# freezes the slot's clock, and the generator's boot-time messages reach `journalctl -b`
# through /dev/kmsg. One VM boot (plus one reboot) for every check; see tests/vm/README.md.
# SLOT_OS_VM_SUITE=trixie runs the same checks on Debian 13.

# shellcheck source=tests/vm/lib.sh
source "$TH_REPO/tests/vm/lib.sh"

# The slot's limits: small enough that a 200 MB allocation and a busy loop hit them.
VM_MEM_LIMIT=60M
VM_MEM_LIMIT_BYTES=62914560
VM_CPU_QUOTA=20
VM_CPU_RAISED=60
VM_MEM_RAISED=400M
VM_ALLOC_BYTES=209715200

scenario_setup() {
    local img
    bash "$TH_REPO/tests/vm/install-deps.sh" || return 1
    img=$(vm_image) || return 1
    th_note "vm image: $img ($(cat "$img/kernel-version"))"
    # Booted here, not in a test: qemu lives as long as this scenario's shell (PDEATHSIG).
    vm_start "$img" || return 1
    th_note "vm: $(cat "$VM_RUN/accel"), load: $(uptime)"
}

scenario_teardown() {
    local rec
    rec=$(cat "$VM_RUN/qemu.pid" 2>/dev/null)
    vm_poweroff
    # the very qemu process we started (PID and start time) is gone
    [[ -z "$rec" || "$(vm__proc_id "${rec%% *}")" != "$rec" ]] || t_fail "qemu ${rec%% *} still runs"
}

# In the VM: the slot's own systemd runs CMD (so CMD is in the slot's cgroup and obeys its
# limits; a bare nsenter would stay in the host's cgroup).
in_slot() { # UNIT 'shell code'
    printf 'systemd-run -M slot00 --wait -P --quiet --unit=%s sh -c %q' "$1" "$2"
}

# CPU time (ms) a busy loop gets in 10 s inside the slot, from its /proc/PID/stat.
busy_loop_ms() { # UNIT
    local code
    code='sh -c "while :; do :; done" & p=$!
sleep 10
set -- $(cut -d" " -f14,15 /proc/$p/stat)
kill $p
echo $(( ($1 + $2) * 1000 / $(getconf CLK_TCK) ))'
    vm_sh -t 120 "$(in_slot "$1" "$code")"
}

test_vm_is_a_real_host() {
    local out
    assert_contains "$(vm_ready_line)" " running" "the VM booted to 'running'" || return 1
    out=$(vm_sh 'stat -fc %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.controllers; stat -c %F /dev/kmsg; cat /proc/1/comm; uname -r')
    printf '%s\n' "$out"
    assert_contains "$out" "cgroup2fs" "pure cgroup v2" || return 1
    assert_contains "$out" "cpu " "cpu controller" || return 1
    assert_contains "$out" "memory" "memory controller" || return 1
    assert_contains "$out" "character special file" "/dev/kmsg is the kernel's" || return 1
    assert_contains "$out" "systemd" "PID 1 is systemd" || return 1
}

test_package_installs() {
    local out deb
    out=$(make -s --no-print-directory -C "$TH_REPO" deb-only PROFILE="$TH_PROFILE" 2>&1) ||
        { t_fail "make deb-only: $out"; return 1; }
    deb=$(printf '%s\n' "$out" | tail -n 1)
    [[ "$deb" == /* ]] || deb=$TH_REPO/$deb
    [[ -f "$deb" ]] || { t_fail "no .deb at '$deb'"; return 1; }
    cp -- "$deb" "$VM_RUN/share/slot-os.deb" || return 1
    # No network in the VM: apt resolves the Depends from what is installed.
    out=$(vm_sh -t 300 'DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /run/slot-os-vm/slot-os.deb &&
        dpkg-query -W -f="\${Status}\n" slot-os && slot-os --version')
    assert_contains "$out" "install ok installed" "dpkg status" || return 1
}

test_slot_built_with_limits() {
    local out
    out=$(vm_sh -t 1800 'slot-os make-base-image && slot-os build 1 &&
        slot-os resource -c "$1" -m "$2" 0 && cat /etc/slot-os/slot00.toml' "$VM_CPU_QUOTA%" "$VM_MEM_LIMIT") ||
        { t_fail "make-base-image/build/resource: $out"; return 1; }
    printf '%s\n' "$out"
    assert_contains "$out" "memory = \"$VM_MEM_LIMIT\"" "memory persisted" || return 1
}

test_generator_boot_messages_reach_the_journal_through_kmsg() {
    local out
    # A bad file before a boot: the generator logs it at boot, when there is no journal yet,
    # only the kernel log, which journald imports when it starts.
    assert_ok vm_sh 'printf "memory = \"lots\"\n" >/etc/slot-os/vmbad.toml' || return 1
    vm_reboot || { t_fail "reboot"; return 1; }
    out=$(vm_sh 'journalctl -b -t slot-os-generator -o export --no-pager | grep -a -e ^MESSAGE= -e ^_TRANSPORT= -e ^_SOURCE_MONOTONIC_TIMESTAMP=')
    printf '%s\n' "$out"
    assert_contains "$out" "vmbad.toml" "the generator's message names the file" || return 1
    assert_contains "$out" "_TRANSPORT=kernel" "it came through /dev/kmsg" || return 1
    # the other slot was generated all the same
    assert_ok vm_sh 'test -f /run/systemd/nspawn/slot00.nspawn' || return 1
    assert_ok vm_sh 'rm /etc/slot-os/vmbad.toml && systemctl daemon-reload' || return 1
}

test_slot_starts_with_kernel_limits() {
    local out cg
    if [[ "$(cat "$VM_RUN/accel")" == tcg* ]]; then
        # Emulation boots a slot in ~2 min, past systemd's 90 s start timeout: the test
        # environment's slowness, not the product's, so only here the timeout is raised.
        assert_ok vm_sh 'mkdir -p /etc/systemd/system/systemd-nspawn@.service.d &&
            printf "[Service]\nTimeoutStartSec=1200\n" >/etc/systemd/system/systemd-nspawn@.service.d/90-slot-os-vm-tcg.conf &&
            systemctl daemon-reload' || return 1
    fi
    local t0
    t0=$(th__now_ms)
    out=$(vm_sh -t 1300 'slot-os start 0') || { t_fail "start 0: $out"; return 1; }
    th_note "slot00 started in $(th__secs $(($(th__now_ms) - t0)))"
    out=$(vm_sh -t 120 "$(in_slot vm-up 'systemctl is-system-running --wait; cat /proc/self/cgroup')")
    printf '%s\n' "$out"
    cg=$(vm_sh 'systemctl show -P ControlGroup systemd-nspawn@slot00.service')
    out=$(vm_sh 'cat "/sys/fs/cgroup$1/memory.max" "/sys/fs/cgroup$1/cpu.max"' "$cg")
    printf '%s\n' "$out"
    assert_eq "$VM_MEM_LIMIT_BYTES"$'\n'"$((VM_CPU_QUOTA * 1000)) 100000" "$out" "the kernel's memory.max and cpu.max" || return 1
}

test_memory_max_oom_kills_an_allocation_past_the_limit() {
    local out rc cg before after
    cg=$(vm_sh 'systemctl show -P ControlGroup systemd-nspawn@slot00.service')
    before=$(vm_sh 'sed -n "s/^oom_kill //p" "/sys/fs/cgroup$1/memory.events"' "$cg")
    # tail keeps its whole (newline-free) input in memory: a 200 MB allocation.
    out=$(vm_sh -t 120 "$(in_slot vm-oom "head -c $VM_ALLOC_BYTES /dev/zero | tail | wc -c")"); rc=$?
    printf 'rc %s: %s\n' "$rc" "$out"
    assert_not_contains "$out" "$VM_ALLOC_BYTES" "the allocation did not complete" || return 1
    ((rc != 0)) || { t_fail "the allocation exited 0"; return 1; }
    after=$(vm_sh 'sed -n "s/^oom_kill //p" "/sys/fs/cgroup$1/memory.events"' "$cg")
    ((after > before)) || { t_fail "the slot's memory.events oom_kill did not grow ($before -> $after)"; return 1; }
    assert_eq "oom-kill" "$(vm_sh 'systemctl -M slot00 show -P Result vm-oom.service')" "the slot's systemd saw an OOM kill" || return 1
    out=$(vm_sh 'journalctl -k -b --no-pager | grep -i "killed process" | tail -n 1')
    assert_contains "$out" "(tail)" "the kernel killed the allocating process" || return 1
    assert_eq active "$(vm_sh 'systemctl show -P ActiveState systemd-nspawn@slot00.service')" "the slot itself survives" || return 1
    assert_ok vm_sh 'systemctl -M slot00 reset-failed vm-oom.service' || return 1
}

# The slot's cpu.stat nr_throttled: the kernel's own count of throttled periods.
nr_throttled() {
    vm_sh 'sed -n "s/^nr_throttled //p" "/sys/fs/cgroup$(systemctl show -P ControlGroup systemd-nspawn@slot00.service)/cpu.stat"'
}

test_cpu_quota_holds_a_busy_loop_near_its_quota() {
    local ms before after
    before=$(nr_throttled)
    ms=$(busy_loop_ms vm-busy1) || { t_fail "busy loop: $ms"; return 1; }
    after=$(nr_throttled)
    th_note "cpu_quota ${VM_CPU_QUOTA}%: a 10 s busy loop got ${ms} ms of CPU (throttled periods $before -> $after)"
    ((after > before)) || { t_fail "the kernel throttled no period ($before -> $after)"; return 1; }
    # 20% of 10 s = 2000 ms: 2.1-2.7 s measured at rest; emulation on a loaded machine
    # overshoots (3.7 s measured at load 20), still far below the 10 s unthrottled.
    ((ms >= 1000 && ms <= 4000)) || { t_fail "${ms} ms of CPU in 10 s at ${VM_CPU_QUOTA}% (want 1000..4000)"; return 1; }
}

test_resource_raises_memory_live() {
    local out
    out=$(vm_sh 'slot-os resource -m "$1" 0' "$VM_MEM_RAISED") || { t_fail "resource -m: $out"; return 1; }
    assert_eq $((400 * 1024 * 1024)) "$(vm_sh 'cat "/sys/fs/cgroup$(systemctl show -P ControlGroup systemd-nspawn@slot00.service)/memory.max"')" "memory.max raised" || return 1
    out=$(vm_sh -t 120 "$(in_slot vm-alloc2 "head -c $VM_ALLOC_BYTES /dev/zero | tail | wc -c")") ||
        { t_fail "the allocation failed after raising the limit: $out"; return 1; }
    assert_eq "$VM_ALLOC_BYTES" "$out" "the 200 MB allocation completes" || return 1
}

test_resource_changes_cpu_live() {
    local out ms
    out=$(vm_sh 'slot-os resource -c "$1" 0' "$VM_CPU_RAISED%") || { t_fail "resource -c: $out"; return 1; }
    assert_eq "$((VM_CPU_RAISED * 1000)) 100000" "$(vm_sh 'cat "/sys/fs/cgroup$(systemctl show -P ControlGroup systemd-nspawn@slot00.service)/cpu.max"')" "cpu.max changed" || return 1
    ms=$(busy_loop_ms vm-busy2) || { t_fail "busy loop: $ms"; return 1; }
    th_note "cpu_quota ${VM_CPU_RAISED}%: a 10 s busy loop got ${ms} ms of CPU"
    # 6000 ms at 60%; 4.75 s measured at load 20. Disjoint from the 20% range: the share changed.
    ((ms > 4000 && ms <= 7000)) || { t_fail "${ms} ms of CPU in 10 s at ${VM_CPU_RAISED}% (want 4001..7000)"; return 1; }
}

test_suspend_stops_the_slots_clock() {
    local out
    # A counter in the slot, read from the VM through the leader's root (works while frozen).
    assert_ok vm_sh "systemd-run -M slot00 --quiet --unit=vm-counter sh -c 'i=0; while :; do i=\$((i+1)); echo \$i >/run/vm-counter; sleep 0.1; done'" || return 1
    out=$(vm_sh -t 200 '
        c() { cat "/proc/$(machinectl show -p Leader --value slot00 2>/dev/null)/root/run/vm-counter" 2>/dev/null || echo 0; }
        wait_above() { for _ in $(seq 300); do [ "$(c)" -gt "$1" ] && return 0; sleep 0.2; done; return 1; }
        wait_above 5 || { echo "the counter never ran"; exit 1; }
        slot-os suspend 0 || exit 1
        echo "state $(systemctl show -P FreezerState systemd-nspawn@slot00.service)"
        a=$(c); sleep 3; b=$(c)
        echo "frozen $a $b"
        slot-os resume 0 || exit 1
        echo "state $(systemctl show -P FreezerState systemd-nspawn@slot00.service)"
        wait_above "$b" && echo "resumed $(c)"
    ')
    printf '%s\n' "$out"
    assert_contains "$out" "state frozen" "systemd reports frozen" || return 1
    [[ "$out" =~ frozen\ ([0-9]+)\ ([0-9]+) ]] || { t_fail "no counter readings: $out"; return 1; }
    assert_eq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "the counter does not advance for 3 s while frozen" || return 1
    assert_contains "$out" "state running" "systemd reports running after resume" || return 1
    assert_contains "$out" "resumed " "the counter advances again after resume" || return 1
}
