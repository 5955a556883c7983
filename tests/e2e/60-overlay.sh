# Issue 13 (first part): copy-on-write slots on ext4. Overlay roots (a read-only version of
# the base image below each slot's own upper directory), idmapped layers for the slots'
# user namespaces, base versions and rebase, kill -9 safety, and every command on overlay
# slots (build, start/stop, list/info/check, backup/restore/reset, export/import, rename).
# releases: bookworm trixie

H=ovl

scenario_setup() {
  th_boot "$H" unified || return 1
  th_copy_slot_image "$H" slot-os || return 1
}

scenario_teardown() {
  # SLOT_OS_TEST_KEEP=1 leaves the host running for a look inside.
  [[ -n ${SLOT_OS_TEST_KEEP:-} ]] || th_destroy "$H"
}

sos() { th_run "$H" slot-os "$@"; }
inslot() { th_run "$H" slot-os exec "$1" -- sh -c "$2"; }
M=/var/lib/machines
L=/var/lib/machines/.slot-os
# First host UID of overlay slot N's user namespace: 0x70000000 + N * 65536.
base_of() { echo $((0x70000000 + $1 * 65536)); }
pin() { th_run "$H" cat "$L/slot/$1/base"; }
booted() { # booted SLOT: its systemd finished booting
  local st
  st=$(th_run "$H" systemctl -M "$1" is-system-running 2>&1)
  case "$st" in running|degraded) return 0 ;; esac
  t_fail "$1 is not booted: $st"; return 1
}
# Mounts of the test host's own mount table: no staging mount may ever be left there.
staging_mounts() { th_sh "$H" 'grep -c " /run/slot-os/stage" /proc/self/mountinfo || true'; }
overlay_mounts_on() { th_sh "$H" 'awk -v mp="$1" '"'"'$5 == mp && / - overlay /'"'"' /proc/self/mountinfo | wc -l' "$1"; }

test_build_10_makes_overlay_slots_on_ext4() {
  local out rc t0 ms
  assert_eq ef53 "$(th_run "$H" stat -f -c %t $M)" "the machines dir is ext4 (magic 0xef53)" || return 1
  t0=$(date +%s%N)
  out=$(sos build 10 2>&1); rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "build 10 (overlay): $ms ms"
  assert_eq 0 "$rc" "build 10 ($out)" || return 1
  assert_contains "$out" "storage: overlay (auto:" "auto chose overlay" || return 1
  assert_contains "$out" "slot-os: new read-only version slot-os@1 for overlay slots" || return 1
  local n
  for n in 00 01 02 03 04 05 06 07 08 09; do
    assert_contains "$(th_run "$H" cat /etc/slot-os/slot$n.toml)" 'storage = "overlay"' "slot$n.toml records it" || return 1
    assert_eq "slot-os@1" "$(pin slot$n)" "slot$n pinned" || return 1
    assert_eq 0 "$(th_run "$H" find $M/slot$n -mindepth 1 | grep -c .)" "slot$n's mount point is empty while stopped" || return 1
  done
  assert_eq "slot-os@1" "$(th_sh "$H" 'ls /var/lib/machines/.slot-os/lower | grep @')" "one version for ten slots" || return 1
  # The generator's view: the fixed range and the root unit.
  local nspawn
  nspawn=$(th_run "$H" cat /run/systemd/nspawn/slot01.nspawn)
  assert_contains "$nspawn" "PrivateUsers=$(base_of 1):65536" || return 1
  assert_contains "$nspawn" "PrivateUsersOwnership=off" || return 1
  assert_eq "slot-os-root@slot01.service" "$(th_run "$H" systemctl show -P Requires systemd-nspawn@slot01.service | tr ' ' '\n' | grep slot-os-root)" "Requires= the root unit" || return 1
  out=$(sos check 2>&1) || { t_fail "check: $out"; return 1; }
  assert_contains "$out" "storage: new slots get overlay" "check says what auto picks" || return 1
  # build again: nothing to do, no new version
  out=$(sos build 10 2>&1) || { t_fail "second build: $out"; return 1; }
  assert_contains "$out" "already built" || return 1
}

