#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): issue 14's move downtime. Two test hosts on a veth
# underlay with ssh between them (as tests/e2e/74-move.sh); slot00 on A is the test-host
# rootfs plus SIZE_MB of random data (incompressible), running, with light writes: a
# timestamp every 10 ms and 64 KiB appended every 100 ms. In the same run:
#  - `slot-os move 0 B` (over plain ssh): its downtime (freeze → booted on B), the gap in the
#    slot's own timestamps across the move, the bytes and times of copy and changes;
#    then moved back B → A (a second sample);
#  - the old way A → B: `slot-os stop`, `slot-os export FILE`, `scp` FILE, `slot-os import`,
#    `slot-os start`: downtime = stop → started on B (the slot has to be down while it is
#    exported to be consistent), and the same with `export - | ssh B import -` (one pass).
#
#   sudo tests/bench/move.sh [SIZE_MB]      (default 700: a ~1 GB slot)
#   MOVE_STORAGE=overlay sudo tests/bench/move.sh    slot00 is an overlay slot on A (`create`
#       on a base image holding the data and the writer): the first move sends its merged
#       tree; it arrives on B as a plain image, so the move back and the old way are plain.
set -euo pipefail
size_mb=${1:-700}
storage=${MOVE_STORAGE:-copy}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
A=benchmva
B=benchmvb
A_IP=10.201.0.1
B_IP=10.201.0.2
cleanup() { th_cleanup_all || true; leave_own_cgroups; }
trap cleanup EXIT

th_boot "$A" unified
th_boot "$B" unified
ip link add "bm-$$-a" type veth peer name "bm-$$-b"
ip link set "bm-$$-a" netns "$(th_leader "$A")"
ip link set "bm-$$-b" netns "$(th_leader "$B")"
th_sh "$A" "ip link set bm-$$-a name under0 && ip addr add $A_IP/24 dev under0 && ip link set under0 up"
th_sh "$B" "ip link set bm-$$-b name under0 && ip addr add $B_IP/24 dev under0 && ip link set under0 up"
ssh_trust() { # FROM TO TO_IP
    local pub hostkey
    th_sh "$1" 'mkdir -p -m 700 /root/.ssh && { [ -e /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N "" -f /root/.ssh/id_ed25519; }'
    pub=$(th_run "$1" cat /root/.ssh/id_ed25519.pub)
    hostkey=$(th_run "$2" cat /etc/ssh/ssh_host_ed25519_key.pub)
    th_sh "$2" 'mkdir -p -m 700 /root/.ssh && printf "%s\n" "$1" >> /root/.ssh/authorized_keys' "$pub"
    th_sh "$1" 'printf "%s %s\n" "$1" "$2" >> /root/.ssh/known_hosts' "$3" "${hostkey% *}"
    th_run "$1" ssh -o BatchMode=yes "root@$3" true
}
ssh_trust "$A" "$B" "$B_IP"
ssh_trust "$B" "$A" "$A_IP"

if [[ $storage == overlay ]]; then
    th_copy_slot_image "$A" slot-os
    img=$(th_root "$A")/var/lib/machines/slot-os
else
    th_copy_slot_image "$A" slot00
    img=$(th_root "$A")/var/lib/machines/slot00
fi
head -c "${size_mb}M" /dev/urandom >"$img/var/bulk"
# (a script: systemd would expand the ${...} of an ExecStart line itself)
cat >"$img/usr/local/bin/writer" <<'EOF'
#!/bin/bash
while :; do
    echo "${EPOCHREALTIME/./}" >> /var/ticks
    n=$((n + 1))
    if ((n % 10 == 0)); then head -c 65536 /dev/urandom >> /var/log/light; fi
    sleep 0.01
done
EOF
chmod 755 "$img/usr/local/bin/writer"
printf '[Service]\nExecStart=/usr/local/bin/writer\n[Install]\nWantedBy=multi-user.target\n' >"$img/etc/systemd/system/writer.service"
ln -s ../writer.service "$img/etc/systemd/system/multi-user.target.wants/writer.service"
if [[ $storage == overlay ]]; then
    th_storage_backend "$A" overlay
    th_run "$A" slot-os create 0 >/dev/null
