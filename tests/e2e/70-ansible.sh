# Issue 6: the Ansible role (packaging/ansible/roles/slot_os) in a real systemd test host.
# ansible-core (a venv from tests/ansible/venv.sh, bound read-only into the host) runs
# inside the host with the local connection: the role (from the slot_os.slot_os collection,
# installed with ansible-galaxy) installs slot-os from a .deb, templates /etc/slot-os, makes
# the base image, has the collection's slot module create slot images and start autostart
# slots. The files it writes are compared with what the slot-os commands write for the
# same settings in a second host (R), where slot-os was installed by `make install`.

H=ans
R=ansref
DEB_DIR=$TH_RUN/ansible-deb
BTRFS_IMG=""

# The package under test: SLOT_OS_TEST_DEB if set, else `make deb-only` (the packaging's own
# target, without a rebuild). The list of files `make install` puts in a host is kept for
# th_pre_boot_hook.
build_deb() {
    local root=$DEB_DIR/root out deb
    rm -rf "$DEB_DIR" && mkdir -p "$root" || return 1
    make -C "$TH_REPO" install DESTDIR="$root" PREFIX=/usr PROFILE="$TH_PROFILE" >"$DEB_DIR/make.log" 2>&1 \
        || { cat "$DEB_DIR/make.log"; return 1; }
    (cd "$root" && find . -type f -printf '/%P\n') >"$DEB_DIR/files" || return 1
    if [[ -n "${SLOT_OS_TEST_DEB:-}" ]]; then
        cp "$SLOT_OS_TEST_DEB" "$DEB_DIR/slot-os.deb"
        return
    fi
    out=$(make -s --no-print-directory -C "$TH_REPO" deb-only PROFILE="$TH_PROFILE" 2>&1) \
        || { printf '%s\n' "$out"; return 1; }
    deb=$(printf '%s\n' "$out" | tail -n 1)
    [[ "$deb" == /* ]] || deb=$TH_REPO/$deb
    cp "$deb" "$DEB_DIR/slot-os.deb"
}

# The host the role works on starts without slot-os (TH_INSTALL_PROJECT=0 where the harness
# has it; otherwise th_boot's `make install` is undone here).
# Its /var/lib/machines is btrfs, as on a real slot-os host: images are snapshots.
th_pre_boot_hook() {
    [[ "$1" == "$H" ]] || return 0
    local f
    while IFS= read -r f; do rm -f -- "$2$f"; done <"$DEB_DIR/files"
    rm -rf -- "$2/etc/slot-os" "$2/usr/share/doc/slot-os"
    [[ ! -e "$2/usr/bin/slot-os" ]] || return 1
    truncate -s 4G "$BTRFS_IMG" && mkfs.btrfs -q -f "$BTRFS_IMG" >/dev/null \
        && mkdir -p "$2/var/lib/machines" && mount -o loop "$BTRFS_IMG" "$2/var/lib/machines"
}

scenario_setup() {
    local venv
    venv=$(bash "$TH_REPO/tests/ansible/venv.sh") || return 1
    build_deb || return 1
    BTRFS_IMG=/var/tmp/slot-os-test-ansible-btrfs-$$.img
    # shellcheck disable=SC2034 # read by th_boot
    TH_NSPAWN_ARGS=(--bind-ro="$venv:/mnt/ansible-core" --bind-ro="$TH_REPO/packaging/ansible:/mnt/ansible"
        --bind-ro="$DEB_DIR:/mnt/deb")
    TH_INSTALL_PROJECT=0 th_boot "$H" unified || return 1
    # shellcheck disable=SC2034
    TH_NSPAWN_ARGS=()
    th_boot "$R" unified || return 1
    # The role is the collection's (it calls the collection's modules): installed as a user would.
    th_run "$H" /mnt/ansible-core/bin/python3 /mnt/ansible-core/bin/ansible-galaxy collection install \
        /mnt/ansible -p /root/collections >/dev/null || return 1
    cat >"$(th_root "$H")/root/site.yml" <<'EOF'
- hosts: all
  gather_facts: false
  roles: [slot_os.slot_os.slot_os]
EOF
}

scenario_teardown() {
    th_destroy "$H"
    th_destroy "$R"
    [[ -z "$BTRFS_IMG" ]] || rm -f "$BTRFS_IMG"
}

# playbook VARS_FILE [ARGS...]: the role on the test host, with the vars in /root/VARS_FILE
playbook() {
    th_run "$H" env ANSIBLE_COLLECTIONS_PATH=/root/collections ANSIBLE_PIPELINING=1 ANSIBLE_NOCOLOR=1 ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3 \
        ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0 \
        /mnt/ansible-core/bin/python3 /mnt/ansible-core/bin/ansible-playbook -i localhost, -c local \
        /root/site.yml -e "@/root/$1" "${@:2}"
}
# recap FIELD OUTPUT: a number from the PLAY RECAP line
recap() { printf '%s\n' "$2" | sed -n "s/^localhost *:.* $1=\([0-9]*\).*/\1/p" | tail -n 1; }
sos_r() { th_run "$R" slot-os "$@"; }
state() { th_run "$H" systemctl show -P ActiveState "systemd-nspawn@$1"; }
slot_ip() { th_sh "$H" "nsenter -t \$(machinectl show $1 -p Leader --value) -n ip -4 -o addr show $2"; }
fingerprint() { th_sh "$H" 'sha256sum /etc/slot-os/*.toml; ls /var/lib/machines'; }

# toml_eq FILE: /etc/slot-os/FILE on H and on R hold the same TOML (parsed and compared)
toml_eq() {
    /usr/bin/python3 - "$(th_root "$H")/etc/slot-os/$1" "$(th_root "$R")/etc/slot-os/$1" <<'EOF' || { t_fail "$1 differs from what the slot-os commands write"; return 1; }
import sys, tomllib
ours, ref = (tomllib.load(open(p, "rb")) for p in sys.argv[1:3])
# A slot's storage records what its host's filesystem gave (btrfs here, overlay on the
# reference's ext4): both must have one, the values may differ.
if sys.argv[1].endswith("/slot-os.toml"):
    pass
elif ("storage" in ours) != ("storage" in ref):
    print(f"storage recorded: role {ours.get('storage')}, commands {ref.get('storage')}")
    sys.exit(1)
else:
    ours.pop("storage", None); ref.pop("storage", None)
if ours != ref:
    print(f"role:     {ours}\ncommands: {ref}")
    sys.exit(1)
EOF
}

# vars_file SLOT...: the role's variables with the slots named (slot0 slot1 slot2)
vars_file() {
    cat <<'EOF'
slot_os_install: deb
slot_os_deb: /mnt/deb/slot-os.deb
slot_os_make_base_image: true
slot_os_bridges:
  - number: 1
    address: ["192.168.18.1/24"]
slot_os_slots:
EOF
    local s
    for s in "$@"; do "vars_$s"; done
}
vars_slot0() {
    cat <<'EOF'
  - number: 0
    autostart: true
    cpu_quota: 50%
    cpus: "0"
    memory: 256M
    nics:
      - {number: 1, bridge: 1, address: ["192.168.18.2/24"]}
EOF
}
vars_slot1() {
    cat <<'EOF'
  - number: 1
    memory: 1G
    nics:
      - {number: 1, bridge: 1, address: "192.168.18.3/24"}
EOF
}
vars_slot2() {
    cat <<'EOF'
  - number: 2
    autostart: true
    cpu_quota: 25
    nics:
      - {number: 1, bridge: 1, address: ["192.168.18.4/24"]}
EOF
}
# the CPU set is beyond the host's; the address is slot00's
vars_bad() {
    cat <<'EOF'
  - {number: 3, cpus: "0-63"}
  - {number: 4, nics: [{number: 1, bridge: 1, address: ["192.168.18.2/24"]}]}
EOF
}

test_reference_files_from_slot_os_commands() {
    # build only needs the base image to exist here: no slot of R is ever started
    th_sh "$R" 'mkdir -p /var/lib/machines/slot-os/etc' || return 1
    local c
    for c in "build 2" "resource -c 50 -n 0 -m 256M 0" "autostart on 0" "resource -m 1G 1" \
        "br-add 1 192.168.18.1/24" "net-add 0 192.168.18.2/24 1" "net-add 1 192.168.18.3/24 1"; do
        # shellcheck disable=SC2086
        assert_ok sos_r $c || return 1
    done
    assert_ok sos_r check || return 1
}

test_first_run_installs_and_builds_two_slots() {
    vars_file slot0 slot1 >"$(th_root "$H")/root/two.yml"
    assert_exit 1 th_run "$H" test -e /usr/bin/slot-os || return 1
    local out rc
    out=$(playbook two.yml 2>&1); rc=$?
    printf '%s\n' "$out"
    assert_eq 0 "$rc" "ansible-playbook exit code" || return 1
    assert_eq 0 "$(recap failed "$out")" "failed tasks" || return 1
    [[ "$(recap changed "$out")" -gt 0 ]] || { t_fail "first run reports no change"; return 1; }
    # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
    assert_contains "$(th_run "$H" dpkg-query -W -f='${Status}' slot-os)" "install ok installed" "package installed" || return 1
    assert_ok th_run "$H" slot-os check || return 1
}

test_files_equal_what_the_commands_write() {
    toml_eq slot-os.toml || return 1
    toml_eq slot00.toml || return 1
    toml_eq slot01.toml || return 1
}

test_slots_built_and_autostart_running() {
    local s
    assert_ok th_run "$H" test -x /var/lib/machines/slot-os/usr/lib/systemd/systemd || return 1
    for s in slot00 slot01; do
        assert_eq "$s" "$(th_run "$H" cat /var/lib/machines/$s/etc/hostname)" "$s hostname" || return 1
        assert_ok th_run "$H" test -f /run/systemd/nspawn/$s.nspawn || return 1
    done
    assert_eq 2 "$(th_sh "$H" 'cat /var/lib/machines/slot0[01]/etc/machine-id | sort -u | grep -c "^[0-9a-f]\{32\}$"')" \
        "each slot has its own machine-id" || return 1
    assert_eq active "$(state slot00)" "autostart slot00 running" || return 1
    assert_eq inactive "$(state slot01)" "slot01 (no autostart) not started" || return 1
    assert_eq 500ms "$(th_run "$H" systemctl show -P CPUQuotaPerSecUSec systemd-nspawn@slot00)" "slot00 CPUQuota 50%" || return 1
    assert_contains "$(slot_ip slot00 eth1)" "192.168.18.2/24" "slot00's NIC on bridge 1" || return 1
    assert_ok th_sh "$H" 'ip -4 addr show slotbr1 | grep -q 192.168.18.1/24' || return 1
    assert_ok th_run "$H" test -L /run/systemd/generator/machines.target.wants/systemd-nspawn@slot00.service || return 1
}

test_second_run_changes_nothing() {
    local out rc before
    before=$(fingerprint)
    out=$(playbook two.yml 2>&1); rc=$?
    printf '%s\n' "$out"
    assert_eq 0 "$rc" "ansible-playbook exit code" || return 1
    assert_eq 0 "$(recap changed "$out")" "changed tasks on the second run" || return 1
    assert_eq "$before" "$(fingerprint)" "files and images" || return 1
}

test_third_slot_appears() {
    local c
    for c in "build 3" "autostart on 2" "resource -c 25 2" "net-add 2 192.168.18.4/24 1"; do
        # shellcheck disable=SC2086
        assert_ok sos_r $c || return 1
    done
    vars_file slot0 slot1 slot2 >"$(th_root "$H")/root/three.yml"
    local out rc sums before
    before=$(fingerprint)
    out=$(playbook three.yml --check --diff 2>&1); rc=$?
    printf '%s\n' "$out"
    assert_eq 0 "$rc" "ansible-playbook --check exit code" || return 1
    [[ "$(recap changed "$out")" -gt 0 ]] || { t_fail "--check reports no change"; return 1; }
    assert_contains "$out" '+cpu_quota = "25%"' "--diff shows the new slot file" || return 1
    assert_eq "$before" "$(fingerprint)" "--check changes nothing" || return 1
    sums=$(th_sh "$H" 'sha256sum /etc/slot-os/slot0[01].toml; cat /var/lib/machines/slot0[01]/etc/machine-id')
    out=$(playbook three.yml 2>&1); rc=$?
    printf '%s\n' "$out"
    assert_eq 0 "$rc" "ansible-playbook exit code" || return 1
    [[ "$(recap changed "$out")" -gt 0 ]] || { t_fail "adding a slot reports no change"; return 1; }
    toml_eq slot02.toml || return 1
    toml_eq slot-os.toml || return 1
    assert_eq slot02 "$(th_run "$H" cat /var/lib/machines/slot02/etc/hostname)" "slot02 image built" || return 1
    assert_eq active "$(state slot02)" "autostart slot02 running" || return 1
    assert_contains "$(slot_ip slot02 eth1)" "192.168.18.4/24" "slot02's NIC" || return 1
    th_wait_for 10 th_sh "$H" "nsenter -t \$(machinectl show slot02 -p Leader --value) -n ping -c1 -W2 192.168.18.2" \
        || { t_fail "slot02 cannot reach slot00 on bridge 1"; return 1; }
    assert_eq "$sums" "$(th_sh "$H" 'sha256sum /etc/slot-os/slot0[01].toml; cat /var/lib/machines/slot0[01]/etc/machine-id')" \
        "slot00 and slot01 untouched" || return 1
}

test_bad_values_change_nothing() {
    vars_file slot0 slot1 slot2 bad >"$(th_root "$H")/root/bad.yml"
    local out rc before
    before=$(fingerprint)
    out=$(playbook bad.yml 2>&1); rc=$?
    printf '%s\n' "$out"
    assert_eq 2 "$rc" "ansible-playbook exit code (a failed task)" || return 1
    assert_contains "$out" "/etc/slot-os/slot03.toml: cpus" "the CPU set beyond the host is named" || return 1
    assert_contains "$out" "/etc/slot-os/slot04.toml" "the address slot00 holds is named" || return 1
    assert_contains "$out" "/etc/slot-os was not changed" "says nothing changed" || return 1
    assert_eq "$before" "$(fingerprint)" "files and images" || return 1
    assert_eq "" "$(th_sh "$H" 'ls /tmp | grep slot-os-ansible')" "staging root removed" || return 1
}

test_unlisted_slot_kept_unless_asked() {
    vars_file slot0 slot2 >"$(th_root "$H")/root/no1.yml"
    local out rc
    out=$(playbook no1.yml 2>&1); rc=$?
    printf '%s\n' "$out"
    assert_eq 0 "$rc" "ansible-playbook exit code" || return 1
    # also shows that a run over three built slots, one unlisted, changes nothing
    assert_eq 0 "$(recap changed "$out")" "an unlisted slot is left alone by default" || return 1
    assert_ok th_run "$H" test -f /etc/slot-os/slot01.toml || return 1
}

# One run: slot01 (unlisted) goes, and running slot00 gets a new CPU quota.
test_remove_unlisted_and_change_a_running_slot() {
    vars_file slot0 slot2 | sed 's/^    cpu_quota: 50%$/    cpu_quota: 40%/' >"$(th_root "$H")/root/q40.yml"
    local out rc
    out=$(playbook q40.yml -e slot_os_remove_unlisted=true 2>&1); rc=$?
    printf '%s\n' "$out"
    assert_eq 0 "$rc" "ansible-playbook exit code" || return 1
    assert_exit 1 th_run "$H" test -e /etc/slot-os/slot01.toml || return 1
    assert_exit 1 th_run "$H" test -e /run/systemd/nspawn/slot01.nspawn || return 1
    assert_ok th_run "$H" test -d /var/lib/machines/slot01 || return 1
    assert_contains "$(th_run "$H" cat /etc/slot-os/slot00.toml)" 'cpu_quota = "40%"' "persisted" || return 1
    assert_eq active "$(state slot00)" "slot00 not restarted" || return 1
    assert_eq 400ms "$(th_run "$H" systemctl show -P CPUQuotaPerSecUSec systemd-nspawn@slot00)" \
        "the new CPUQuota reaches the running slot at daemon-reload" || return 1
}