test_overlay_slots_boot() {
  local out rc s
  out=$(sos start 0 1 2 2>&1); rc=$?
  assert_eq 0 "$rc" "start 0 1 2 ($out)" || return 1
  for s in slot00 slot01 slot02; do
    booted "$s" || return 1
    assert_eq "$s" "$(inslot $s hostname)" "$s's hostname" || return 1
    assert_eq 1 "$(overlay_mounts_on $M/$s)" "one overlay on $M/$s" || return 1
  done
  assert_eq 0 "$(staging_mounts)" "no staging mount in the host's table" || return 1
  # machined still sees the images
  assert_contains "$(th_run "$H" machinectl list-images --no-legend)" "slot00" "machinectl list-images" || return 1
  out=$(sos list 2>&1)
  printf '%s\n' "$out" | grep -qE "^ 0 : RUNNING +slot00 .* slot-os +overlay( |$)" || { t_fail "list has no storage column: $out"; return 1; }
  assert_eq overlay "$(sos list --json 1 | jq -r '.[0].storage')" "list --json storage" || return 1
  assert_eq slot-os@1 "$(sos list --json 1 | jq -r '.[0].base_version')" "list --json base_version" || return 1
  out=$(sos info 2)
  assert_contains "$out" "Storage: overlay on slot-os@1, upper $L/slot/slot02/upper, user namespace $(base_of 2)..$(( $(base_of 2) + 65535 ))" "info" || return 1
  assert_eq "$(base_of 2)" "$(sos info 2 --json | jq -r .uid_base)" "info --json uid_base" || return 1
}

test_files_are_private_to_each_slot() {
  inslot slot00 'echo mine > /root/mine && echo changed > /etc/motd && rm /etc/issue' || { t_fail "writing in slot00"; return 1; }
  assert_ok inslot slot00 'test -f /root/mine && ! test -e /etc/issue' || return 1
  assert_ok inslot slot01 '! test -e /root/mine && test -e /etc/issue' || return 1
  assert_ok th_sh "$H" '! test -e /var/lib/machines/slot-os/root/mine && test -e /var/lib/machines/slot-os/etc/issue' || return 1
  assert_ok th_sh "$H" '! test -e /var/lib/machines/.slot-os/lower/slot-os@1/root/root/mine' || return 1
  assert_eq mine "$(th_run "$H" cat $L/slot/slot00/upper/root/mine)" "in slot00's upper" || return 1
  # the deleted base file is a whiteout: a 0/0 character device in the upper
  assert_eq "character special file 0,0" "$(th_run "$H" stat -c '%F %t,%T' $L/slot/slot00/upper/etc/issue)" "whiteout" || return 1
}

test_ids_in_the_slot_on_disk_and_on_the_host() {
  inslot slot00 'useradd -u 1000 -m alice && su alice -s /bin/sh -c "echo a > /home/alice/f"' || { t_fail "user alice in slot00"; return 1; }
  assert_eq "0:0" "$(inslot slot00 'stat -c %u:%g /etc/passwd')" "root's files in the slot" || return 1
  assert_eq "1000:1000" "$(inslot slot00 'stat -c %u:%g /home/alice/f')" "a user's file in the slot" || return 1
  # on disk, the upper is unshifted: 0:0 and the slot's own IDs
  assert_eq "0:0" "$(th_run "$H" stat -c %u:%g $L/slot/slot00/upper/etc/passwd)" "upper on disk" || return 1
  assert_eq "1000:1000" "$(th_run "$H" stat -c %u:%g $L/slot/slot00/upper/home/alice/f)" "a user's file on disk" || return 1
  local odd
  odd=$(th_sh "$H" 'find /var/lib/machines/.slot-os/slot/slot00/upper \( -uid +65535 -o -gid +65535 \) -printf "%u:%g %p\n"')
  assert_eq "" "$odd" "no shifted or host-root-mapped ID on disk" || return 1
  # the host sees the merged tree shifted by the slot's base; two slots, two ranges
  local b0 b1
  b0=$(base_of 0); b1=$(base_of 1)
  assert_eq "$b0:$b0" "$(th_run "$H" stat -c %u:%g $M/slot00/etc/passwd)" "host view of slot00" || return 1
  assert_eq "$((b0 + 1000))" "$(th_run "$H" stat -c %u $M/slot00/home/alice/f)" "host view of alice's file" || return 1
  assert_eq "$b1:$b1" "$(th_run "$H" stat -c %u:%g $M/slot01/etc/passwd)" "host view of slot01" || return 1
  # the slots' processes run in those ranges
  local pid
  pid=$(th_run "$H" machinectl show slot01 -p Leader --value)
  assert_eq "0 $b1 65536" "$(th_sh "$H" "awk '{print \$1, \$2, \$3}' /proc/$pid/uid_map")" "slot01's uid_map" || return 1
}

