# Issue 4: Open vSwitch bridges (backend = "ovs"), managed by the helper through OVSDB, with
# ovsdb-server and ovs-vswitchd running in the test host. The kernel here has no openvswitch
# module, so the bridge uses the userspace datapath (datapath_type=netdev); docs/ovs.md.

H=ovs
# This scenario's test host (and its slot images) come from a rootfs with Open vSwitch; it
# gets a cache of its own (the package list is part of the cache key).
for p in openvswitch-switch ethtool; do
  [[ " ${TH_ROOTFS_PACKAGES[*]} " == *" $p "* ]] || TH_ROOTFS_PACKAGES+=("$p")
done

scenario_setup() {
  th_boot "$H" unified || return 1
  local s
  for s in slot00 slot01; do
    th_copy_slot_image "$H" "$s" || return 1
    # The slots are copies of the test host: no Open vSwitch of their own.
    systemctl --root="$(th_root "$H")/var/lib/machines/$s" mask openvswitch-switch.service \
      ovsdb-server.service ovs-vswitchd.service >/dev/null 2>&1 || return 1
  done
  th_sh "$H" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && : > /etc/slot-os/slot01.toml && systemctl daemon-reload' || return 1
  th_wait_for 30 th_run "$H" ovs-vsctl --timeout=5 show || return 1
}

scenario_teardown() {
  th_destroy "$H"
}

