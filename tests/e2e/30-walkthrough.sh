# Issue 3 acceptance: the Fulcon README walkthrough, with Fulcon's words, in a real
# systemd test host (unified cgroups, so suspend/resume can work).
# releases: bookworm trixie

H=walk

scenario_setup() {
  th_boot "$H" unified || return 1
  # Plain copies, whose files this scenario reads from the image directory of stopped
  # slots: auto would give overlay slots on the test host's ext4 (60-overlay's subject).
  th_storage_backend "$H" copy || return 1
}

scenario_teardown() {
  th_destroy "$H"
}

sos() { th_run "$H" slot-os "$@"; }
state() { th_run "$H" systemctl show -P ActiveState "systemd-nspawn@$1"; }

test_make_base_image() {
  local out
  out=$(sos make-base-image 2>&1) || { t_fail "make-base-image: $out"; return 1; }
  assert_contains "$(th_run "$H" machinectl list-images --no-legend)" "slot-os" "machined lists the base image" || return 1
  # the image is a bootable root without the host's API mounts, identity or config
  assert_ok th_sh "$H" 'test -x /var/lib/machines/slot-os/usr/lib/systemd/systemd' || return 1
  assert_eq "" "$(th_sh "$H" 'ls -A /var/lib/machines/slot-os/proc')" "no /proc content in the image" || return 1
  assert_eq "" "$(th_sh "$H" 'ls -A /var/lib/machines/slot-os/etc/slot-os')" "no slot configs in the image" || return 1
  assert_eq "" "$(th_sh "$H" 'cat /var/lib/machines/slot-os/etc/machine-id')" "machine-id emptied" || return 1
  assert_ok th_sh "$H" '! ls -A /var/lib/machines | grep -q slot-os-new' || return 1
}

test_make_base_image_from_tar() {
  th_sh "$H" 'tar --numeric-owner -C /var/lib/machines/slot-os -cf /var/tmp/base.tar .' || { t_fail "making the tarball"; return 1; }
  local out
  out=$(sos make-base-image --from-tar /var/tmp/base.tar --name fromtar 2>&1) || { t_fail "make-base-image --from-tar: $out"; return 1; }
  assert_ok th_sh "$H" 'test -x /var/lib/machines/fromtar/usr/lib/systemd/systemd' || return 1
  assert_eq fromtar "$(th_run "$H" cat /var/lib/machines/fromtar/etc/hostname)" "image identity" || return 1
  assert_contains "$(th_run "$H" machinectl list-images --no-legend)" "fromtar" "machined sees it" || return 1
  assert_exit 2 sos make-base-image --from-tar /var/tmp/nosuch.tar --name x || return 1
  th_sh "$H" 'machinectl remove fromtar; rm -f /var/tmp/base.tar'
}

test_build_3_and_list() {
  local out
  out=$(sos build 3 2>&1) || { t_fail "build 3: $out"; return 1; }
  for s in slot00 slot01 slot02; do
    assert_ok th_run "$H" test -f /etc/slot-os/$s.toml || return 1
    assert_ok th_run "$H" test -d /var/lib/machines/$s || return 1
    assert_ok th_run "$H" test -f /run/systemd/nspawn/$s.nspawn || return 1
    assert_eq "$s" "$(th_run "$H" cat /var/lib/machines/$s/etc/hostname)" "$s hostname" || return 1
  done
  local ids
  ids=$(th_sh "$H" 'cat /var/lib/machines/slot0[012]/etc/machine-id | sort -u | grep -c .')
  assert_eq 3 "$ids" "each slot has its own machine-id" || return 1
  # idempotent: the second run changes nothing
  local before after
  before=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml; ls /var/lib/machines')
  out=$(sos build 3 2>&1) || { t_fail "second build 3: $out"; return 1; }
  assert_contains "$out" "nothing to change" "second build 3 is a no-op" || return 1
  after=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml; ls /var/lib/machines')
  assert_eq "$before" "$after" "build 3 twice changes nothing" || return 1
  out=$(sos list 2>&1) || { t_fail "list: $out"; return 1; }
  assert_contains "$out" "STOPPED" "list shows stopped slots" || return 1
  assert_contains "$out" "slot02" "list shows slot02" || return 1
  # Fulcon's auto CPU%: 2 CPUs * 100 / 3 slots
  assert_contains "$(th_sh "$H" 'slot-os list | grep slot00')" "66" "CPU% = ncpu*100/slots" || return 1
}