test_a_base_update_does_not_change_a_running_slot() {
  # An admin changes the base image in place (as systemd-nspawn -D or machinectl shell would)
  th_sh "$H" 'echo news > /var/lib/machines/slot-os/etc/base-news && echo "updated base" > /var/lib/machines/slot-os/etc/motd && echo v2 >> /var/lib/machines/slot-os/etc/debian_version' || return 1
  assert_ok inslot slot01 '! test -e /etc/base-news' || return 1
  assert_eq "$(th_run "$H" cat $L/lower/slot-os@1/root/etc/debian_version)" "$(inslot slot01 'cat /etc/debian_version')" "slot01 keeps version 1's file" || return 1
  assert_ok th_sh "$H" '! grep -q v2 /var/lib/machines/.slot-os/lower/slot-os@1/root/etc/debian_version' || return 1
}

test_rebase_keeps_the_slots_changes_and_shows_the_new_base() {
  local out rc
  out=$(sos rebase 0 2>&1); rc=$?
  assert_eq 2 "$rc" "rebase of a running slot is refused ($out)" || return 1
  assert_contains "$out" "slot00: active; stop it first" || return 1
  assert_eq slot-os@1 "$(pin slot00)" "pin unchanged" || return 1
  assert_ok sos stop 0 || return 1
  out=$(sos rebase 0 2>&1) || { t_fail "rebase 0: $out"; return 1; }
  assert_contains "$out" "slot-os: new read-only version slot-os@2" || return 1
  assert_contains "$out" "slot00: rebased from slot-os@1 to slot-os@2" || return 1
  assert_ok sos start 0 || return 1
  booted slot00 || return 1
  assert_eq news "$(inslot slot00 'cat /etc/base-news')" "the new base's file" || return 1
  assert_contains "$(inslot slot00 'cat /etc/debian_version')" "v2" "the new base's change" || return 1
  assert_eq mine "$(inslot slot00 'cat /root/mine')" "the slot's own file" || return 1
  assert_eq changed "$(inslot slot00 'cat /etc/motd')" "the slot's own change wins over the base's" || return 1
  assert_ok inslot slot00 '! test -e /etc/issue' || return 1
  assert_ok inslot slot00 'id alice' || return 1
  assert_eq slot-os@1 "$(pin slot01)" "slot01 not rebased" || return 1
  assert_ok th_run "$H" test -d $L/lower/slot-os@1 || return 1
}

test_kill_9_of_the_mount_step_leaves_a_slot_that_starts() {
  local d n
  for d in 0.02 0.05 0.08 0.12 0.16 0.2 0.3 0.5; do
    th_run "$H" timeout -s KILL "$d" slot-os root-mount slot03 >/dev/null 2>&1
    assert_eq 0 "$(staging_mounts)" "no staging mount left after a kill at ${d}s" || return 1
    n=$(overlay_mounts_on $M/slot03)
    [[ $n -le 1 ]] || { t_fail "$n mounts on slot03 after a kill at ${d}s"; return 1; }
  done
  # a mount left by a complete run with the slot stopped is replaced, not stacked
  assert_ok sos root-mount slot03 || return 1
  assert_ok sos start 3 || return 1
  booted slot03 || return 1
  assert_eq 1 "$(overlay_mounts_on $M/slot03)" "exactly one root under the slot" || return 1
  # while the slot runs, no second root can be mounted under it
  assert_exit 2 sos root-mount slot03 || return 1
  assert_ok sos stop 3 || return 1
  assert_eq 0 "$(overlay_mounts_on $M/slot03)" "unmounted with the slot" || return 1
}

