# Issue 14: `slot-os move N HOST` moves a running slot to another host: copied while it
# runs, frozen for what changed meanwhile, killed here at that frozen instant, booted
# there, removed here only then. Interrupted anywhere (kill -9 of either side, a cut
# connection), exactly one whole, runnable slot is left.
#
# Two test hosts on a veth underlay (as 41-vxlan), A Debian 12 and B Debian 13, with ssh
# between them (keys made here). The kill tests reach the target through
# tests/e2e/move-relay.py (over the same ssh), which holds the connection at a chosen
# frame so a process is killed at a known point of the move; nothing sleeps.

A=mva
B=mvb
A_IP=10.200.0.1
B_IP=10.200.0.2
RELAY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/move-relay.py

# The slot's ticker: one line "MICROSECONDS BOOT-ID" every 10 ms into /var/ticks, the
# first one before the slot's boot is over (ExecStartPre), with an ID of its own per boot.
ticker_unit='[Unit]
Description=a timestamp every 10 ms
[Service]
ExecStartPre=/usr/local/bin/ticker first
ExecStart=/usr/local/bin/ticker
[Install]
WantedBy=multi-user.target
'
ticker_script='#!/bin/bash
[ "$1" = first ] && cat /proc/sys/kernel/random/uuid > /run/ticker-id
id=$(cat /run/ticker-id)
echo "${EPOCHREALTIME/./} $id" >> /var/ticks
[ "$1" = first ] && exit 0
while :; do sleep 0.01; echo "${EPOCHREALTIME/./} $id" >> /var/ticks; done
'
# mv.sh ARGS: `slot-os move ARGS` through the relay, its PID in /run/mv.pid, and the
# receiver's on the target in /run/recv.pid.
mv_script='#!/bin/sh
echo $$ > /run/mv.pid
exec slot-os move "$@" --via "python3 /root/relay.py ssh -o BatchMode=yes root@'$B_IP' \"echo \\\$\\\$ > /run/recv.pid; exec\""
'

plug_underlay() {
  ip link add "ul-$$-a" type veth peer name "ul-$$-b" || return 1
  ip link set "ul-$$-a" netns "$(th_leader "$A")" && ip link set "ul-$$-b" netns "$(th_leader "$B")" || return 1
  th_sh "$A" "ip link set ul-$$-a name under0 && ip addr add $A_IP/24 dev under0 && ip link set under0 up" || return 1
  th_sh "$B" "ip link set ul-$$-b name under0 && ip addr add $B_IP/24 dev under0 && ip link set under0 up" || return 1
}

# ssh_trust FROM TO TO_IP: root on FROM logs in to TO as root with a key made here.
ssh_trust() {
  local pub hostkey
  th_sh "$1" 'mkdir -p -m 700 /root/.ssh && { [ -e /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N "" -f /root/.ssh/id_ed25519; }' || return 1
  pub=$(th_run "$1" cat /root/.ssh/id_ed25519.pub) || return 1
  hostkey=$(th_run "$2" cat /etc/ssh/ssh_host_ed25519_key.pub) || return 1
  th_sh "$2" 'mkdir -p -m 700 /root/.ssh && printf "%s\n" "$1" >> /root/.ssh/authorized_keys' "$pub" || return 1
  th_sh "$1" 'printf "%s %s\n" "$1" "$2" >> /root/.ssh/known_hosts' "$3" "${hostkey% *}" || return 1
  th_run "$1" ssh -o BatchMode=yes "root@$3" true || { t_fail "ssh from $1 to $2 does not work"; return 1; }
}

