#!/usr/bin/env bash
# Benchmark (not a test, not run in CI): what the Ansible collection costs over the bare tools,
# timed inside one stock-shaped test host with $EPOCHREALTIME, interleaved:
#   - `slot-os create` + `remove` of one slot vs `machinectl clone` + `remove` (btrfs),
#   - a slot module task that has nothing to do vs an ad-hoc `command: true` (Ansible's own
#     cost) and vs the `slot-os list --json` it runs,
#   - a command in a slot through the connection plugin (raw, and the command module) vs
#     `slot-os exec` and `systemd-run -M` (machined's container transport) run bare.
# Used by docs/notes/ansible.md.
#
#   sudo bash tests/bench/ansible.sh [ROUNDS]      (default 10)
set -euo pipefail
rounds=${1:-10}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
H=bans
IMG=/var/tmp/slot-os-bench-ansible-$$.img
cleanup() { th_cleanup_all || true; rm -f "$IMG"; leave_own_cgroups; }
trap cleanup EXIT
venv=$(bash tests/ansible/venv.sh)
th_pre_boot_hook() { btrfs_slot_images "$2" "$IMG" 1; }
TH_NSPAWN_ARGS=(--bind-ro="$venv:/mnt/ansible-core" --bind-ro="$PWD/packaging/ansible:/mnt/collection")
th_boot "$H" unified
th_sh "$H" 'btrfs subvolume snapshot /var/lib/machines/slot00 /var/lib/machines/slot-os >/dev/null &&
    mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && systemctl daemon-reload && slot-os start 0 >/dev/null &&
    /mnt/ansible-core/bin/python3 /mnt/ansible-core/bin/ansible-galaxy collection install /mnt/collection -p /root/collections >/dev/null 2>&1 &&
    printf "[slot_os_hosts]\nlocalhost ansible_connection=local\n" > /root/hosts.ini &&
    echo "plugin: slot_os.slot_os.slots" > /root/slot_os.yml'
raw=$(th_run "$H" bash -c '
    export ANSIBLE_COLLECTIONS_PATH=/root/collections ANSIBLE_PIPELINING=1 ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3 \
        ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0
    A=/mnt/ansible-core/bin
    t() { local k=$1; shift; local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1 || echo "FAILED: $*" >&2; local e=$EPOCHREALTIME; echo "$k $(( ${e/./} - ${s/./} ))"; }
    create() { slot-os create b$1 && slot-os remove b$1; }
    clone() { machinectl clone slot-os m$1 && machinectl remove m$1; }
    for ((i = 0; i < $1; i++)); do
        t create create $i; t clone clone $i
        t reload systemctl daemon-reload
        t keygen sh -c "d=\$(mktemp -d) && mkdir -p \$d/etc/ssh && ssh-keygen -q -A -f \$d && rm -rf \$d"
        t mod $A/python3 $A/ansible localhost -i localhost, -c local -m slot_os.slot_os.slot -a "name=slot00 state=started"
        t cmd $A/python3 $A/ansible localhost -i localhost, -c local -m ansible.builtin.command -a true
        t list slot-os list --json
        t lraw $A/python3 $A/ansible localhost -i localhost, -c local -m ansible.builtin.raw -a true
        t craw $A/python3 $A/ansible slot00@localhost -i /root/hosts.ini -i /root/slot_os.yml -m ansible.builtin.raw -a true
        t ccmd $A/python3 $A/ansible slot00@localhost -i /root/hosts.ini -i /root/slot_os.yml -m ansible.builtin.command -a true
        t exec slot-os exec slot00 -- true
        t run systemd-run -M slot00 --wait -q -P true
        read -r l _ </proc/loadavg; echo "load ${l/./}0"
    done' _ "$rounds")
echo "# $rounds rounds, interleaved, one running slot, btrfs; ms: median min max"
printf '%-58s %s\n' "slot-os create + remove (one slot)" "$(stats create 1)"
printf '%-58s %s\n' "machinectl clone + remove" "$(stats clone 1)"
printf '%-58s %s\n' "systemctl daemon-reload (create and remove run one each)" "$(stats reload 1)"
printf '%-58s %s\n' "ssh-keygen -A into an empty root (create's new host keys)" "$(stats keygen 1)"
printf '%-58s %s\n' "ansible -m slot_os.slot_os.slot (nothing to do)" "$(stats mod 1)"
printf '%-58s %s\n' "ansible -m command -a true (-c local)" "$(stats cmd 1)"
printf '%-58s %s\n' "slot-os list --json" "$(stats list 1)"
printf '%-58s %s\n' "ansible localhost -m raw -a true (-c local)" "$(stats lraw 1)"
printf '%-58s %s\n' "ansible SLOT -m raw -a true (connection plugin)" "$(stats craw 1)"
printf '%-58s %s\n' "ansible SLOT -m command -a true (connection plugin)" "$(stats ccmd 1)"
printf '%-58s %s\n' "slot-os exec slot00 -- true" "$(stats exec 1)"
printf '%-58s %s\n' "systemd-run -M slot00 --wait -P true" "$(stats run 1)"
printf 'load average (1 min): median min max %s\n' "$(stats load 2)"