test_kill_9_of_rebase_leaves_a_slot_that_starts() {
  th_sh "$H" 'echo v3 > /var/lib/machines/slot-os/etc/base-news' || return 1
  local d
  # Killed while a new version is copied, or while slots are re-pinned.
  for d in 0.3 0.8 1.5; do
    th_run "$H" timeout -s KILL "$d" slot-os rebase 4 5 >/dev/null 2>&1
    case "$(pin slot04)" in slot-os@1|slot-os@3) ;; *) t_fail "slot04 pinned to '$(pin slot04)' after a kill at ${d}s"; return 1 ;; esac
    assert_ok sos start 4 || return 1
    booted slot04 || return 1
    assert_ok sos stop 4 || return 1
  done
  local out
  out=$(sos rebase 4 5 2>&1) || { t_fail "rebase after the kills: $out"; return 1; }
  assert_eq slot-os@3 "$(pin slot04)" "slot04 on the newest version" || return 1
  assert_eq slot-os@3 "$(pin slot05)" "slot05 on the newest version" || return 1
  assert_eq 0 "$(th_sh "$H" 'ls -a /var/lib/machines/.slot-os/lower | grep -c "^\.new-"')" "no half-made version left" || return 1
  assert_ok sos start 4 || return 1
  assert_eq v3 "$(inslot slot04 'cat /etc/base-news')" "slot04 sees version 3" || return 1
  assert_ok sos stop 4 || return 1
}

test_backup_and_restore_of_an_overlay_slot() {
  inslot slot02 'echo precious > /root/p && rm /etc/issue && rm -rf /etc/cron.daily && mkdir /etc/cron.daily && echo own > /etc/cron.daily/only-mine && setfattr -n user.t -v x /root/p' || { t_fail "preparing slot02"; return 1; }
  local out id keys
  id=$(inslot slot02 'cat /etc/machine-id')
  keys=$(inslot slot02 'cat /etc/ssh/ssh_host_ed25519_key.pub')
  out=$(sos backup 2 b1 2>&1) || { t_fail "backup: $out"; return 1; }
  # restic, the default engine: the upper goes into the host's repository, tagged with its base version
  assert_contains "$out" "slot02.b1: restic backup of slot02" || return 1
  assert_contains "$out" "slot frozen for" || return 1
  assert_contains "$(th_sh "$H" 'RESTIC_PASSWORD_FILE=/var/lib/slot-os/backup.key restic -r /var/lib/slot-os/backups/restic snapshots --no-cache --tag name=slot02.b1 --json' | jq -r '.[0].tags | join(" ")')" "lower=slot-os@1" "the snapshot names its base version" || return 1
  local meta
  meta=$(th_run "$H" cat /var/lib/slot-os/backups/slot02.b1.json)
  assert_eq overlay "$(printf '%s' "$meta" | jq -r .storage)" "backup metadata: storage" || return 1
  assert_eq slot-os@1 "$(printf '%s' "$meta" | jq -r .lower)" "backup metadata: base version" || return 1
  # only the upper is captured: far smaller than the base
  local size
  size=$(printf '%s' "$meta" | jq -r .size)
  [[ $size -lt 20000000 ]] || { t_fail "backup of the upper is $size bytes"; return 1; }
  inslot slot02 'rm /root/p && echo back > /etc/issue && rm /etc/cron.daily/only-mine' || return 1
  assert_ok sos stop 2 || return 1
  out=$(sos backup-restore 2 slot02.b1 2>&1) || { t_fail "restore: $out"; return 1; }
  assert_contains "$out" "(overlay on slot-os@1)" || return 1
  assert_ok sos start 2 || return 1
  booted slot02 || return 1
  assert_eq precious "$(inslot slot02 'cat /root/p')" "file back" || return 1
  assert_eq x "$(inslot slot02 'getfattr --only-values -n user.t /root/p')" "xattr back" || return 1
  assert_ok inslot slot02 '! test -e /etc/issue' || return 1
  assert_eq only-mine "$(inslot slot02 'ls /etc/cron.daily')" "opaque directory kept (the base's entries stay hidden)" || return 1
  assert_eq "$id" "$(inslot slot02 'cat /etc/machine-id')" "machine-id kept" || return 1
  assert_eq "$keys" "$(inslot slot02 'cat /etc/ssh/ssh_host_ed25519_key.pub')" "SSH host key kept" || return 1
  # reset to the base image: an empty upper on the base's current version, new keys
  assert_ok sos stop 2 || return 1
  out=$(sos backup-restore 2 slot-os 2>&1) || { t_fail "reset: $out"; return 1; }
  assert_contains "$out" "(overlay on slot-os@3)" || return 1
  assert_ok sos start 2 || return 1
  assert_ok inslot slot02 '! test -e /root/p && test -e /etc/issue' || return 1
  assert_eq v3 "$(inslot slot02 'cat /etc/base-news')" "the base's current version" || return 1
  assert_eq "$id" "$(inslot slot02 'cat /etc/machine-id')" "machine-id kept by a reset" || return 1
  [[ "$keys" != "$(inslot slot02 'cat /etc/ssh/ssh_host_ed25519_key.pub')" ]] || { t_fail "a reset keeps the old SSH host key"; return 1; }
  assert_eq slot-os@3 "$(pin slot02)" || return 1
}