scenario_setup() {
  th_boot "$A" unified bookworm || return 1
  th_boot "$B" unified trixie || return 1
  plug_underlay || return 1
  ssh_trust "$A" "$B" "$B_IP" || return 1
  ssh_trust "$B" "$A" "$A_IP" || return 1
  th_copy_slot_image "$A" slot00 || return 1
  local img
  img=$(th_root "$A")/var/lib/machines/slot00
  printf '%s' "$ticker_unit" >"$img/etc/systemd/system/ticker.service" || return 1
  ln -s ../ticker.service "$img/etc/systemd/system/multi-user.target.wants/ticker.service" || return 1
  printf '%s' "$ticker_script" >"$img/usr/local/bin/ticker" && chmod 755 "$img/usr/local/bin/ticker" || return 1
  cp "$RELAY_SRC" "$(th_root "$A")/root/relay.py" || return 1
  printf '%s' "$mv_script" >"$(th_root "$A")/root/mv.sh" && chmod 755 "$(th_root "$A")/root/mv.sh" || return 1
  th_sh "$A" 'mkdir -p /etc/slot-os && printf "memory = \"512M\"\n[environment]\nROLE = \"moved\"\n" > /etc/slot-os/slot00.toml && systemctl daemon-reload' || return 1
  th_run "$A" slot-os autostart on 0 >/dev/null || return 1
  th_run "$A" slot-os start 0 >/dev/null || return 1
}

# --- helpers -------------------------------------------------------------------------------

ticks() { cat "$(th_root "$1")/var/lib/machines/slot00/var/ticks" 2>/dev/null; }

# ticking HOST: the slot runs there and its ticker writes (more lines than a moment ago).
ticking() {
  local n
  n=$(ticks "$1" | wc -l)
  th_wait_for 30 sh -c "[ \$(wc -l < '$(th_root "$1")/var/lib/machines/slot00/var/ticks') -gt $n ]" \
    || { t_fail "slot00 on $1 does not tick"; return 1; }
  assert_eq active "$(th_unit_state "$1" systemd-nspawn@slot00.service)" "slot00 active on $1" || return 1
  assert_eq running "$(th_run "$1" systemctl show -P FreezerState systemd-nspawn@slot00)" "slot00 thawed on $1" || return 1
}

# gone_from HOST: no part of slot00 there (config, image, staging, marker, receiver).
gone_from() {
  local h=$1
  if [[ $h == "$B" ]]; then
    th_wait_for 60 th_sh "$B" '! kill -0 "$(cat /run/recv.pid 2>/dev/null)" 2>/dev/null' \
      || { t_fail "the receiver on $B does not end"; return 1; }
  fi
  assert_eq "" "$(th_sh "$h" 'ls -d /etc/slot-os/slot00.toml /var/lib/machines/slot00 /var/lib/machines/.slot-os-move-slot00 /var/lib/slot-os/moves/*slot00* 2>/dev/null')" \
    "nothing of slot00 left on $h" || return 1
}

# whole_on HOST: slot00 is there, whole: config, image, running and ticking, no markers.
whole_on() {
  assert_ok th_run "$1" test -s /etc/slot-os/slot00.toml || return 1
  assert_ok th_run "$1" test -d /var/lib/machines/slot00/etc || return 1
  assert_eq "" "$(th_sh "$1" 'ls /var/lib/slot-os/moves/ 2>/dev/null; ls /run/slot-os/frozen 2>/dev/null')" "no move or freeze markers on $1" || return 1
  ticking "$1" || return 1
}

# start_move HOLD [ARGS]: `slot-os move ${MV_SLOT:-0} B ARGS` on A through the relay, in the background
# (MV_BG, output in MV_OUT); HOLD as move-relay.py reads it, "" for none.
MV_OUT=
start_move() {
  MV_OUT=$TH_HOSTS/mv.out
  th_sh "$A" 'rm -rf /run/relay /run/mv.pid && mkdir -p /run/relay && mkfifo /run/relay/go && if [ -n "$1" ]; then echo "$1" > /run/relay/hold; fi' "$1" || return 1
  th_run "$A" /root/mv.sh "${MV_SLOT:-0}" "$B_IP" "${@:2}" >"$MV_OUT" 2>&1 &
  MV_BG=$!
}

# held: the relay holds the connection where start_move asked (or the move ended first).
held_or_ended() { th_run "$A" test -e /run/relay/held || ! kill -0 "$MV_BG" 2>/dev/null; }
held() {
  th_wait_for 600 held_or_ended && th_run "$A" test -e /run/relay/held \
    || { t_fail "the move never reached its hold: $(cat "$MV_OUT")"; return 1; }
}

