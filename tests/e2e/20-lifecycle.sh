# start / stop / suspend / resume / list on a real systemd test host (unified cgroups, so
# the cgroup freezer works), with three slots; asserted against what systemd and machined
# report. The hybrid-mode refusal of `suspend` is 21-hybrid-cgroups.sh.
# releases: bookworm trixie

H=life

scenario_setup() {
  th_boot "$H" unified || return 1
  local s
  for s in slot00 slot01 slot02; do
    th_copy_slot_image "$H" "$s" || return 1
  done
  th_sh "$H" 'mkdir -p /etc/slot-os &&
    for s in slot00 slot01 slot02; do echo "memory = \"256M\"" > /etc/slot-os/$s.toml; done &&
    systemctl daemon-reload'
}

scenario_teardown() {
  th_destroy "$H"
}

sos() { th_run "$H" slot-os "$@"; }
prop() { th_run "$H" systemctl show -P "$2" "systemd-nspawn@$1.service"; }
# Fulcon's auto CPU% and the host's CPUs, as the test host sees them (3 slots)
quota() { echo $(( $(th_run "$H" getconf _NPROCESSORS_ONLN) * 100 / 3 )); }
cpus() { th_run "$H" cat /sys/devices/system/cpu/online; }
# machined's IPv4 addresses of a machine, sorted, space-separated
machined_v4() {
  th_run "$H" busctl --json=short call org.freedesktop.machine1 /org/freedesktop/machine1 \
    org.freedesktop.machine1.Manager GetMachineAddresses s "$1" |
    jq -r '[.data[0][] | select(.[0] == 2) | .[1] | map(tostring) | join(".")] | sort | join(" ")'
}
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

assert_states() { # assert_states STATE slot...
  local want=$1 s; shift
  for s in "$@"; do assert_eq "$want" "$(prop "$s" ActiveState)" "$s ActiveState" || return 1; done
}

test_start_0_returns_once_the_slot_has_booted() {
  local out rc
  out=$(sos start 0 2>&1); rc=$?
  assert_eq 0 "$rc" "start 0 exit code ($out)" || return 1
  assert_eq "slot00: started" "$out" "start 0 output" || return 1
  # Right after start returns (no polling): machined has it, and its systemd answers.
  assert_eq running "$(th_run "$H" machinectl show slot00 -p State --value)" "machined State" || return 1
  assert_ok th_run "$H" systemd-run -M slot00 --wait -q -P true || return 1
  local st
  st=$(th_run "$H" systemctl -M slot00 is-system-running 2>&1)
  case "$st" in running|degraded) ;; *) t_fail "slot00's systemd not booted when start returned: $st"; return 1 ;; esac
  assert_states inactive slot01 slot02 || return 1
}

test_start_of_a_running_slot_is_a_no_op() {
  local leader out rc
  leader=$(th_run "$H" machinectl show slot00 -p Leader --value)
  out=$(sos start slot00 2>&1); rc=$?
  assert_eq 0 "$rc" "start of a running slot ($out)" || return 1
  assert_contains "$out" "slot00: already running" || return 1
  assert_eq "$leader" "$(th_run "$H" machinectl show slot00 -p Leader --value)" "same instance" || return 1
}

test_start_all_starts_the_rest_in_parallel() {
  local out rc
  out=$(sos start all 2>&1); rc=$?
  assert_eq 0 "$rc" "start all ($out)" || return 1
  assert_contains "$out" "slot00: already running" || return 1
  assert_contains "$out" "slot01: started" || return 1
  assert_contains "$out" "slot02: started" || return 1
  assert_states active slot00 slot01 slot02 || return 1
  local s
  for s in slot01 slot02; do
    assert_ok th_run "$H" systemd-run -M "$s" --wait -q -P true || return 1
  done
}

test_list_shows_fulcons_columns() {
  local out
  out=$(sos list 2>&1) || { t_fail "list: $out"; return 1; }
  assert_eq 3 "$(printf '%s\n' "$out" | grep -c .)" "one line per slot: $out" || return 1
  assert_eq 3 "$(printf '%s\n' "$out" | grep -c ' RUNNING ')" "3 RUNNING: $out" || return 1
  # number : state name CPU% CPUs memory autostart image storage [addresses], in number
  # order (a plain image directory on ext4 shows as copy)
  local first
  first=$(printf '%s\n' "$out" | head -1)
  printf '%s\n' "$first" | grep -qE "^ 0 : RUNNING +slot00 +$(quota) % +$(cpus) +256M +- +slot00 +copy( |\$)" ||
    { t_fail "first line not in Fulcon's format: '$first'"; return 1; }
  assert_eq "slot00 slot01 slot02" "$(printf '%s\n' "$out" | awk '{print $4}' | tr '\n' ' ' | sed 's/ $//')" "number order" || return 1
  if printf '%s\n' "$out" | grep -q 'fe80:'; then t_fail "link-local addresses listed: $out"; return 1; fi
  # NAME filters; a bad NAME is bad input
  assert_eq 1 "$(sos list 1 | grep -c .)" "list 1 shows one slot" || return 1
  assert_contains "$(sos list slot01)" "slot01" || return 1
  assert_exit 2 sos list nosuchslot || return 1
}

