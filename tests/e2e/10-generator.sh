# Issue 2 acceptance: the generator inside a real systemd (test host booted in nspawn).
# Sourced by tests/run-e2e.sh, which provides th_* and the assertion helpers.

H=gen

scenario_setup() {
  th_boot "$H" unified || return 1
  th_copy_slot_image "$H" slot00 && th_copy_slot_image "$H" slot01 && th_copy_slot_image "$H" slot02 || return 1
  th_sh "$H" 'mkdir -p /etc/slot-os'
}

scenario_teardown() {
  th_destroy "$H"
}

put() { # put FILE CONTENT: write a file inside the test host
  printf '%s\n' "$2" | th_run "$H" sh -c "cat > '$1'"
}

test_slot_toml_reload_start_boots_with_limits() {
  put /etc/slot-os/slot00.toml 'cpu_quota = "50%"
cpus = "0"
memory = "256M"'
  assert_ok th_run "$H" systemctl daemon-reload || return 1
  assert_ok th_run "$H" test -f /run/systemd/nspawn/slot00.nspawn || return 1
  # NotifyReady=yes: start returns only once the slot's own systemd has finished booting.
  assert_ok th_run "$H" machinectl start slot00 || return 1
  local st
  st=$(th_run "$H" systemctl -M slot00 is-system-running 2>&1 || true)
  case "$st" in running|degraded) ;; *) t_fail "slot00 not booted when start returned: '$st'"; return 1 ;; esac
  assert_eq "500ms" "$(th_run "$H" systemctl show -P CPUQuotaPerSecUSec systemd-nspawn@slot00)" "CPUQuota 50% reported" || return 1
  assert_eq "0" "$(th_run "$H" systemctl show -P AllowedCPUs systemd-nspawn@slot00)" "AllowedCPUs" || return 1
  assert_eq "268435456" "$(th_run "$H" systemctl show -P MemoryMax systemd-nspawn@slot00)" "MemoryMax 256M" || return 1
  assert_eq "slot-os slot slot00 (number 0)" "$(th_run "$H" systemctl show -P Description systemd-nspawn@slot00)" "description from the drop-in" || return 1
}

test_systemd_analyze_verify_accepts_generated_units() {
  put /etc/slot-os/slot-os.toml '[[bridge]]
number = 1
address = "192.168.77.1/24"'
  put /etc/slot-os/slot01.toml 'autostart = true
[[nic]]
number = 1
bridge = 1
address = "192.168.77.2/24"
[[bind]]
source = "/srv"
target = "/DATA/srv"'
  assert_ok th_run "$H" systemctl daemon-reload || return 1
  local out
  out=$(th_run "$H" systemd-analyze verify --man=no systemd-nspawn@slot00.service systemd-nspawn@slot01.service machines.target 2>&1)
  local rc=$?
  assert_eq 0 "$rc" "systemd-analyze verify exit code (output: $out)" || return 1
  # networkd accepts the generated bridge files: the bridge comes up with its address.
  th_run "$H" networkctl reload >/dev/null 2>&1 || true
  th_wait_for 20 th_sh "$H" 'ip -4 addr show slotbr1 | grep -q 192.168.77.1/24' || { t_fail "slotbr1 did not get 192.168.77.1/24"; return 1; }
  # the .nspawn with [Files] and [Network] is accepted: the slot boots with its extra NIC.
  assert_ok th_run "$H" machinectl start slot01 || return 1
  assert_ok th_sh "$H" 'ip link show vs-1-1 | grep -q "master slotbr1"' || return 1
  if th_run "$H" journalctl -b -u systemd-nspawn@slot01 --no-pager | grep -Ei "unknown (key|section)|failed to parse"; then
    t_fail "nspawn complained about the generated .nspawn file"; return 1
  fi
}