release() { th_sh "$A" 'echo "$1" > /run/relay/go' "$1"; }

kill_source() {
  th_sh "$A" 'kill -9 "$(cat /run/mv.pid)"' || return 1
  wait "$MV_BG"
  echo "    move killed: $(tr '\n' ' ' <"$MV_OUT")"
}

phase_on_a() { th_sh "$A" 'sed -n "s/.*\"phase\": \"\([a-z-]*\)\".*/\1/p" /var/lib/slot-os/moves/out-slot00.json'; }

# settle_by_a_run HOST: any slot-os command settles what a killed move left there.
settle_by_a_run() {
  local out
  out=$(th_run "$1" slot-os list 2>&1) || { t_fail "slot-os list on $1: $out"; return 1; }
  echo "    $1: $(grep 'move' <<<"$out" | tr '\n' ' ')"
}

# gap_check HOST DOWNTIME_MS: in HOST's /var/ticks, the last tick of the boot before the
# move and the first of the boot after it are at most DOWNTIME_MS (+ the longest tick
# interval seen before, by which the last tick may precede the freeze) apart.
gap_check() {
  python3 - "$(th_root "$1")/var/lib/machines/slot00/var/ticks" "$2" <<'EOF'
import sys
lines = [l.split() for l in open(sys.argv[1]) if l.strip()]
assert all(len(l) == 2 and l[0].isdigit() for l in lines), "a torn tick line"
ids = []
for _, i in lines:
    if not ids or ids[-1] != i:
        ids.append(i)
before = [int(t) for t, i in lines if i == ids[-2]]
after = [int(t) for t, i in lines if i == ids[-1]]
gap = (after[0] - before[-1]) / 1000
period = max(b - a for a, b in zip(before, before[1:])) / 1000
down = float(sys.argv[2])
print(f"    last tick before {before[-1]}, first after {after[0]}: gap {gap:.0f} ms, downtime {down:.0f} ms, longest tick interval before {period:.0f} ms, {len(before)} ticks before")
sys.exit(0 if 0 < gap <= down + period else 1)
EOF
}

json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }

# --- tests ---------------------------------------------------------------------------------

test_move_with_changes_during_the_copy() {
  local mid
  mid=$(th_run "$A" cat /var/lib/machines/slot00/etc/machine-id) || return 1
  th_run "$A" slot-os exec 0 -- sh -c 'set -e; head -c 20000000 /dev/urandom > /root/big; sha256sum /root/big > /root/big.sum
    mkdir -p /root/d/sub; echo keep > /root/d/sub/f; echo del > /root/gone; mkdir /root/olddir; echo x > /root/olddir/x
    echo a > /root/mode; echo h > /root/h' || { t_fail "writing files in slot00"; return 1; }
  # Held after the copy is applied on B: the slot still runs on A, and changes now.
  start_move "down P 1" --json || return 1
  held || return 1
  assert_eq copying "$(phase_on_a)" "the marker says copying" || return 1
  assert_ok th_run "$B" test -d /var/lib/machines/.slot-os-move-slot00/etc || return 1
  assert_ok th_run "$B" test ! -e /etc/slot-os/slot00.toml || return 1
  th_run "$A" slot-os exec 0 -- sh -c 'set -e; rm /root/gone; mv /root/olddir /root/newdir; chmod 600 /root/mode
    chown 4321:8765 /root/mode; setfattr -n user.k -v v /root/mode; ln /root/h /root/h2; echo changed >> /root/d/sub/f
    head -c 5000000 /dev/urandom > /root/late; sha256sum /root/late > /root/late.sum' || { t_fail "changing files in slot00"; return 1; }
  release go || return 1
  wait "$MV_BG"; local rc=$?
  local out
  out=$(cat "$MV_OUT")
  echo "    $out"
  assert_eq 0 "$rc" "move exits 0" || return 1
  local down
  down=$(json_field downtime_ms <<<"$out") || { t_fail "no downtime in the report"; return 1; }
  assert_eq 1 "$(json_field redumped_dirs <<<"$out")" "the renamed directory was sent whole" || return 1
  gone_from "$A" || return 1
  whole_on "$B" || return 1
  th_run "$B" slot-os exec 0 -- sh -c 'set -e; cd /root; sha256sum -c big.sum; sha256sum -c late.sum; test ! -e gone; test ! -e olddir
      test "$(cat newdir/x)" = x; test "$(stat -c %a:%u:%g mode)" = 600:4321:8765; test "$(getfattr --only-values -n user.k mode)" = v
      test "$(stat -c %i h)" = "$(stat -c %i h2)"; test "$(cat d/sub/f)" = "keep
changed"' || { t_fail "the slot's files on $B are not what they were on $A"; return 1; }
  assert_contains "$(th_run "$B" slot-os exec 0 -- cat /proc/1/environ | tr '\0' '\n')" "ROLE=moved" "its TOML's environment" || return 1
  assert_contains "$(th_run "$B" cat /etc/slot-os/slot00.toml)" "autostart = true" "autostart carried over" || return 1
  assert_ok th_run "$B" test -L /run/systemd/generator/machines.target.wants/systemd-nspawn@slot00.service || return 1
  assert_eq "$mid" "$(th_run "$B" slot-os exec 0 -- cat /etc/machine-id)" "machine-id kept" || return 1
  gap_check "$B" "$down" || { t_fail "the ticks' gap exceeds the measured downtime"; return 1; }
}

