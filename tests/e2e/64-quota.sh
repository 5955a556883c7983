# Issue 13 (disk quotas, the task and IO keys): one test host whose /var/lib/machines is a
# loop-mounted btrfs (slots are snapshots with a qgroup each), with a plain ext4 (no
# project quotas) mounted on one image directory of it. Writing past `disk` fails inside
# the slot, other slots keep writing, `resource -d` raises it live; the slot's root cannot
# lift it; rename, restore and removal keep or drop it; where the file system cannot
# enforce it, check/build/start/resource -d refuse with how to enable it and change nothing.
# ext4 project quotas need a kernel with CONFIG_QFMT_V2, which the machines running this
# suite lack (their kernel refuses to mount an ext4 with the quota feature): the VM tier
# (tests/vm/90-vm.sh, the distributions' kernels) proves them.
# releases: bookworm trixie

H=quota
IMG=""
PLAIN=""

scenario_setup() {
  IMG=/var/tmp/slot-os-test-quota-btrfs-$$.img
  PLAIN=/var/tmp/slot-os-test-quota-ext4-$$.img
  th_pre_boot_hook() {
    truncate -s 3G "$IMG" && mkfs.btrfs -q -f "$IMG" >/dev/null &&
      mkdir -p "$2/var/lib/machines" && mount -o loop "$IMG" "$2/var/lib/machines" &&
      truncate -s 64M "$PLAIN" && mkfs.ext4 -q -F "$PLAIN" &&
      mkdir "$2/var/lib/machines/plain" && mount -o loop "$PLAIN" "$2/var/lib/machines/plain"
  }
  th_boot "$H" unified || return 1
  unset -f th_pre_boot_hook
  th_run "$H" slot-os make-base-image >/dev/null || { echo "make-base-image failed"; return 1; }
}

scenario_teardown() {
  th_destroy "$H"
  rm -f "$IMG" "$PLAIN"
  true
}

sos() { th_run "$H" slot-os "$@"; }
inslot() { th_run "$H" slot-os exec "$1" -- sh -c "$2"; }
prop() { th_run "$H" systemctl show -P "$2" "systemd-nspawn@$1.service"; }
# The slot's qgroup line (0/ID referenced max_referenced) from btrfs itself, in bytes.
qgroup_of() {
  th_sh "$H" 'id=$(btrfs subvolume show "/var/lib/machines/$1" | sed -n "s/^[[:space:]]*Subvolume ID:[[:space:]]*//p")
    btrfs qgroup show -r --raw /var/lib/machines | awk -v q="0/$id" '"'"'$1 == q { print $1, $2, $4 }'"'" "$1"
}
used_mib() { sos resource --json "$1" | jq -r '.[0].disk_usage.used / 1048576 | floor'; }

test_build_switches_btrfs_quotas_on_and_limits_new_slots() {
  local out
  th_sh "$H" 'printf "[defaults]\ndisk = \"2G\"\n" > /etc/slot-os/slot-os.toml' || return 1
  out=$(sos build 2 --dry-run 2>&1) || { t_fail "build --dry-run: $out"; return 1; }
  out=$(sos build 2 2>&1) || { t_fail "build 2: $out"; return 1; }
  printf '%s\n' "$out"
  assert_contains "$out" "btrfs quotas were off on this file system: switched on" "build says it switched quotas on" || return 1
  assert_contains "$out" "slot01: disk limit 2G" "build limits the second slot" || return 1
  local s q
  for s in slot00 slot01; do
    q=$(qgroup_of "$s")
    assert_contains "$q" " $((2 << 30))" "$s: btrfs reports the 2G referenced limit ($q)" || return 1
  done
  assert_eq $((2 << 30)) "$(sos resource --json 0 | jq -r '.[0].disk_usage.limit')" "resource --json shows the limit" || return 1
}