test_list_json_matches_machined_and_systemd() {
  local json
  json=$(sos list --json) || { t_fail "list --json failed"; return 1; }
  printf '%s' "$json" | jq -e 'type == "array" and length == 3' >/dev/null ||
    { t_fail "not a JSON array of 3: $json"; return 1; }
  local s i=0
  for s in slot00 slot01 slot02; do
    local row
    row=$(printf '%s' "$json" | jq -c --arg n "$s" '.[] | select(.name == $n)')
    [ -n "$row" ] || { t_fail "$s missing in list --json"; return 1; }
    j() { printf '%s' "$row" | jq -r "$1"; }
    assert_eq "$i" "$(j .number)" "$s number" || return 1
    assert_eq RUNNING "$(j .state)" "$s state" || return 1
    assert_eq "$(quota)" "$(j .cpu_quota)" "$s cpu_quota (auto: CPUs * 100 / 3 slots)" || return 1
    assert_eq "$(cpus)" "$(j .cpus)" "$s cpus" || return 1
    assert_eq 268435456 "$(j .memory)" "$s memory" || return 1
    assert_eq 256M "$(j .memory_text)" "$s memory_text" || return 1
    assert_eq false "$(j .autostart)" "$s autostart" || return 1
    assert_eq "$s" "$(j .image)" "$s image" || return 1
    assert_eq "systemd-nspawn@$s.service" "$(j .unit)" "$s unit" || return 1
    assert_eq "$(th_run "$H" machinectl show "$s" -p Leader --value)" "$(j .leader)" "$s leader = machined's Leader" || return 1
    assert_eq "$(prop "$s" ActiveState)" "$(j .active_state)" "$s active_state" || return 1
    assert_eq "$(prop "$s" SubState)" "$(j .sub_state)" "$s sub_state" || return 1
    assert_eq "$(prop "$s" FreezerState)" "$(j .freezer_state)" "$s freezer_state" || return 1
    printf '%s' "$row" | jq -e '.addresses | type == "array" and all(.[]; startswith("fe80:") | not)' >/dev/null ||
      { t_fail "$s addresses: $row"; return 1; }
    # list reads addresses from the slot's netns itself: the IPv4 ones must be machined's
    # (read again if DHCP changed them in between)
    local want got try
    for try in 1 2 3; do
      want=$(machined_v4 "$s")
      got=$(sos list --json "$s" | jq -r '[.[0].addresses[] | select(test("^[0-9.]+$"))] | sort | join(" ")')
      [ "$want" = "$got" ] && break
      sleep 1
    done
    assert_eq "$want" "$got" "$s IPv4 addresses = machined's GetMachineAddresses" || return 1
    echo "$s: addresses $got"
    i=$((i + 1))
  done
  # a stopped slot: leader null, no addresses
  json=$(sos list --json slot00) || return 1
  printf '%s' "$json" | jq -e 'length == 1 and .[0].name == "slot00"' >/dev/null ||
    { t_fail "list --json slot00: $json"; return 1; }
}

test_suspend_and_resume() {
  local out rc
  out=$(sos suspend 0 2>&1); rc=$?
  assert_eq 0 "$rc" "suspend 0 ($out)" || return 1
  assert_eq "slot00: suspended" "$out" || return 1
  assert_eq frozen "$(prop slot00 FreezerState)" "FreezerState after suspend" || return 1
  assert_eq active "$(prop slot00 ActiveState)" "a suspended slot is still active" || return 1
  assert_contains "$(sos list 0)" " 0 : SUSPENDED " "list shows SUSPENDED" || return 1
  assert_eq SUSPENDED "$(sos list --json 0 | jq -r '.[0].state')" || return 1
  out=$(sos suspend 0 2>&1); rc=$?
  assert_eq 0 "$rc" "second suspend ($out)" || return 1
  assert_contains "$out" "already suspended" || return 1
  out=$(sos resume 0 2>&1); rc=$?
  assert_eq 0 "$rc" "resume 0 ($out)" || return 1
  assert_eq "slot00: resumed" "$out" || return 1
  assert_eq running "$(prop slot00 FreezerState)" "FreezerState after resume" || return 1
  assert_contains "$(sos list 0)" " 0 : RUNNING " "list shows RUNNING again" || return 1
  assert_ok th_run "$H" systemd-run -M slot00 --wait -q -P true || return 1
  # resume of a slot that is not suspended: ok, nothing done
  out=$(sos resume 0 1 2>&1); rc=$?
  assert_eq 0 "$rc" "resume of running slots ($out)" || return 1
  assert_contains "$out" "slot01: not suspended" || return 1
}

test_stop_of_a_suspended_slot_does_not_hang() {
  assert_ok sos suspend 0 || return 1
  assert_eq frozen "$(prop slot00 FreezerState)" || return 1
  local t0 out rc ms
  t0=$(date +%s%N)
  out=$(th_run "$H" timeout 60 slot-os stop 0 2>&1); rc=$?
  ms=$(ms_since "$t0")
  assert_eq 0 "$rc" "stop of a suspended slot ($out)" || return 1
  assert_eq "slot00: stopped" "$out" || return 1
  [ "$ms" -lt 20000 ] || { t_fail "stop of a suspended slot took $ms ms"; return 1; }
  assert_states inactive slot00 || return 1
  assert_states active slot01 slot02 || return 1
}