test_move_back_over_plain_ssh() {
  local out rc down
  out=$(th_run "$B" slot-os move 0 "$A_IP" 2>&1); rc=$?
  echo "    $out"
  assert_eq 0 "$rc" "move from B (Debian 13) to A (Debian 12)" || return 1
  assert_contains "$out" "slot00: moved to $A_IP: downtime" "reports the downtime" || return 1
  down=$(sed -n 's/.*downtime \([0-9.]*\) s.*/\1/p' <<<"$out")
  gone_from "$B" || return 1
  whole_on "$A" || return 1
  gap_check "$A" "$(python3 -c "print(float('$down') * 1000)")" || { t_fail "the ticks' gap exceeds the measured downtime"; return 1; }
  assert_eq 12 "$(th_run "$A" slot-os exec 0 -- sh -c '. /etc/os-release; echo $VERSION_ID')" "the Debian 12 slot is back" || return 1
}

# state_of HOST: what a refused move must leave as it was (configs, images, markers, units).
state_of() {
  th_sh "$1" 'cd /etc/slot-os && ls -la --time-style=+%s.%N . && sha256sum -- *.toml; ls -a /var/lib/machines /var/lib/slot-os/moves /run/slot-os/frozen 2>&1
    systemctl show -P ActiveState -P FreezerState -P MainPID systemd-nspawn@slot00; ip -br link'
}

# refused WHY [ARGS]: `slot-os move 0 B` from A is refused with WHY, exit 2, and changes
# nothing on A (the slot keeps ticking) or on B.
refused() {
  local a b out rc
  a=$(state_of "$A") && b=$(state_of "$B") || return 1
  out=$(th_run "$A" slot-os move 0 "$B_IP" "${@:2}" 2>&1); rc=$?
  echo "    refused: $(tr '\n' ' ' <<<"$out")"
  assert_eq 2 "$rc" "move refused with exit 2" || return 1
  assert_contains "$out" "$1" "says why" || return 1
  assert_contains "$out" "nothing was changed" "says nothing was changed" || return 1
  assert_eq "$a" "$(state_of "$A")" "nothing changed on $A" || return 1
  assert_eq "$b" "$(state_of "$B")" "nothing changed on $B" || return 1
  ticking "$A" || return 1
}