test_tasks_and_io_keys_reach_the_unit_and_change_live() {
  th_sh "$H" 'printf "tasks_max = 300\nio_weight = 50\nio_read_bandwidth_max = \"10M\"\n" >> /etc/slot-os/slot00.toml && systemctl daemon-reload' || return 1
  assert_ok sos start 0 1 || return 1
  assert_eq 300 "$(prop slot00 TasksMax)" "TasksMax after boot" || return 1
  assert_eq 50 "$(prop slot00 IOWeight)" "IOWeight after boot" || return 1
  assert_eq "/var/lib/machines 10485760" "$(prop slot00 IOReadBandwidthMax)" "IOReadBandwidthMax after boot" || return 1
  assert_eq 16384 "$(prop slot01 TasksMax)" "a slot without tasks_max keeps the stock unit's" || return 1
  local out toml
  out=$(sos resource --tasks-max 200 --io-weight 60 --io-read-max none --io-write-max 5M 0 2>&1) || { t_fail "resource: $out"; return 1; }
  assert_contains "$out" "tasks 200, IO weight 60, read none, write 5M/s" "the line names the new values" || return 1
  assert_eq 200 "$(prop slot00 TasksMax)" "TasksMax changed live" || return 1
  assert_eq 60 "$(prop slot00 IOWeight)" "IOWeight changed live" || return 1
  assert_eq "" "$(prop slot00 IOReadBandwidthMax)" "the read limit lifted live" || return 1
  assert_eq "/var/lib/machines 5242880" "$(prop slot00 IOWriteBandwidthMax)" "IOWriteBandwidthMax set live" || return 1
  toml=$(th_run "$H" cat /etc/slot-os/slot00.toml)
  assert_contains "$toml" "tasks_max = 200" "tasks_max persisted" || return 1
  assert_contains "$toml" 'io_write_bandwidth_max = "5M"' "write limit persisted" || return 1
  assert_ok th_run "$H" test ! -e /run/systemd/system.control/systemd-nspawn@slot00.service.d/50-TasksMax.conf || return 1
  out=$(sos resource 0)
  printf '%s\n' "$out"
  assert_contains "$out" "200" "resource shows tasks_max" || return 1
  assert_eq none "$(sos resource --json 1 | jq -r '.[0].tasks_max // "none"')" "slot01 has no tasks_max" || return 1
  assert_ok sos resource --tasks-max none 1 || return 1
  assert_eq infinity "$(prop slot01 TasksMax)" "tasks_max none is TasksMax=infinity" || return 1
  assert_exit 2 sos resource --tasks-max 0 0 || return 1
  assert_exit 2 sos resource --io-weight 10001 0 || return 1
  assert_exit 2 sos resource --io-read-max "5M
TasksMax=1" 0 || return 1
}

test_writing_past_disk_fails_in_the_slot_and_raising_it_live_succeeds() {
  local used out rc
  th_run "$H" sync
  used=$(used_mib slot00)
  [[ "$used" -gt 100 ]] || { t_fail "slot00 uses ${used} MiB: not the base image's files"; return 1; }
  out=$(sos resource -d "$((used + 64))M" 0 2>&1) || { t_fail "resource -d: $out"; return 1; }
  assert_contains "$out" "disk $((used + 64))M (persisted; disk limit applied)" "resource -d reports it" || return 1
  out=$(inslot 0 'dd if=/dev/zero of=/root/big bs=1M count=160 conv=fsync 2>&1'); rc=$?
  printf 'rc %s: %s\n' "$rc" "$out"
  ((rc != 0)) || { t_fail "a 160 MiB write past a 64 MiB margin succeeded"; return 1; }
  assert_contains "$out" "Disk quota exceeded" "the slot sees EDQUOT" || return 1
  # the other slot is not held by slot00's limit
  assert_ok inslot 1 'dd if=/dev/zero of=/root/mine bs=1M count=32 conv=fsync status=none' || return 1
  assert_ok inslot 0 'rm -f /root/big && sync' || return 1
  out=$(sos resource -d "$((used + 400))M" 0 2>&1) || { t_fail "resource -d: $out"; return 1; }
  assert_contains "$(th_run "$H" cat /etc/slot-os/slot00.toml)" "disk = \"$((used + 400))M\"" "the raised limit persisted" || return 1
  assert_ok inslot 0 'dd if=/dev/zero of=/root/big bs=1M count=160 conv=fsync status=none' || return 1
  assert_ok inslot 0 'rm -f /root/big' || return 1
}

test_the_slots_root_cannot_lift_its_limit() {
  local before out
  before=$(qgroup_of slot00)
  # root in the slot is an unprivileged user of the host: btrfs's quota ioctls need the
  # host's CAP_SYS_ADMIN
  out=$(inslot 0 'btrfs qgroup limit none / 2>&1; echo rc=$?')
  assert_contains "$out" "rc=1" "btrfs qgroup limit in the slot fails ($out)" || return 1
  out=$(inslot 0 'btrfs quota disable / 2>&1; echo rc=$?')
  assert_contains "$out" "rc=1" "btrfs quota disable in the slot fails ($out)" || return 1
  assert_eq "$before" "$(qgroup_of slot00)" "the limit is unchanged" || return 1
}

test_list_and_info_show_used_and_limit() {
  local out limit
  limit=$(th_sh "$H" 'sed -n "s/^disk = \"\(.*\)\"/\1/p" /etc/slot-os/slot00.toml')
  out=$(sos list 0)
  printf '%s\n' "$out"
  [[ "$out" =~ [0-9.]+[MG]/[0-9.]+[MG] ]] || { t_fail "list shows no used/limit: $out"; return 1; }
  assert_eq "$(sos resource --json 0 | jq -r '.[0].disk_limit')" "$(sos list --json 0 | jq -r '.[0].disk.limit')" "list --json: the limit of the config" || return 1
  out=$(sos info 0)
  assert_contains "$out" "Disk: " "info has a Disk line" || return 1
  assert_contains "$out" "(used/limit)" "info says what the numbers are" || return 1
  assert_eq "$(sos list --json 0 | jq -r '.[0].disk.used')" "$(sos info --json 0 | jq -r '.disk_usage.used')" "info --json and list --json agree" || return 1
  echo "slot00 limit $limit"
}