else
    th_sh "$A" 'mkdir -p /etc/slot-os && printf "memory = \"512M\"\n" > /etc/slot-os/slot00.toml && systemctl daemon-reload'
fi
th_run "$A" slot-os start 0 >/dev/null
bytes=$(du -sb "$img" | cut -f1)
echo "# slot00 ($storage): $((bytes / 1000000)) MB ($size_mb MB of it random), running, light writes"

# ticks HOST: the slot's timestamp file as seen from outside the test host: in an overlay
# slot's upper (its merged root is mounted inside the test host only), else in its image.
ticks() {
    local up
    up=$(th_root "$1")/var/lib/machines/.slot-os/slot/slot00/upper
    if [[ -d $up ]]; then echo "$up/var/ticks"; else echo "$(th_root "$1")/var/lib/machines/slot00/var/ticks"; fi
}

# gap HOST: the longest pause between two of the slot's timestamps (ms): the downtime as the
# slot saw it (the last write before the freeze to the first after the boot there).
gap() {
    python3 -c '
import sys
t = [int(l) for l in open(sys.argv[1]) if l.strip().isdigit()]
print(round(max(b - a for a, b in zip(t, t[1:])) / 1000))' "$(ticks "$1")"
}
# wait_ticks HOST: the slot writes its timestamps there (it has booted and runs).
wait_ticks() {
    local f n
    f=$(ticks "$1")
    n=$(wc -l <"$f" 2>/dev/null || echo 0)
    th_wait_for 120 sh -c "[ \$(wc -l < '$f') -gt $((n + 50)) ]"
}
field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

wait_ticks "$A"
: >"$(ticks "$A")"
move() { # FROM TO_IP TO
    local out
    out=$(th_run "$1" slot-os move 0 "$2" --json)
    wait_ticks "$3"
    echo "move $1 -> $3: downtime $(field downtime_ms <<<"$out") ms (timestamps' gap $(gap "$3") ms): copy $(($(field copy_bytes <<<"$out") / 1000000)) MB in $(field copy_ms <<<"$out") ms, changes $(($(field changes_bytes <<<"$out") / 1000)) kB in $(field changes_ms <<<"$out") ms (freeze to applied), boot $(field boot_ms <<<"$out") ms"
}
move "$A" "$B_IP" "$B"
: >"$(ticks "$B")"
move "$B" "$A_IP" "$A"

# The old way, A → B, stopped for all of it.
oldway() { # LABEL CMD-ON-A
    local t0 t1 t2
    wait_ticks "$A"
    t0=$(now_us)
    th_run "$A" slot-os stop 0 >/dev/null
    th_sh "$A" "$2"
    t1=$(now_us)
    th_run "$B" slot-os start 0 >/dev/null
    wait_ticks "$B"
    t2=$(now_us)
    echo "$1: downtime $(((t2 - t0) / 1000)) ms (stop → booted on B; of it transfer+import $(((t1 - t0) / 1000)) ms, start $(((t2 - t1) / 1000)) ms)"
    th_run "$A" slot-os remove 0 >/dev/null
    th_run "$B" slot-os move 0 "$A_IP" >/dev/null # back to A for the next one (not timed)
}
oldway "export FILE + scp + import + start" \
    "rm -f /var/tmp/x.slot && slot-os export 0 /var/tmp/x.slot >/dev/null && scp -q -o BatchMode=yes /var/tmp/x.slot root@$B_IP:/var/tmp/x.slot && ssh -o BatchMode=yes root@$B_IP 'slot-os import /var/tmp/x.slot slot00 >/dev/null && rm /var/tmp/x.slot' && rm /var/tmp/x.slot"
oldway "export - | ssh import - + start" \
    "slot-os export 0 - | ssh -o BatchMode=yes root@$B_IP 'slot-os import - slot00 >/dev/null'"
