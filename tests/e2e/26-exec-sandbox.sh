# Issue 10 item 7: commands run by `exec`, `update-prog` and `update` stay inside the slot's
# limits: its cgroup (the same subtree as the slot's own PID 1) and its capability bounding
# set, in a booted slot, a privileged one and a single-process (boot = false) one.
#
# The test host runs with every capability (--capability=all): the helper then runs with
# CAP_SYS_MODULE (bit 16), which nspawn never gives a slot, so a command that keeps the
# helper's bounding set is seen.

H=exsb

scenario_setup() {
  TH_NSPAWN_ARGS=(--capability=all)
  th_boot "$H" unified || return 1
  TH_NSPAWN_ARGS=()
  th_copy_slot_image "$H" slot00 || return 1
  # One image for all three; they run one at a time (nspawn locks the image).
  th_sh "$H" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml &&
    printf "privileged = true\nimage = \"slot00\"\n" > /etc/slot-os/slot01.toml &&
    printf "boot = false\nimage = \"slot00\"\ncommand = [\"/bin/sleep\", \"infinity\"]\n" > /etc/slot-os/slot02.toml &&
    systemctl daemon-reload' || return 1
}

scenario_teardown() {
  th_destroy "$H"
}

sos() { th_run "$H" slot-os "$@"; }
# slot-os run by a service of the test host. Moving a process into another cgroup is only
# allowed inside the mover's cgroup namespace; th_run's processes come from outside the
# test host's (nsenter keeps their cgroup), as no process on a real host does.
sos_unit() { th_run "$H" systemd-run --quiet --wait --pipe --collect slot-os "$@"; }
SOS=sos
capbnd() { sed -n 's/^CapBnd:[[:space:]]*//p'; }

# the checks for slot N: cgroup and bounding set of `exec` against the slot's PID 1
check_limits() {
  local n=$1 mine pid1 cap1 capx
  capx=$($SOS exec "$n" -- cat /proc/self/status | capbnd)
  cap1=$($SOS exec "$n" -- cat /proc/1/status | capbnd)
  echo "slot $n: exec CapBnd $capx, PID 1 CapBnd $cap1"
  assert_eq "$cap1" "$capx" "exec's CapBnd is the slot PID 1's" || return 1
  (( ((0x$capx >> 16) & 1) == 0 )) || { t_fail "exec keeps CAP_SYS_MODULE: $capx"; return 1; }
  mine=$($SOS exec "$n" -- cat /proc/self/cgroup) || { t_fail "exec $n failed"; return 1; }
  pid1=$($SOS exec "$n" -- cat /proc/1/cgroup) || return 1
  echo "slot $n: exec cgroup: $mine; PID 1 cgroup: $pid1"
  # Paths are relative to the slot's cgroup namespace: one outside it starts with /..
  assert_not_contains "$mine" "/.." "exec's cgroup inside the slot's subtree" || return 1
  assert_contains "$mine" "0::/" "unified cgroup line" || return 1
}

test_helper_runs_with_cap_sys_module() {
  local cap
  cap=$(th_run "$H" cat /proc/self/status | capbnd)
  (( ((0x$cap >> 16) & 1) == 1 )) || { t_fail "test host lacks CAP_SYS_MODULE ($cap): the checks below could not fail"; return 1; }
}

test_booted_slot_exec_runs_in_its_cgroup_with_its_bounding_set() {
  assert_ok sos start 0 || return 1
  check_limits 0 || return 1
  local mine
  mine=$(sos exec 0 -- cat /proc/self/cgroup)
  # run by the slot's own systemd: a unit of its own below system.slice
  assert_contains "$mine" "0::/system.slice/" "exec runs as a unit of the slot's systemd" || return 1
}

test_booted_slot_exec_passes_stdio_and_exit_code() {
  local out err rc t0
  t0=$(date +%s%N)
  assert_ok sos exec 0 -- true || return 1
  echo "measured: exec 0 -- true took $(( ($(date +%s%N) - t0) / 1000000 )) ms (th_run included)"
  assert_eq hi "$(echo hi | sos exec 0 -- cat)" "stdin to stdout" || return 1
  out=$(sos exec 0 -- sh -c 'echo out; echo err >&2; exit 7' 2>/dev/null); rc=$?
  assert_eq 7 "$rc" "exit code" || return 1
  assert_eq out "$out" "stdout" || return 1
  err=$(sos exec 0 -- sh -c 'echo out; echo err >&2; exit 7' 2>&1 >/dev/null)
  assert_eq err "$err" "stderr" || return 1
  out=$(sos exec 0 -- sh -c 'kill -TERM $$'); rc=$?
  assert_eq 143 "$rc" "killed by a signal: 128 + signal" || return 1
  out=$(sos exec 0 -- /nonexistent 2>&1); rc=$?
  [ "$rc" -ne 0 ] || { t_fail "a command that cannot start reports success"; return 1; }
  out=$(sos exec 0 -- sh -c 'pwd; echo "$PATH"; id -u')
  assert_eq "/
/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
0" "$out" "cwd, PATH, uid" || return 1
}

test_update_prog_runs_in_the_slots_cgroup() {
  local out
  out=$(sos update-prog 0 : cat /proc/self/cgroup) || { t_fail "update-prog: $out"; return 1; }
  echo "$out"
  assert_contains "$out" "slot00: 0::/system.slice/" "prefixed, in the slot's cgroup" || return 1
  assert_contains "$out" "slot00           ok (exit 0)" "summary" || return 1
  out=$(sos update-prog 0 : 'echo a; exit 3')
  assert_contains "$out" "slot00: a" "prefixed output" || return 1
  assert_contains "$out" "FAILED (exit 3)" "exit code in the summary" || return 1
  out=$(sos update --dry-run 0)
  assert_contains "$out" "slot00: would run: apt-get update" "update --dry-run" || return 1
  assert_ok sos stop 0 || return 1
}

test_privileged_slot_exec_keeps_its_bounding_set() {
  assert_ok sos start 1 || return 1
  check_limits 1 || return 1
  assert_ok sos stop 1 || return 1
}

test_single_process_slot_exec_joins_its_cgroup_and_bounding_set() {
  SOS=sos_unit
  assert_ok sos start 2 || return 1
  th_wait_for 10 sos_unit exec 2 -- true || { t_fail "slot02 never answered"; return 1; }
  check_limits 2 || return 1
  assert_eq "$(sos_unit exec 2 -- cat /proc/1/cgroup)" "$(sos_unit exec 2 -- cat /proc/self/cgroup)" "same cgroup as the slot's only process" || return 1
  assert_eq 1 "$(sos_unit exec 2 -- cat /proc/self/status | sed -n 's/^NoNewPrivs:[[:space:]]*//p')" "no_new_privs" || return 1
  local rc
  echo hi | sos_unit exec 2 -- sh -c 'read x; [ "$x" = hi ] && exit 5'; rc=$?
  assert_eq 5 "$rc" "stdin and exit code" || return 1
  assert_ok sos stop 2 || return 1
}
