# Issue 4: two test hosts joined by a veth pair (the underlay), one VXLAN bridge each:
# a slot on host A reaches a slot on host B over one L2 network.

A=vxa
B=vxb

scenario_setup() {
  th_boot "$A" unified || return 1
  th_boot "$B" unified || return 1
  local h
  for h in "$A" "$B"; do
    th_copy_slot_image "$h" slot00 || return 1
    th_sh "$h" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && systemctl daemon-reload' || return 1
  done
  # The underlay: made here, one end moved into each host's network namespace.
  ip link add "ul-$$-a" type veth peer name "ul-$$-b" || return 1
  ip link set "ul-$$-a" netns "$(th_leader "$A")" && ip link set "ul-$$-b" netns "$(th_leader "$B")" || return 1
  th_sh "$A" "ip link set ul-$$-a name under0 && ip addr add 10.200.0.1/24 dev under0 && ip link set under0 up" || return 1
  th_sh "$B" "ip link set ul-$$-b name under0 && ip addr add 10.200.0.2/24 dev under0 && ip link set under0 up" || return 1
}

scenario_teardown() {
  th_destroy "$A"
  th_destroy "$B"
}

slot_ping() { th_sh "$1" "nsenter -t \$(machinectl show slot00 -p Leader --value) -n ping -c1 -W2 $2"; }

test_vxlan_bridges_join_slots_on_two_hosts() {
  assert_ok th_sh "$A" 'ping -c1 -W2 10.200.0.2' || { t_fail "underlay does not work"; return 1; }
  local out
  out=$(th_run "$A" slot-os br-add 3 10.77.0.1/24 --vxlan 5 --remote 10.200.0.2 2>&1) || { t_fail "br-add on A: $out"; return 1; }
  assert_contains "$out" "VXLAN 5 (slotvx3)" "br-add reports the VXLAN" || return 1
  assert_ok th_run "$B" slot-os br-add 3 10.77.0.2/24 --vxlan 5 --remote 10.200.0.1 || return 1
  assert_ok th_sh "$A" 'ip -d link show slotvx3 | grep -q "vxlan id 5 remote 10.200.0.2" && ip link show slotvx3 | grep -q "master slotbr3"' || return 1
  assert_contains "$(th_run "$A" slot-os br-info)" "vxlan 5 remote 10.200.0.2" "br-info shows it" || return 1
  assert_contains "$(th_run "$A" cat /etc/slot-os/slot-os.toml)" "vxlan_id = 5" "persisted" || return 1
  # host to host over the tunnel first, then slot to slot
  th_wait_for 15 th_sh "$A" 'ping -c1 -W2 10.77.0.2' || { t_fail "host A cannot reach host B's bridge over VXLAN"; return 1; }
  assert_ok th_run "$A" slot-os start 0 || return 1
  assert_ok th_run "$B" slot-os start 0 || return 1
  assert_ok th_run "$A" slot-os net-add 0 10.77.0.10/24 1 || return 1
  assert_ok th_run "$B" slot-os net-add 0 10.77.0.20/24 1 || return 1
  th_wait_for 15 slot_ping "$A" 10.77.0.20 || { t_fail "slot on A cannot ping slot on B"; return 1; }
  assert_ok slot_ping "$B" 10.77.0.10 || return 1
}

test_vxlan_survives_host_reboot() {
  assert_ok th_run "$A" slot-os autostart on 0 || return 1
  th_reboot "$A" || return 1
  # the underlay end lives in A's namespace, which the reboot replaced: plug it again
  ip link add "ul-$$-c" type veth peer name "ul-$$-d" || return 1
  th_sh "$B" 'ip link del under0' || true
  ip link set "ul-$$-c" netns "$(th_leader "$A")" && ip link set "ul-$$-d" netns "$(th_leader "$B")" || return 1
  th_sh "$A" "ip link set ul-$$-c name under0 && ip addr add 10.200.0.1/24 dev under0 && ip link set under0 up" || return 1
  th_sh "$B" "ip link set ul-$$-d name under0 && ip addr add 10.200.0.2/24 dev under0 && ip link set under0 up" || return 1
  th_wait_for 30 th_sh "$A" '[ "$(machinectl show slot00 -p State --value 2>/dev/null)" = running ]' || { t_fail "slot00 not back on A"; return 1; }
  th_wait_for 20 slot_ping "$A" 10.77.0.20 || { t_fail "no slot-to-slot ping across hosts after A rebooted"; return 1; }
}

test_vxlan_bad_input_and_br_del() {
  local before
  before=$(th_sh "$A" 'sha256sum /etc/slot-os/slot-os.toml; ip -o link | cut -d" " -f2 | sort')
  assert_exit 2 th_run "$A" slot-os br-add 4 --vxlan 0 --remote 10.200.0.2 || return 1
  assert_exit 2 th_run "$A" slot-os br-add 4 --vxlan 6 || return 1
  assert_exit 2 th_run "$A" slot-os br-add 4 --vxlan 6 --group 10.1.1.1 || return 1
  assert_exit 2 th_run "$A" slot-os br-add 4 --vxlan 6 --remote 10.200.0.2 --group 239.1.1.1 || return 1
  assert_exit 2 th_run "$A" slot-os br-add 4 --remote 10.200.0.2 || return 1
  assert_eq "$before" "$(th_sh "$A" 'sha256sum /etc/slot-os/slot-os.toml; ip -o link | cut -d" " -f2 | sort')" "nothing changed" || return 1
  assert_ok th_run "$A" slot-os net-del 0 1 || return 1
  assert_ok th_run "$A" slot-os br-del 3 || return 1
  assert_ok th_sh "$A" '! ip link show slotvx3 2>/dev/null && ! ip link show slotbr3 2>/dev/null' || return 1
}