test_autostart_slot_runs_after_boot() {
  # slot01 has autostart = true (previous test); reboot the test host and touch nothing.
  th_reboot "$H" || return 1
  th_wait_for 30 th_sh "$H" '[ "$(machinectl show slot01 -p State --value 2>/dev/null)" = running ]' \
    || { t_fail "slot01 not running after the test host booted"; th_run "$H" systemctl status systemd-nspawn@slot01 --no-pager | tail -20; return 1; }
  assert_ok th_run "$H" test -L /run/systemd/generator/machines.target.wants/systemd-nspawn@slot01.service || return 1
  local st
  st=$(th_run "$H" systemctl show -P ActiveState systemd-nspawn@slot00)
  assert_eq inactive "$st" "slot00 (no autostart) stays stopped" || return 1
}

test_broken_toml_is_skipped_and_named_in_journal() {
  put /etc/slot-os/slot02.toml 'memory = "256M"
cpus = "0-1'
  put /etc/slot-os/slot03.toml 'memory = "abc"'
  assert_ok th_run "$H" systemctl daemon-reload || return 1
  # the two good slots still have their units and boot
  assert_ok th_run "$H" test -f /run/systemd/nspawn/slot00.nspawn || return 1
  assert_ok th_run "$H" test -f /run/systemd/nspawn/slot01.nspawn || return 1
  assert_ok th_run "$H" test ! -e /run/systemd/nspawn/slot02.nspawn || return 1
  assert_ok th_run "$H" machinectl start slot00 || return 1
  assert_eq running "$(th_run "$H" machinectl show slot00 -p State --value)" "slot00 boots next to a broken file" || return 1
  assert_eq running "$(th_run "$H" machinectl show slot01 -p State --value)" "slot01 still running" || return 1
  local j
  j=$(th_run "$H" journalctl -b --no-pager -o cat -t slot-os-generator 2>/dev/null)
  assert_contains "$j" "/etc/slot-os/slot02.toml: line 2: not valid TOML" "journal names the bad file and line" || return 1
  assert_contains "$j" "/etc/slot-os/slot03.toml: memory: \"abc\" is not a memory size" "journal names the bad file and key" || return 1
  # and `slot-os check` lists both, exit 2, changing nothing
  local before after rc
  before=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml')
  th_run "$H" slot-os check >/dev/null 2>&1; rc=$?
  after=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml')
  assert_eq 2 "$rc" "slot-os check exit code with bad files" || return 1
  assert_eq "$before" "$after" "check changed nothing" || return 1
  th_run "$H" rm -f /etc/slot-os/slot02.toml /etc/slot-os/slot03.toml
}

test_removed_slot_toml_removes_generated_files() {
  assert_ok th_run "$H" machinectl poweroff slot01 || return 1
  th_wait_for 30 th_sh "$H" '[ "$(systemctl show -P ActiveState systemd-nspawn@slot01)" = inactive ]' || { t_fail "slot01 did not stop"; return 1; }
  th_run "$H" rm /etc/slot-os/slot01.toml
  assert_ok th_run "$H" systemctl daemon-reload || return 1
  assert_ok th_run "$H" test ! -e /run/systemd/nspawn/slot01.nspawn || return 1
  assert_ok th_run "$H" test ! -e /run/systemd/generator/systemd-nspawn@slot01.service.d || return 1
  assert_ok th_run "$H" test ! -e /run/systemd/generator/machines.target.wants/systemd-nspawn@slot01.service || return 1
  assert_ok th_run "$H" test ! -e /run/systemd/network/60-slot-os-vs-1-1.network || return 1
  # slot00's files are untouched
  assert_ok th_run "$H" test -f /run/systemd/nspawn/slot00.nspawn || return 1
}

test_check_and_render_on_good_config() {
  local out
  out=$(th_run "$H" slot-os check 2>&1) || { t_fail "check failed: $out"; return 1; }
  assert_contains "$out" "no problems" "check on a good config" || return 1
  out=$(th_run "$H" slot-os render slot00 2>&1) || { t_fail "render failed: $out"; return 1; }
  assert_contains "$out" "CPUQuota=50%" "render shows the drop-in" || return 1
  assert_eq "$(th_run "$H" cat /run/systemd/nspawn/slot00.nspawn)" "$(printf '%s\n' "$out" | sed -n '/slot00.nspawn <==/,/^==>/p' | sed '1d;/^==>/d' | sed '$d')" "render prints exactly what the generator wrote" || return 1
}
