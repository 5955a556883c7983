# A host with the hybrid cgroup hierarchy cannot freeze: suspend must say so clearly
# (exit 1), and everything else still works.

H=hyb

scenario_setup() {
  th_boot "$H" hybrid || return 1
  th_copy_slot_image "$H" slot00 || return 1
  th_sh "$H" 'mkdir -p /etc/slot-os && echo "memory = \"256M\"" > /etc/slot-os/slot00.toml && systemctl daemon-reload'
}

scenario_teardown() {
  th_destroy "$H"
}

test_start_and_list_in_hybrid_mode() {
  assert_ok th_run "$H" slot-os start 0 || return 1
  assert_contains "$(th_run "$H" slot-os list)" "RUNNING" "list shows RUNNING" || return 1
}

test_suspend_is_refused_with_a_clear_message() {
  local out rc
  out=$(th_run "$H" slot-os suspend 0 2>&1); rc=$?
  assert_eq 1 "$rc" "suspend exit code on a host that cannot freeze" || return 1
  assert_contains "$out" "cannot suspend slots: freezing needs the unified cgroup v2 hierarchy" "clear message" || return 1
  assert_eq active "$(th_run "$H" systemctl show -P ActiveState systemd-nspawn@slot00)" "slot still running" || return 1
  assert_contains "$(th_run "$H" slot-os list --json)" '"state":"RUNNING"' "still RUNNING, not SUSPENDED" || return 1
}

test_resume_of_a_running_slot_is_a_no_op_in_hybrid_mode() {
  local out rc
  out=$(th_run "$H" slot-os resume 0 2>&1); rc=$?
  assert_eq 0 "$rc" "resume of a slot that is not suspended ($out)" || return 1
  assert_contains "$out" "slot00: not suspended" || return 1
}

test_stop_in_hybrid_mode() {
  assert_ok th_run "$H" slot-os stop all || return 1
  assert_eq inactive "$(th_run "$H" systemctl show -P ActiveState systemd-nspawn@slot00)" "stopped" || return 1
}