test_refusals_change_nothing_on_either_host() {
  local toml
  toml=$(th_run "$A" cat /etc/slot-os/slot00.toml) || return 1
  # the name is taken on B
  local rc
  th_sh "$B" 'printf "memory = \"256M\"\n" > /etc/slot-os/slot00.toml' || return 1
  refused "a slot named slot00 exists on"; rc=$?
  th_run "$B" rm /etc/slot-os/slot00.toml || return 1
  ((rc == 0)) || return 1
  # its bridge exists on A only (the running slot's TOML gains a NIC on it; not applied)
  th_run "$A" slot-os br-add 7 10.77.7.1/24 >/dev/null || return 1
  th_sh "$A" 'printf "\n[[nic]]\nnumber = 1\nbridge = 7\n" >> /etc/slot-os/slot00.toml' || return 1
  refused "bridge 7 is not declared"; rc=$?
  th_sh "$A" 'printf "%s\n" "$1" > /etc/slot-os/slot00.toml' "$toml" || return 1
  ((rc == 0)) || return 1
  # its TOML asks for access to B (a bind mount of a host path), without --trust-config
  th_sh "$A" 'printf "\n[[bind]]\nsource = \"/root\"\ntarget = \"/mnt/hostroot\"\n" >> /etc/slot-os/slot00.toml' || return 1
  refused "asks for access to"; rc=$?
  th_sh "$A" 'printf "%s\n" "$1" > /etc/slot-os/slot00.toml' "$toml" || return 1
  ((rc == 0)) || return 1
  assert_ok th_run "$A" slot-os br-del 7 || return 1
}

# kill_receiver: kill -9 of the target's `slot-os move-receive`.
kill_receiver() {
  th_sh "$B" 'kill -9 "$(cat /run/recv.pid)"' || return 1
}

test_kill_source_during_the_copy() {
  # Held at the copy's third data frame: the slot runs on A, part of it is on B.
  start_move "up D 3" || return 1
  held || return 1
  assert_eq copying "$(phase_on_a)" "the marker says copying" || return 1
  assert_ok th_run "$B" test -d /var/lib/machines/.slot-os-move-slot00 || return 1
  kill_source || return 1
  # It never stopped on A; B's receiver saw its input end and removed its part.
  ticking "$A" || return 1
  gone_from "$B" || return 1
  settle_by_a_run "$A" || return 1
  whole_on "$A" || return 1
}

test_kill_source_during_the_changes() {
  # Held as the changes start: the slot is frozen on A, its copy whole on B.
  start_move "up S 2" || return 1
  held || return 1
  assert_eq frozen "$(phase_on_a)" "the marker says frozen" || return 1
  assert_eq frozen "$(th_run "$A" systemctl show -P FreezerState systemd-nspawn@slot00)" "frozen on A" || return 1
  kill_source || return 1
  gone_from "$B" || return 1
  # A killed source cannot thaw: the next slot-os run on A does.
  settle_by_a_run "$A" || return 1
  whole_on "$A" || return 1
}

test_kill_receiver_during_the_changes() {
  start_move "up S 2" || return 1
  held || return 1
  kill_receiver || return 1
  release go || return 1
  wait "$MV_BG"; local rc=$?
  echo "    $(tr '\n' ' ' <"$MV_OUT")"
  assert_eq 1 "$rc" "the move fails" || return 1
  assert_contains "$(cat "$MV_OUT")" "it is here and runs" "says the slot is back" || return 1
  # The source undid it itself (thawed); the dead receiver's staging goes at B's next run.
  whole_on "$A" || return 1
  settle_by_a_run "$B" || return 1
  gone_from "$B" || return 1
}

test_cut_connection_at_the_handover() {
  # Cut as A tells B to take the slot: A has stopped it and parked its TOML, B never hears.
  start_move "up C 1" || return 1
  held || return 1
  assert_eq handed-over "$(phase_on_a)" "the marker says handed-over" || return 1
  assert_eq inactive "$(th_unit_state "$A" systemd-nspawn@slot00.service)" "stopped on A" || return 1
  release cut || return 1
  wait "$MV_BG"; local rc=$?
  echo "    $(tr '\n' ' ' <"$MV_OUT")"
  assert_eq 1 "$rc" "the move fails" || return 1
  # A asked B over a new connection: B has no slot, so it is back on A, started again.
  assert_contains "$(cat "$MV_OUT")" "the handover to $B_IP did not happen; it is back here and runs" "says so" || return 1
  gone_from "$B" || return 1
  whole_on "$A" || return 1
}