test_suspend_of_a_stopped_slot_fails_for_that_slot_only() {
  local out rc
  out=$(sos suspend 0 1 2>&1); rc=$?
  assert_eq 1 "$rc" "suspend of a stopped slot ($out)" || return 1
  assert_contains "$out" "slot00: failed: not running" || return 1
  assert_contains "$out" "slot01: suspended" "the other slot is still suspended" || return 1
  assert_eq frozen "$(prop slot01 FreezerState)" || return 1
  assert_ok sos resume 1 || return 1
  assert_eq running "$(prop slot01 FreezerState)" || return 1
}

test_stop_all() {
  local out rc
  out=$(sos stop all 2>&1); rc=$?
  assert_eq 0 "$rc" "stop all ($out)" || return 1
  assert_contains "$out" "slot00: already stopped" || return 1
  assert_contains "$out" "slot01: stopped" || return 1
  assert_contains "$out" "slot02: stopped" || return 1
  assert_states inactive slot00 slot01 slot02 || return 1
  assert_eq "" "$(th_run "$H" machinectl list --no-legend)" "no machines left" || return 1
  assert_eq 3 "$(sos list | grep -c ' STOPPED ')" "list shows 3 STOPPED" || return 1
  assert_eq null "$(sos list --json 0 | jq -r '.[0].leader')" "a stopped slot has no leader" || return 1
  out=$(sos stop all 2>&1); rc=$?
  assert_eq 0 "$rc" "stop of stopped slots ($out)" || return 1
}

test_bad_input_changes_nothing() {
  local a
  for a in "start 99" "start nosuchslot" "start 0 nosuchslot" "stop 99" "suspend 1 x" "resume nosuchslot" "start"; do
    # shellcheck disable=SC2086
    assert_exit 2 sos $a || return 1
  done
  assert_contains "$(sos start 99 2>&1)" 'unknown slot "99"' || return 1
  assert_states inactive slot00 slot01 slot02 || return 1
  assert_eq "" "$(th_run "$H" machinectl list --no-legend)" "nothing started" || return 1
}

test_a_slot_that_cannot_start_is_reported_and_others_still_start() {
  # slot03's image does not exist: its unit fails; slot00 starts anyway
  th_sh "$H" 'echo "memory = \"256M\"" > /etc/slot-os/slot03.toml && systemctl daemon-reload' || return 1
  local out rc
  out=$(sos start 0 3 2>&1); rc=$?
  assert_eq 1 "$rc" "start with one failing slot ($out)" || return 1
  assert_contains "$out" "slot00: started" || return 1
  assert_contains "$out" "slot03: failed: " || return 1
  assert_contains "$out" "systemd-nspawn@slot03.service" "the error names the unit" || return 1
  assert_contains "$out" "result 'failed'" "the error names the job result" || return 1
  assert_contains "$out" "journalctl -u systemd-nspawn@slot03.service" "the error says where to look" || return 1
  assert_states active slot00 || return 1
  assert_contains "$(sos list 3)" " 3 : FAILED " "list shows FAILED" || return 1
  assert_ok sos stop all || return 1
  th_sh "$H" 'rm /etc/slot-os/slot03.toml; systemctl reset-failed; systemctl daemon-reload'
}

test_journal_holds_each_slots_history() {
  assert_ok sos start 1 || return 1
  assert_ok sos resource -m 300M 1 || return 1
  assert_ok sos stop 1 || return 1
  assert_exit 2 sos resource -m abc 1 || return 1   # refused before it runs: not an operation
  local j
  j=$(th_run "$H" journalctl -t slot-os SLOT=slot01 -o json --no-pager | jq -r '"\(.OPERATION) \(.RESULT) \(.MESSAGE)"')
  printf '%s\n' "$j"
  assert_contains "$j" "start done start slot01: started" "start logged with its result" || return 1
  assert_contains "$j" "resource done resource slot01: CPU" "resource logged" || return 1
  assert_contains "$j" "memory 300M" "resource entry says what was set" || return 1
  assert_contains "$j" "stop done stop slot01: stopped" "stop logged" || return 1
  assert_not_contains "$j" "slot00" "only slot01's entries" || return 1
  # a failure is logged as such, with priority err
  th_sh "$H" 'echo "memory = \"256M\"" > /etc/slot-os/slot03.toml && systemctl daemon-reload' || return 1
  sos start 3 >/dev/null 2>&1
  j=$(th_run "$H" journalctl -t slot-os SLOT=slot03 -p err -o json --no-pager | jq -r '"\(.OPERATION) \(.RESULT)"')
  assert_contains "$j" "start failed" "failed start logged as an error" || return 1
  th_sh "$H" 'rm /etc/slot-os/slot03.toml; systemctl reset-failed; systemctl daemon-reload'
}