test_start_0_then_all() {
  assert_ok sos start 0 || return 1
  assert_eq active "$(state slot00)" "slot00 active" || return 1
  local st
  st=$(th_run "$H" systemctl -M slot00 is-system-running 2>&1 || true)
  case "$st" in running|degraded) ;; *) t_fail "slot00 not booted when start returned: $st"; return 1 ;; esac
  assert_ok sos start all || return 1
  for s in slot00 slot01 slot02; do assert_eq active "$(state $s)" "$s active" || return 1; done
  assert_eq 3 "$(sos list | grep -c RUNNING)" "list shows 3 RUNNING" || return 1
}

test_list_and_info_json_match_machined_and_systemd() {
  local json n s
  json=$(sos list --json) || { t_fail "list --json failed"; return 1; }
  n=$(printf '%s' "$json" | jq length) || { t_fail "list --json is not JSON: $json"; return 1; }
  assert_eq 3 "$n" "three slots in list --json" || return 1
  for s in slot00 slot01 slot02; do
    local row leader active
    row=$(printf '%s' "$json" | jq -c --arg n "$s" '.[] | select(.name == $n)')
    leader=$(th_run "$H" machinectl show "$s" -p Leader --value)
    active=$(th_run "$H" systemctl show -P ActiveState "systemd-nspawn@$s")
    assert_eq "$leader" "$(printf '%s' "$row" | jq -r .leader)" "$s leader = machined's Leader" || return 1
    assert_eq "$active" "$(printf '%s' "$row" | jq -r .active_state)" "$s active_state = systemd's" || return 1
    assert_eq RUNNING "$(printf '%s' "$row" | jq -r .state)" "$s state" || return 1
    assert_eq 66 "$(printf '%s' "$row" | jq -r .cpu_quota)" "$s cpu_quota" || return 1
    assert_eq 536870912 "$(printf '%s' "$row" | jq -r .memory)" "$s memory" || return 1
  done
  local info
  info=$(sos info 1 --json) || { t_fail "info --json failed"; return 1; }
  assert_eq "$(th_run "$H" machinectl show slot01 -p Leader --value)" "$(printf '%s' "$info" | jq -r .leader)" "info leader" || return 1
  assert_eq slot01 "$(printf '%s' "$info" | jq -r .name)" "info name" || return 1
  assert_eq RUNNING "$(printf '%s' "$info" | jq -r .state)" "info state" || return 1
  local procs
  procs=$(printf '%s' "$info" | jq -r .usage.processes)
  [ "$procs" -ge 3 ] || { t_fail "info counts the slot's processes: $procs"; return 1; }
  [ "$(printf '%s' "$info" | jq -r .usage.cpu_time_ns)" -gt 0 ] || { t_fail "info reports CPU time"; return 1; }
  assert_contains "$(sos info slot01)" "Leader: $(th_run "$H" machinectl show slot01 -p Leader --value)" "human info" || return 1
}

test_suspend_resume() {
  assert_ok sos suspend 0 || return 1
  assert_eq frozen "$(th_run "$H" systemctl show -P FreezerState systemd-nspawn@slot00)" "slot00 frozen" || return 1
  assert_contains "$(sos list 0)" "SUSPENDED" "list shows SUSPENDED" || return 1
  assert_ok sos resume 0 || return 1
  assert_eq running "$(th_run "$H" systemctl show -P FreezerState systemd-nspawn@slot00)" "slot00 thawed" || return 1
}