test_export_and_import_of_an_overlay_slot() {
  local out
  inslot slot02 'echo exported > /root/e && rm /etc/issue' || return 1
  out=$(sos export 2 /var/tmp/s2.tar.zst 2>&1) || { t_fail "export: $out"; return 1; }
  assert_contains "$out" "slot frozen meanwhile" || return 1
  # the merged tree, as on disk: no whiteout devices, files owned 0:0
  assert_eq 0 "$(th_sh "$H" 'zstd -dc /var/tmp/s2.tar.zst | tar -tv | grep -c "^c.* 0,0 "')" "no whiteouts in the export" || return 1
  assert_contains "$(th_sh "$H" 'zstd -dc /var/tmp/s2.tar.zst | tar -tv --numeric-owner | grep " rootfs/etc/passwd$"')" " 0/0 " "unshifted owners" || return 1
  out=$(sos import /var/tmp/s2.tar.zst slot12 2>&1) || { t_fail "import: $out"; return 1; }
  assert_contains "$(th_run "$H" cat /etc/slot-os/slot12.toml)" 'storage = "copy"' "an import is a plain image" || return 1
  assert_ok sos start slot12 || return 1
  booted slot12 || return 1
  assert_eq exported "$(inslot slot12 'cat /root/e')" || return 1
  assert_ok inslot slot12 '! test -e /etc/issue && test -e /etc/base-news' || return 1
  assert_eq "0:0" "$(th_run "$H" stat -c %u:%g $M/slot12/etc/passwd)" "plain image, unshifted on disk" || return 1
  assert_eq copy "$(sos list --json slot12 | jq -r '.[0].storage')" || return 1
  assert_ok sos stop slot12 || return 1
  th_run "$H" rm -f /var/tmp/s2.tar.zst
}

test_rename_of_an_overlay_slot() {
  local out
  assert_ok sos stop 2 || return 1
  out=$(sos rename 2 web 2>&1) || { t_fail "rename: $out"; return 1; }
  assert_ok th_run "$H" test -d $L/slot/web/upper || return 1
  assert_ok th_sh "$H" '! test -e /var/lib/machines/slot02 && ! test -e /var/lib/machines/.slot-os/slot/slot02' || return 1
  assert_ok sos start web || return 1
  booted web || return 1
  assert_eq web "$(inslot web hostname)" "hostname follows" || return 1
  assert_eq exported "$(inslot web 'cat /root/e')" "files follow" || return 1
  local pid
  pid=$(th_run "$H" machinectl show web -p Leader --value)
  assert_eq "0 $(base_of 2) 65536" "$(th_sh "$H" "awk '{print \$1, \$2, \$3}' /proc/$pid/uid_map")" "same number, same range" || return 1
  assert_ok sos stop web || return 1
}

test_hostile_links_in_an_overlay_slot_stay_inside() {
  local before after out
  th_sh "$H" 'mkdir -p /root/target && echo host > /root/target/owned' || return 1
  # Listed without times: slot-os itself changes /etc/slot-os (rename, restore) while this
  # runs, and ls shows that directory's mtime to the minute: a minute ending in between
  # makes the listings differ (one CI run failed here; its message cut off the lines).
  before=$(th_sh "$H" 'sha256sum /etc/machine-id /etc/hostname /root/target/owned; ls -la --time-style=+ /etc /root/target')
  assert_ok sos start 1 || return 1
  inslot slot01 'ln -sf /root/target/owned /etc/hostname && rm -rf /var/lib/dbus && ln -s /etc /var/lib/dbus && rm /etc/machine-id && ln -s /etc/machine-id /etc/machine-id' || { t_fail "planting links"; return 1; }
  out=$(sos backup 1 h1 2>&1) || { t_fail "backup: $out"; return 1; }
  assert_ok sos stop 1 || return 1
  out=$(sos rename 1 hostile 2>&1) || { t_fail "rename: $out"; return 1; }
  out=$(sos backup-restore hostile slot01.h1 2>&1) || { t_fail "restore: $out"; return 1; }
  out=$(sos backup-restore hostile slot-os 2>&1) || { t_fail "reset: $out"; return 1; }
  after=$(th_sh "$H" 'sha256sum /etc/machine-id /etc/hostname /root/target/owned; ls -la --time-style=+ /etc /root/target')
  assert_eq "$before" "$after" "the host's files are untouched" || return 1
  assert_ok sos start hostile || return 1
  assert_eq hostile "$(inslot hostile hostname)" || return 1
  assert_ok sos stop hostile || return 1
  assert_ok sos backup-del slot01.h1 || return 1
}