test_rename_and_restore_keep_the_limit() {
  local out q old
  assert_ok sos stop 1 || return 1
  assert_ok sos resource -d 1G 1 || return 1
  assert_ok sos rename 1 web || return 1
  q=$(qgroup_of web)
  assert_contains "$q" " $((1 << 30))" "renamed slot keeps its qgroup limit ($q)" || return 1
  out=$(sos backup web b1 2>&1) || { t_fail "backup: $out"; return 1; }
  old=${q%% *}
  out=$(sos backup-restore web web.b1 2>&1) || { t_fail "restore: $out"; return 1; }
  printf '%s\n' "$out"
  q=$(qgroup_of web)
  [[ "${q%% *}" != "$old" ]] || { t_fail "restore made no new subvolume ($q)"; return 1; }
  assert_contains "$q" " $((1 << 30))" "the restored root has the limit ($q)" || return 1
  # the replaced subvolume's qgroup does not linger (destroyed, or dropped by the kernel
  # once its cleaner has freed the subvolume)
  th_wait_for 60 th_sh "$H" '! btrfs qgroup show /var/lib/machines | grep -q "^$1 "' "$old" ||
    { t_fail "qgroup $old of the replaced root is still there"; return 1; }
  assert_ok sos backup-del web.b1 || return 1
  assert_ok sos rename web slot01 || return 1
}

test_plain_ext4_refuses_disk_and_changes_nothing() {
  local before after out rc
  th_sh "$H" ': > /etc/slot-os/plain.toml && systemctl daemon-reload' || return 1
  before=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml')
  out=$(sos resource -d 100M plain 2>&1); rc=$?
  printf '%s\n' "$out"
  assert_eq 2 "$rc" "resource -d on a plain ext4 is bad input" || return 1
  assert_contains "$out" "tune2fs -O project,quota /dev/loop" "says how to enable project quotas" || return 1
  assert_contains "$out" "prjquota" "names the mount option" || return 1
  assert_contains "$out" "nothing was changed" "says nothing changed" || return 1
  after=$(th_sh "$H" 'sha256sum /etc/slot-os/*.toml')
  assert_eq "$before" "$after" "config unchanged" || return 1
  # written by hand (or Ansible): check and start refuse it, and so does the unit itself
  th_sh "$H" 'echo "disk = \"100M\"" > /etc/slot-os/plain.toml && systemctl daemon-reload' || return 1
  out=$(sos check 2>&1); rc=$?
  assert_eq 2 "$rc" "check" || return 1
  assert_contains "$out" "plain.toml: disk: " "check names the slot's file" || return 1
  assert_contains "$out" "tune2fs -O project,quota" "check says how" || return 1
  out=$(sos start plain 2>&1); rc=$?
  assert_eq 2 "$rc" "start of a slot whose limit cannot be enforced" || return 1
  assert_contains "$out" "tune2fs" "start says how" || return 1
  assert_eq inactive "$(prop plain ActiveState)" "start changed nothing" || return 1
  assert_exit 1 th_run "$H" systemctl start systemd-nspawn@plain.service || return 1
  assert_contains "$(th_run "$H" journalctl -b -u systemd-nspawn@plain.service --no-pager)" "tune2fs -O project,quota" "the unit's disk-apply refused it too" || return 1
  th_run "$H" systemctl reset-failed systemd-nspawn@plain.service
  th_sh "$H" 'rm /etc/slot-os/plain.toml && systemctl daemon-reload' || return 1
  # build: new slots cloned from a base image whose file system cannot hold [defaults] disk
  th_sh "$H" 'cp /etc/slot-os/slot-os.toml /tmp/host.toml && printf "[defaults]\nimage = \"plain\"\ndisk = \"2G\"\n" > /etc/slot-os/slot-os.toml' || return 1
  before=$(th_sh "$H" 'ls /etc/slot-os /var/lib/machines')
  out=$(sos build 3 2>&1); rc=$?
  assert_eq 2 "$rc" "build onto a file system without quotas" || return 1
  assert_contains "$out" "slot02: " "names the slot" || return 1
  assert_eq "$before" "$(th_sh "$H" 'ls /etc/slot-os /var/lib/machines')" "build changed nothing" || return 1
  th_sh "$H" 'mv /tmp/host.toml /etc/slot-os/slot-os.toml' || return 1
}

test_removing_slots_removes_their_qgroups() {
  local ids=() s q
  for s in slot00 slot01; do
    q=$(qgroup_of "$s")
    ids+=("${q%% *}")
  done
  assert_ok sos stop all || return 1
  out=$(sos build 0 2>&1) || { t_fail "build 0: $out"; return 1; }
  for q in "${ids[@]}"; do
    th_wait_for 60 th_sh "$H" '! btrfs qgroup show /var/lib/machines | grep -q "^$1 "' "$q" ||
      { t_fail "qgroup $q of a removed slot is still there"; return 1; }
  done
}