test_update_deploy_and_update_prog() {
  th_sh "$H" 'echo deployed-content > /root/pkg.txt'
  local out
  out=$(sos update-deploy 0 1 : /root/pkg.txt /root 2>&1) || { t_fail "update-deploy: $out"; return 1; }
  assert_eq deployed-content "$(th_run "$H" cat /var/lib/machines/slot01/root/pkg.txt 2>/dev/null || th_sh "$H" 'cat /proc/$(machinectl show slot01 -p Leader --value)/root/root/pkg.txt')" "file deployed into slot01" || return 1
  out=$(sos update-prog all : cat /root/pkg.txt 2>&1); local rc=$?
  assert_eq 1 "$rc" "update-prog exit 1 when slot02 lacks the file" || return 1
  assert_contains "$out" "slot00: deployed-content" "output prefixed by slot" || return 1
  assert_contains "$out" "slot02" "slot02 in the summary" || return 1
  assert_contains "$out" "2 ok, 1 failed" "summary of exit codes" || return 1
  out=$(sos update-prog 0 1 : rm -f /root/pkg.txt 2>&1) || { t_fail "update-prog rm: $out"; return 1; }
  assert_ok th_sh "$H" '! test -e /proc/$(machinectl show slot00 -p Leader --value)/root/root/pkg.txt' || return 1
  # exec propagates the exit code, and runs inside the slot (its hostname)
  assert_eq slot01 "$(sos exec 1 -- hostname)" "exec runs inside slot01" || return 1
  assert_exit 7 sos exec slot01 -- sh -c 'exit 7' || return 1
  out=$(sos update --dry-run all 2>&1) || { t_fail "update --dry-run: $out"; return 1; }
  assert_contains "$out" "slot00: would run: apt-get update" "update picks the slot's package manager" || return 1
}

test_resource_live_and_persisted() {
  local out
  out=$(sos resource -c 50 -n 0 -m 256M 1 2>&1) || { t_fail "resource: $out"; return 1; }
  assert_eq 500ms "$(th_run "$H" systemctl show -P CPUQuotaPerSecUSec systemd-nspawn@slot01)" "CPUQuota 50%" || return 1
  assert_eq 0 "$(th_run "$H" systemctl show -P AllowedCPUs systemd-nspawn@slot01)" "AllowedCPUs 0" || return 1
  assert_eq 268435456 "$(th_run "$H" systemctl show -P MemoryMax systemd-nspawn@slot01)" "MemoryMax 256M" || return 1
  local toml
  toml=$(th_run "$H" cat /etc/slot-os/slot01.toml)
  assert_contains "$toml" 'cpu_quota = "50%"' "TOML holds cpu_quota" || return 1
  assert_contains "$toml" 'cpus = "0"' "TOML holds cpus" || return 1
  assert_contains "$toml" 'memory = "256M"' "TOML holds memory" || return 1
  assert_contains "$toml" "# Slot slot01, made by" "comments kept" || return 1
  # persisted: still there after a restart of the slot, and no runtime override left behind
  assert_ok th_run "$H" test ! -e /run/systemd/system.control/systemd-nspawn@slot01.service.d/50-CPUQuota.conf || return 1
  assert_ok sos stop 1 || return 1
  assert_ok sos start 1 || return 1
  assert_eq 500ms "$(th_run "$H" systemctl show -P CPUQuotaPerSecUSec systemd-nspawn@slot01)" "CPUQuota after restart" || return 1
  out=$(sos resource 1)
  assert_contains "$out" "256M" "resource without options shows" || return 1
}

test_bad_input_changes_nothing() {
  local before after
  before=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml')
  assert_exit 2 sos start 99 || return 1
  assert_exit 2 sos start nosuchslot || return 1
  assert_exit 2 sos resource -m abc 1 || return 1
  assert_exit 2 sos resource -n 99 1 || return 1
  assert_exit 2 sos resource -c 0 1 || return 1
  assert_exit 2 sos resource -c 500 1 || return 1
  assert_exit 2 sos build -1 || return 1
  assert_exit 2 sos build x || return 1
  assert_exit 2 sos exec 99 -- true || return 1
  assert_exit 2 sos rename 1 Bad/Name || return 1
  assert_exit 2 sos export 0 /nonexistent/x.slot || return 1
  after=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml')
  assert_eq "$before" "$after" "config unchanged by bad input" || return 1
  local msg
  msg=$(sos resource -n 99 1 2>&1)
  assert_contains "$msg" "CPU 99 is beyond this host's CPUs" "clear message for -n 99" || return 1
}