test_kill_source_after_the_target_started() {
  # Held as B says the slot booted there: it runs on B, A's copy is stopped and parked.
  start_move "down B 1" || return 1
  held || return 1
  assert_eq handed-over "$(phase_on_a)" "the marker says handed-over" || return 1
  kill_source || return 1
  ticking "$B" || return 1
  assert_eq inactive "$(th_unit_state "$A" systemd-nspawn@slot00.service)" "the copy on A is not running" || return 1
  assert_ok th_run "$A" test ! -e /etc/slot-os/slot00.toml || return 1
  assert_ok th_run "$A" test -s /var/lib/slot-os/moves/out-slot00.toml || return 1
  # The next slot-os run on A asks B, hears it has the slot, and removes A's copy.
  settle_by_a_run "$A" || return 1
  gone_from "$A" || return 1
  whole_on "$B" || return 1
}

# An overlay slot (what `create` makes on ext4 with the default backend): its merged tree
# (base version and its own upper) moves, read through fresh read-only overlays of its
# own, and arrives as a plain image; a base file it deleted stays deleted.
test_overlay_slot_moves_as_its_merged_tree() {
  th_copy_slot_image "$A" slot-os || return 1
  local out rc
  out=$(th_run "$A" slot-os create 5 2>&1) || { t_fail "create 5: $out"; return 1; }
  assert_contains "$(th_run "$A" cat /etc/slot-os/slot05.toml)" 'storage = "overlay"' "slot05 is an overlay slot on A" || return 1
  th_run "$A" slot-os start 5 >/dev/null || { t_fail "starting slot05"; return 1; }
  th_run "$A" slot-os exec 5 -- sh -c 'set -e; head -c 10000000 /dev/urandom > /root/big; sha256sum /root/big > /root/big.sum
    rm /etc/issue; echo "moved motd" > /etc/motd; echo x > /root/owned; chown 4321:8765 /root/owned' \
    || { t_fail "writing files in slot05"; return 1; }
  # Held after the copy is applied on B; the slot changes meanwhile (the frozen level sees it).
  MV_SLOT=5 start_move "down P 1" --json || return 1
  held || return 1
  th_run "$A" slot-os exec 5 -- sh -c 'set -e; head -c 3000000 /dev/urandom > /root/late; sha256sum /root/late > /root/late.sum
    rm /etc/debian_version; rm /root/owned' || { t_fail "changing files in slot05"; return 1; }
  release go || return 1
  wait "$MV_BG"; rc=$?
  out=$(cat "$MV_OUT")
  echo "    $out"
  assert_eq 0 "$rc" "move of an overlay slot exits 0" || return 1
  assert_eq "" "$(th_sh "$A" 'ls -d /etc/slot-os/slot05.toml /var/lib/machines/slot05 /var/lib/machines/.slot-os/slot/slot05 /var/lib/slot-os/moves/*slot05* 2>/dev/null; grep -c " /var/lib/machines/slot05 " /proc/self/mountinfo | grep -v "^0$"')" \
    "nothing of slot05 left on A (config, mount point, layer, markers, mount)" || return 1
  assert_contains "$(th_run "$B" cat /etc/slot-os/slot05.toml)" 'storage = "copy"' "B records the plain image it made" || return 1
  assert_eq active "$(th_unit_state "$B" systemd-nspawn@slot05.service)" "slot05 runs on B" || return 1
  assert_ok th_run "$B" test -d /var/lib/machines/slot05/etc || return 1
  th_run "$B" slot-os exec 5 -- sh -c 'set -e; cd /root; sha256sum -c big.sum; sha256sum -c late.sum; test ! -e owned
      test ! -e /etc/issue; test ! -e /etc/debian_version; test "$(cat /etc/motd)" = "moved motd"; test -x /bin/sh
      test "$(stat -c %u:%g /etc/passwd)" = 0:0' || { t_fail "slot05's files on B are not its merged tree"; return 1; }
  assert_ok th_run "$B" slot-os stop 5 || return 1
}