sos() { th_run "$H" slot-os "$@"; }
leader_of() { echo "\$(machinectl show $1 -p Leader --value)"; }
in_slot() { local s=$1; shift; th_sh "$H" "nsenter -t $(leader_of "$s") -n $*"; }
slot_ping() { in_slot "$1" ping -c1 -W2 "$2"; }
ports() { th_run "$H" ovs-vsctl list-ports slotbr2 | tr '\n' ' '; }
# Under load nothing here is instant (the userspace datapath polls, networkd and ARP take
# their time): each test waits for the state it needs, then checks the behaviour.
# ovs-vswitchd has the port: an OpenFlow port number and its link up.
port_ready() {
  th_sh "$H" 'o=$(ovs-vsctl get interface "$1" ofport) && [ "$o" -gt 0 ] && [ "$(ovs-vsctl get interface "$1" link_state)" = up ]' "$1"
}
wait_port() { th_wait_for 30 port_ready "$1" || { t_fail "OVS port $1 not ready: $(th_run "$H" ovs-vsctl list interface "$1" 2>&1 | grep -E '^(ofport|link_state|error) ')"; return 1; }; }
# the host's bridge port has ADDR (networkd configures it)
wait_bridge_addr() {
  th_wait_for 30 th_sh "$H" 'ip -o addr show slotbr2 | grep -q " $1 "' "$1" ||
    { t_fail "slotbr2 has no $1: $(th_sh "$H" 'ip addr show slotbr2; networkctl status slotbr2 2>&1 | head -20')"; return 1; }
}
# the slot's NIC has ADDR and is up
wait_slot_addr() {
  th_wait_for 30 in_slot "$1" "sh -c 'ip -o addr show $2 | grep -q \" $3 \" && ip -o link show $2 | grep -q LOWER_UP'" ||
    { t_fail "$1: $2 has no $3 or is down: $(in_slot "$1" ip addr show "$2" 2>&1)"; return 1; }
}
# a ping that must get through, given a few seconds (first packets wait for ARP/ND)
ping_ok() { th_wait_for 20 slot_ping "$1" "$2" || { t_fail "$1 cannot ping $2"; return 1; }; }
# ms that `slot-os ARGS` takes, measured inside the test host
timed_sos() { th_sh "$H" 's=$(date +%s%N); slot-os "$@" >/dev/null || exit 1; e=$(date +%s%N); echo $(((e - s) / 1000000))' "$@"; }
# TCP: a python3 echo server in slot $1's netns on $2:$4, a client in $3's netns sends
# 256 KiB (many full-size segments) and must get all of it back. (A double-quoted script:
# \$ is for the shell in the test host.)
tcp_exchange() {
  local srv=$1 addr=$2 cli=$3 port=$4
  th_sh "$H" "nsenter -t $(leader_of "$srv") -n timeout 60 python3 -c '
import socket
s = socket.socket(socket.AF_INET6 if \":\" in \"$addr\" else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((\"$addr\", $port)); s.listen(1)
c, _ = s.accept()
while True:
    b = c.recv(65536)
    if not b: break
    c.sendall(b)
c.close()
' >/dev/null 2>&1 &
    # the client starts once the server listens (under load python takes its time)
    i=0; until nsenter -t $(leader_of "$srv") -n ss -Hltn \"sport = :$port\" | grep -q .; do i=\$((i + 1)); [ \$i -lt 200 ] || exit 1; sleep 0.1; done
    $([[ $cli == host ]] && echo "" || echo "nsenter -t $(leader_of "$cli") -n") timeout 15 python3 -c '
import socket, sys
data = bytes(range(256)) * 1024
c = socket.create_connection((\"$addr\", $port), timeout=10)
c.sendall(data); c.shutdown(socket.SHUT_WR)
got = b\"\"
while True:
    b = c.recv(65536)
    if not b: break
    got += b
sys.exit(0 if got == data else 1)
'"
}

test_br_add_ovs_creates_the_bridge_in_ovsdb() {
  local ms
  ms=$(timed_sos br-add 2 10.88.0.1/24 --backend ovs) || { t_fail "br-add --backend ovs failed: $(sos br-info 2>&1)"; return 1; }
  th_note "br-add --backend ovs: ${ms} ms"
  assert_ok th_run "$H" ovs-vsctl br-exists slotbr2 || return 1
  assert_eq netdev "$(th_run "$H" ovs-vsctl get bridge slotbr2 datapath_type | tr -d '"')" "userspace datapath" || return 1
  assert_eq 2 "$(th_run "$H" ovs-vsctl get bridge slotbr2 external_ids:slot-os-bridge | tr -d '"')" "marked as slot-os's" || return 1
  wait_bridge_addr 10.88.0.1/24 || return 1
  assert_ok th_sh "$H" 'grep -qx "backend = \"ovs\"" /etc/slot-os/slot-os.toml' || return 1
  assert_ok th_sh "$H" '! ls /run/systemd/network/50-slot-os-slotbr2.netdev 2>/dev/null' || return 1
  assert_contains "$(sos br-info)" "slotbr2	ovs	up	10.88.0.1/24" "br-info shows the backend" || return 1
  assert_contains "$(sos br-info --json)" '"backend":"ovs"' "br-info --json" || return 1
  assert_ok th_run "$H" systemd-analyze verify --man=no /usr/lib/systemd/system/slot-os-ovs.service || return 1
  assert_contains "$(th_run "$H" systemctl show -P WantedBy slot-os-ovs.service)" "multi-user.target" "the generator pulls in slot-os-ovs.service" || return 1
}

test_net_add_ports_in_ovsdb_and_ping() {
  assert_ok sos start all || return 1
  assert_ok sos net-add 0 10.88.0.2/24 1 || return 1
  assert_ok sos net-add 1 10.88.0.3/24 1 || return 1
  # net-add returns once OVSDB has the port and ovs-vswitchd has given it a number
  assert_ok th_sh "$H" '[ "$(ovs-vsctl get interface vs-0-1 ofport)" -gt 0 ] && [ "$(ovs-vsctl get interface vs-1-1 ofport)" -gt 0 ]' || return 1
  wait_port vs-0-1 && wait_port vs-1-1 || return 1
  wait_slot_addr slot00 eth1 10.88.0.2/24 && wait_slot_addr slot01 eth1 10.88.0.3/24 || return 1
  wait_bridge_addr 10.88.0.1/24 || return 1
  local p show
  p=$(ports)
  assert_contains "$p" "vs-0-1" "port of slot00 in OVSDB" || return 1
  assert_contains "$p" "vs-1-1" "port of slot01 in OVSDB" || return 1
  show=$(th_run "$H" ovs-vsctl show)
  printf '%s\n' "$show"
  assert_contains "$show" 'Port vs-0-1' "ovs-vsctl show" || return 1
  assert_not_contains "$show" 'error:' "no interface errors" || return 1
  assert_eq slot01 "$(th_run "$H" ovs-vsctl get port vs-1-1 external_ids:slot-os-owner | tr -d '"')" "port owner" || return 1
  ping_ok slot00 10.88.0.3 && ping_ok slot01 10.88.0.2 && ping_ok slot00 10.88.0.1 || return 1
  th_wait_for 20 th_sh "$H" 'ping -c1 -W2 10.88.0.3' || { t_fail "the host cannot ping slot01"; return 1; }
  assert_contains "$(in_slot slot00 ethtool -k eth1)" "tx-checksumming: off" "TX checksum offload off in the slot" || return 1
  assert_contains "$(sos br-info --json)" '"ovs_ports":["vs-0-1","vs-1-1"]' "br-info lists the ports" || return 1
}

test_tcp_between_slots_and_host() {
  assert_ok tcp_exchange slot01 10.88.0.3 slot00 5001 || return 1
  assert_ok tcp_exchange slot00 10.88.0.2 host 5002 || return 1
  # Why the helper turns TX checksum offload off: with it on, the userspace datapath
  # forwards TCP with checksums nobody filled in. (Shown, not required: a kernel that
  # completes them some day would be fine too.)
  in_slot slot00 ethtool -K eth1 tx on >/dev/null 2>&1
  if tcp_exchange slot01 10.88.0.3 slot00 5003 >/dev/null 2>&1; then
    th_note "TCP with tx on also worked here"
  else
    th_note "TCP with tx checksum offload on fails (as expected with the userspace datapath)"
  fi
  sos net-apply slot00 >/dev/null 2>&1
  assert_contains "$(in_slot slot00 ethtool -k eth1)" "tx-checksumming: off" "net-apply turns it off again" || return 1
  assert_ok tcp_exchange slot01 10.88.0.3 slot00 5004 || return 1
}

test_ipv6_on_the_ovs_bridge() {
  # whatever happens, the NICs of this test do not stay for the next ones
  trap 'sos net-del 0 2 >/dev/null 2>&1; sos net-del 1 2 >/dev/null 2>&1' EXIT
  assert_ok sos br-add 2 fd88::1/64 || return 1
  assert_ok sos net-add 0 fd88::2/64 2 || return 1
  assert_ok sos net-add 1 fd88::3/64 2 || return 1
  wait_port vs-0-2 && wait_port vs-1-2 || return 1
  wait_slot_addr slot00 eth2 fd88::2/64 && wait_slot_addr slot01 eth2 fd88::3/64 || return 1
  wait_bridge_addr fd88::1/64 || return 1
  ping_ok slot00 fd88::3 && ping_ok slot00 fd88::1 || return 1
  assert_ok tcp_exchange slot01 fd88::3 slot00 5005 || return 1
  assert_ok sos net-del 0 2 || return 1
  assert_ok sos net-del 1 2 || return 1
  assert_not_contains "$(ports)" "vs-0-2" "net-del removed the port" || return 1
}

test_ports_follow_slot_stop_and_start() {
  assert_ok sos stop 0 || return 1
  # ExecStopPost net-release: the port went with the veth
  assert_not_contains "$(ports)" "vs-0-1" "port removed on stop" || return 1
  assert_contains "$(ports)" "vs-1-1" "the other slot's port stays" || return 1
  assert_ok sos start 0 || return 1
  assert_contains "$(ports)" "vs-0-1" "port back after start" || return 1
  wait_port vs-0-1 && wait_slot_addr slot00 eth1 10.88.0.2/24 || return 1
  ping_ok slot00 10.88.0.3 || return 1
  assert_contains "$(in_slot slot00 ethtool -k eth1)" "tx-checksumming: off" "TX checksum off after restart" || return 1
  assert_ok tcp_exchange slot01 10.88.0.3 slot00 5006 || return 1
}

test_stale_ports_are_pruned() {
  # Its leftovers, pass or fail, must not reach the next tests (they count ports).
  local cleanup='ovs-vsctl --if-exists del-port slotbr2 adm0; ovs-vsctl --if-exists del-port slotbr2 vs-0-9; ip link del adm0 2>/dev/null; ip link del vs-0-9 2>/dev/null; true'
  # shellcheck disable=SC2064 # expanded now, on purpose
  trap "th_sh '$H' '$cleanup'" EXIT
  th_sh "$H" "$cleanup"
  # A port slot-os made whose veth vanished (as after a crash), and an admin's own port.
  th_sh "$H" 'ip link add vs-0-9 type veth peer name vs-0-9p && ovs-vsctl add-port slotbr2 vs-0-9 -- set port vs-0-9 external_ids:slot-os-owner=slot00 && ip link add adm0 type veth peer name adm0p && ovs-vsctl add-port slotbr2 adm0 && ip link del vs-0-9' || { t_fail "setup"; return 1; }
  assert_contains "$(ports)" "vs-0-9" "stale port present" || return 1
  assert_ok sos net-apply slot00 || return 1
  assert_not_contains "$(ports)" "vs-0-9" "stale port pruned" || return 1
  assert_contains "$(ports)" "adm0" "an admin's port is left alone" || return 1
}

test_net_add_time_ovs_vs_networkd() {
  trap 'sos net-del 0 5 >/dev/null 2>&1; sos br-del 3 >/dev/null 2>&1' EXIT
  assert_ok sos br-add 3 10.89.0.1/24 || return 1
  local i ovs=() nd=() ms
  for i in 1 2 3; do
    ms=$(timed_sos net-add 0 "10.88.0.2$i/24" 5 --bridge 2) || { t_fail "net-add on ovs"; return 1; }
    ovs+=("$ms")
    assert_ok sos net-del 0 5 || return 1
    ms=$(timed_sos net-add 0 "10.89.0.2$i/24" 5 --bridge 3) || { t_fail "net-add on networkd"; return 1; }
    nd+=("$ms")
    assert_ok sos net-del 0 5 || return 1
  done
  th_note "net-add on a running slot, ms (3 runs): ovs ${ovs[*]} / networkd ${nd[*]}"
  assert_ok sos br-del 3 || return 1
}

test_bad_input_changes_nothing() {
  local before after
  before=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml; ovs-vsctl show | grep -v ovs_version')
  assert_exit 2 sos br-add 2 10.88.5.1/24 --backend networkd || return 1
  assert_contains "$(sos br-add 2 10.88.5.1/24 --backend networkd 2>&1)" "bridge 2 has backend \"ovs\"; br-del it first" "clear message" || return 1
  assert_exit 2 sos br-add 4 10.90.0.1/24 --backend linux || return 1
  assert_exit 2 sos br-del 2 || return 1   # in use by slots
  assert_exit 2 sos net-add 0 10.88.0.3/24 2 || return 1   # slot01's address
  after=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml; ovs-vsctl show | grep -v ovs_version')
  assert_eq "$before" "$after" "config and OVSDB unchanged" || return 1
  # Open vSwitch not running: refused before anything is written
  before=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml')
  # the next tests need Open vSwitch back, also if this one fails
  trap 'th_run "$H" systemctl start openvswitch-switch.service >/dev/null 2>&1' EXIT
  assert_ok th_run "$H" systemctl stop ovsdb-server.service || return 1
  local out rc
  out=$(sos br-add 5 10.95.0.1/24 --backend ovs 2>&1); rc=$?
  assert_eq 1 "$rc" "exit code without ovsdb-server" || return 1
  assert_contains "$out" "cannot connect to ovsdb-server" "says why" || return 1
  assert_contains "$out" "nothing was changed" "says nothing changed" || return 1
  assert_eq "$before" "$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml')" "config unchanged" || return 1
  # OVS restarts with what OVSDB holds; the slots' ports forward again by themselves.
  assert_ok th_run "$H" systemctl start openvswitch-switch.service || return 1
  wait_port vs-0-1 && wait_port vs-1-1 || return 1
  th_wait_for 30 slot_ping slot00 10.88.0.3 || { t_fail "no traffic after OVS restarted: $(th_run "$H" ovs-vsctl show)"; return 1; }
}

test_bridge_and_ports_survive_host_reboot() {
  assert_ok sos autostart on all || return 1
  th_reboot "$H" || return 1
  th_wait_for 40 th_sh "$H" '[ "$(machinectl show slot00 -p State --value 2>/dev/null)" = running ] && [ "$(machinectl show slot01 -p State --value 2>/dev/null)" = running ]' || { t_fail "slots not back after reboot"; return 1; }
  assert_eq active "$(th_unit_state "$H" slot-os-ovs.service)" "slot-os-ovs.service ran" || return 1
  th_wait_for 15 slot_ping slot00 10.88.0.3 || { t_fail "no ping after reboot: $(th_run "$H" ovs-vsctl show)"; return 1; }
  # networkd addresses slotbr2 whenever ovs-vswitchd has made it at boot: asynchronous
  th_wait_for 15 slot_ping slot01 10.88.0.1 || { t_fail "slot01 cannot ping the bridge after reboot: $(th_sh "$H" 'ip addr show slotbr2; networkctl status slotbr2 2>&1 | head -20')"; return 1; }
  assert_ok tcp_exchange slot01 10.88.0.3 slot00 5007 || return 1
  local p
  p=$(ports)
  assert_eq "vs-0-1 vs-1-1 " "$p" "exactly the configured ports, none left from the last boot" || return 1
}

test_ovs_bridge_recreated_at_boot_when_missing() {
  # OVSDB lost the bridge (a reinstall, a wiped conf.db): the boot puts it back.
  assert_ok sos stop all || return 1
  assert_ok th_run "$H" ovs-vsctl del-br slotbr2 || return 1
  th_reboot "$H" || return 1
  th_wait_for 40 th_sh "$H" '[ "$(machinectl show slot00 -p State --value 2>/dev/null)" = running ]' || { t_fail "slot00 not back"; return 1; }
  assert_ok th_run "$H" ovs-vsctl br-exists slotbr2 || return 1
  th_wait_for 15 slot_ping slot00 10.88.0.3 || { t_fail "no ping after the bridge was recreated"; return 1; }
}

test_net_del_and_br_del_clean_ovsdb() {
  assert_ok sos net-del 1 1 || return 1
  assert_not_contains "$(ports)" "vs-1-1" "port gone" || return 1
  assert_ok th_sh "$H" '! ip link show vs-1-1 2>/dev/null' || return 1
  if slot_ping slot00 10.88.0.3 >/dev/null 2>&1; then t_fail "slot01 still reachable after net-del"; return 1; fi
  assert_ok sos net-del 0 1 || return 1
  assert_ok sos br-del 2 || return 1
  assert_exit 2 th_run "$H" ovs-vsctl br-exists slotbr2 || return 1
  assert_ok th_sh "$H" '! ip link show slotbr2 2>/dev/null' || return 1
  # [storage] has a backend key of its own since overlay slots: look for the bridge's
  assert_ok th_sh "$H" '! grep -qx "backend = \"ovs\"" /etc/slot-os/slot-os.toml' || return 1
}