test_autostart() {
  assert_ok sos autostart on 0 || return 1
  assert_contains "$(th_run "$H" cat /etc/slot-os/slot00.toml)" "autostart = true" "persisted" || return 1
  assert_ok th_run "$H" test -L /run/systemd/generator/machines.target.wants/systemd-nspawn@slot00.service || return 1
  assert_contains "$(sos list 0)" " A " "list shows A" || return 1
  assert_ok sos autostart off 0 || return 1
  assert_ok th_run "$H" test ! -e /run/systemd/generator/machines.target.wants/systemd-nspawn@slot00.service || return 1
}

test_two_helpers_racing_keep_config_valid() {
  local i
  for i in 1 2; do
    th_sh "$H" 'slot-os build 4 >/dev/null 2>&1 & slot-os resource -c 30 all >/dev/null 2>&1 & slot-os autostart on all >/dev/null 2>&1 & wait' || true
    assert_ok sos check || { t_fail "config corrupted after race $i: $(sos check 2>&1)"; return 1; }
    th_sh "$H" 'slot-os build 3 >/dev/null 2>&1 & slot-os resource -m 300M all >/dev/null 2>&1 & wait' || true
    assert_ok sos check || { t_fail "config corrupted after race $i (b): $(sos check 2>&1)"; return 1; }
  done
  assert_ok th_sh "$H" '! ls -A /etc/slot-os | grep -q "\.tmp$"' || return 1
}

test_rename_and_back() {
  assert_ok sos stop 2 || return 1
  assert_exit 2 sos rename slot02 slot01 || return 1   # name taken
  local out
  out=$(sos rename slot02 web 2>&1) || { t_fail "rename: $out"; return 1; }
  assert_ok th_run "$H" test ! -e /etc/slot-os/slot02.toml || return 1
  assert_contains "$(th_run "$H" cat /etc/slot-os/web.toml)" "number = 2" "number kept" || return 1
  assert_ok th_run "$H" test -d /var/lib/machines/web || return 1
  assert_ok sos start web || return 1
  assert_eq web "$(sos exec 2 -- hostname)" "renamed slot boots with its new name" || return 1
  assert_eq "127.0.1.1 web" "$(sos exec 2 -- getent hosts web | tr -s ' \t' '  ')" "and resolves it from /etc/hosts" || return 1
  assert_ok sos stop web || return 1
  out=$(sos rename web slot02 2>&1) || { t_fail "rename back: $out"; return 1; }
  assert_ok th_run "$H" test -d /var/lib/machines/slot02 || return 1
  assert_ok sos check || return 1
}

test_stop_frozen_and_build_0_leaves_nothing() {
  sos start all >/dev/null 2>&1
  assert_ok sos suspend 0 || return 1
  # stop of a suspended slot stops it, bounded time
  assert_ok th_run "$H" timeout 60 slot-os stop 0 || return 1
  assert_eq inactive "$(state slot00)" "suspended slot00 stopped" || return 1
  local out
  out=$(sos build 0 2>&1) || { t_fail "build 0: $out"; return 1; }
  assert_eq "" "$(th_sh "$H" 'ls /etc/slot-os | grep -v "^slot-os.toml$"')" "no slot config left" || return 1
  assert_eq "" "$(th_sh "$H" 'ls /run/systemd/nspawn/*.nspawn 2>/dev/null; ls -d /run/systemd/generator/systemd-nspawn@* 2>/dev/null')" "no generated file left" || return 1
  assert_eq "slot-os" "$(th_sh "$H" 'machinectl list-images --no-legend | awk "{print \$1}"')" "only the base image is left" || return 1
  assert_eq "" "$(th_sh "$H" 'find /var/log/journal -maxdepth 1 -xtype l')" "no dangling journal links" || return 1
  assert_eq "" "$(th_run "$H" machinectl list --no-legend)" "no machine running" || return 1
}