test_versions_no_one_uses_are_deleted() {
  local out
  assert_ok th_run "$H" test -d $L/lower/slot-os@1 || return 1
  # slots 6-9, 3 and 0's old pin... move everything still on version 1 or 2 to the newest
  assert_ok sos stop all || return 1
  out=$(sos rebase all 2>&1); echo "$out"
  assert_ok th_run "$H" test -d $L/lower/slot-os@1 || { t_fail "version 1 deleted while backup slot02.b1 needs it"; return 1; }
  out=$(sos backup-del slot02.b1 2>&1) || { t_fail "backup-del: $out"; return 1; }
  assert_contains "$out" "deleted: slot-os@1" "the backup was its last user" || return 1
  assert_eq "slot-os@3" "$(th_sh "$H" 'ls /var/lib/machines/.slot-os/lower | grep @ | tr "\n" " " | sed "s/ $//"')" "only the version in use is left" || return 1
}

test_create_and_remove_of_an_overlay_slot() {
  # create makes its one slot through the same path as build (storage::provision): the
  # backend auto gives, recorded in the new file; remove deletes its layer and mount point.
  local out rc
  out=$(sos create spare --number 30 2>&1); rc=$?
  assert_eq 0 "$rc" "create spare ($out)" || return 1
  assert_contains "$out" "overlay root on a version of slot-os" "create made an overlay root" || return 1
  assert_contains "$(th_run "$H" cat /etc/slot-os/spare.toml)" 'storage = "overlay"' "spare.toml records it" || return 1
  th_run "$H" test -d $L/slot/spare/upper || { t_fail "no layer for spare"; return 1; }
  assert_eq 0 "$(th_sh "$H" 'ls /var/lib/machines | grep -c "slot-os-new"')" "no temporary image left" || return 1
  out=$(sos start spare 2>&1) || { t_fail "start spare: $out"; return 1; }
  booted spare || return 1
  assert_eq spare "$(inslot spare hostname)" "spare's hostname" || return 1
  assert_eq "$(th_run "$H" slot-os info --json spare | jq -r .storage)" overlay "info says overlay" || return 1
  out=$(sos create spare 2>&1) || { t_fail "create spare again: $out"; return 1; }
  assert_contains "$out" "exists; nothing to change" "create is idempotent for an overlay slot" || return 1
  out=$(sos remove spare 2>&1) || { t_fail "remove spare: $out"; return 1; }
  th_run "$H" test ! -e $L/slot/spare || { t_fail "spare's layer left after remove"; return 1; }
  th_run "$H" test ! -e $M/spare || { t_fail "spare's mount point left after remove"; return 1; }
  th_run "$H" test ! -e /etc/slot-os/spare.toml || { t_fail "spare.toml left after remove"; return 1; }
  assert_eq 0 "$(overlay_mounts_on $M/spare)" "spare's root unmounted" || return 1
}

test_build_0_removes_overlay_slots() {
  local out
  out=$(sos build 0 2>&1) || { t_fail "build 0: $out"; return 1; }
  assert_eq 0 "$(th_sh "$H" 'ls /var/lib/machines | grep -c "^slot[0-9]"')" "no slotNN image or mount point left" || return 1
  assert_eq 0 "$(th_sh "$H" 'ls /var/lib/machines/.slot-os/slot | grep -c "^slot[0-9]"')" "no slotNN layer left" || return 1
  assert_eq 0 "$(th_sh "$H" 'grep -c " - overlay .* upperdir=/run/slot-os/stage/slot[0-9]" /proc/self/mountinfo || true')" "no slotNN root mounted" || return 1
}
