# Issue 5 (first part): crash-consistent backup and restore of slots, on ext4 (tar +
# zstd with a recorded SHA-256) and on btrfs (read-only snapshots). These are the "tar"
# engine's backups (issue 13 made restic the default; 62-backup-incremental tests it):
# the hosts here set [backup] engine = "tar".
# releases: bookworm trixie

H=bk
B=bkfs
IMG=""

scenario_setup() {
  th_boot "$H" unified || return 1
  th_copy_slot_image "$H" slot00 || return 1
  th_sh "$H" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && printf "[backup]\nengine = \"tar\"\n" > /etc/slot-os/slot-os.toml && systemctl daemon-reload' || return 1
  IMG=/var/tmp/slot-os-test-btrfs-$$.img
}

scenario_teardown() {
  th_destroy "$H"
  th_destroy "$B" 2>/dev/null || true
  rm -f "$IMG"
  true
}

sos() { th_run "$H" slot-os "$@"; }
inslot() { th_run "$H" slot-os exec 0 -- sh -c "$1"; }

test_backup_of_running_slot_and_restore_preserves_files() {
  assert_ok sos start 0 || return 1
  inslot 'echo precious > /root/f && chown 1234:5678 /root/f && chmod 0640 /root/f && setfattr -n user.test -v hello /root/f && ln /root/f /root/f-link && truncate -s 64M /root/sparse && echo tail >> /root/sparse' || { t_fail "preparing files in the slot"; return 1; }
  local out
  out=$(sos backup 0 b1 2>&1) || { t_fail "backup: $out"; return 1; }
  assert_contains "$out" "slot00.b1: tar.zst backup of slot00, slot frozen for" "backup reports the freeze" || return 1
  assert_eq running "$(th_run "$H" systemctl show -P FreezerState systemd-nspawn@slot00)" "slot thawed after backup" || return 1
  assert_contains "$(sos backup-list)" "slot00.b1" "backup-list" || return 1
  assert_ok sos stop 0 || return 1
  th_sh "$H" 'rm -f /var/lib/machines/slot00/root/f /var/lib/machines/slot00/root/f-link /var/lib/machines/slot00/root/sparse'
  out=$(sos backup-restore 0 slot00.b1 2>&1) || { t_fail "restore: $out"; return 1; }
  assert_ok sos start 0 || return 1
  assert_eq precious "$(inslot 'cat /root/f')" "content" || return 1
  assert_eq "1234:5678 640" "$(inslot 'stat -c "%u:%g %a" /root/f')" "owner and mode" || return 1
  assert_eq hello "$(inslot 'getfattr --only-values -n user.test /root/f')" "xattr" || return 1
  assert_eq "$(inslot 'stat -c %i /root/f')" "$(inslot 'stat -c %i /root/f-link')" "hard link kept" || return 1
  local blocks
  blocks=$(inslot 'du -k /root/sparse | cut -f1')
  [ "$blocks" -lt 1024 ] || { t_fail "sparse file not sparse after restore: ${blocks}K"; return 1; }
  assert_ok sos stop 0 || return 1
}

test_corrupted_backup_is_refused_and_slot_unchanged() {
  local f before after out rc
  f=$(th_sh "$H" 'ls /var/lib/slot-os/backups/slot00.b1.tar.zst')
  th_sh "$H" "printf 'X' | dd of=$f bs=1 seek=4096 conv=notrunc status=none"
  before=$(th_sh "$H" 'ls -i /var/lib/machines/ ; cat /var/lib/machines/slot00/etc/machine-id')
  out=$(sos backup-restore 0 slot00.b1 2>&1); rc=$?
  assert_eq 1 "$rc" "restore of a corrupted backup fails" || return 1
  assert_contains "$out" "is corrupted" "clear message" || return 1
  after=$(th_sh "$H" 'ls -i /var/lib/machines/ ; cat /var/lib/machines/slot00/etc/machine-id')
  assert_eq "$before" "$after" "slot root unchanged" || return 1
  assert_ok sos backup-del slot00.b1 || return 1
  assert_ok th_sh "$H" '! ls /var/lib/slot-os/backups | grep -q b1' || return 1
}

test_killed_backup_leaves_nothing_listed() {
  assert_ok sos start 0 || return 1
  th_sh "$H" 'slot-os backup 0 killed >/dev/null 2>&1 & p=$!; sleep 0.3; kill -9 $p; wait $p' || true
  assert_ok th_sh "$H" '! slot-os backup-list | grep -q killed' || return 1
  # The killed helper had frozen the running slot; the next command thaws it.
  assert_ok sos backup 0 after || return 1
  assert_eq running "$(th_run "$H" systemctl show -P FreezerState systemd-nspawn@slot00)" "slot thawed by the next command" || return 1
  assert_ok sos stop 0 || return 1
  assert_eq "" "$(th_sh "$H" 'ls -A /var/lib/slot-os/backups | grep -e "^\.tmp" -e killed')" "no leftovers after the next command" || return 1
  assert_exit 2 sos backup 0 after || return 1
  assert_exit 2 sos backup 0 Bad/Name || return 1
  assert_exit 2 sos backup-restore 0 nosuchbackup || return 1
  assert_exit 2 sos backup-del nosuchbackup || return 1
}

test_killed_restore_leaves_a_whole_root_that_boots() {
  local delay before
  th_sh "$H" 'echo mark-before > /var/lib/machines/slot00/root/mark' || return 1
  for delay in 0.2 0.6 1.0; do
    th_sh "$H" "slot-os backup-restore 0 slot00.after >/dev/null 2>&1 & p=\$!; sleep $delay; kill -9 \$p; wait \$p" || true
    # Either the old root (with the mark) or the restored one (without), always complete.
    assert_ok th_sh "$H" 'test -s /var/lib/machines/slot00/etc/os-release && test -s /var/lib/machines/slot00/etc/machine-id' || return 1
    assert_ok sos start 0 || return 1
    assert_ok sos stop 0 || return 1
  done
  assert_ok sos backup-restore 0 slot00.after || return 1
  assert_eq "" "$(th_sh "$H" 'test -e /var/lib/machines/slot00/root/mark && echo mark')" "restore completed" || return 1
  # the old root goes to .slot-os-trash-* and a detached rm deletes it
  th_wait_for 60 th_sh "$H" '! ls -A /var/lib/machines | grep -q "^\.slot-os"' || { t_fail "leftovers: $(th_sh "$H" 'ls -A /var/lib/machines')"; return 1; }
  assert_ok sos start 0 || return 1
  assert_ok sos stop 0 || return 1
}

test_scheduled_backup_units_report_progress_and_keep_n() {
  local u=slot-os-backup@slot00.service out
  assert_ok th_run "$H" systemd-analyze verify --man=no "$u" slot-os-backup@slot00.timer || return 1
  th_sh "$H" "mkdir -p /run/systemd/system/$u.d && printf '[Service]\nEnvironment=SLOT_OS_BACKUP_KEEP=2\n' > /run/systemd/system/$u.d/keep.conf && systemctl daemon-reload" || return 1
  assert_ok sos backup 0 manual || return 1
  assert_ok sos start 0 || return 1
  # While it copies and streams, the unit's status shows the progress slot-os reports (sd_notify).
  assert_ok th_run "$H" systemctl start --no-block "$u" || return 1
  th_wait_for 20 th_sh "$H" "systemctl show -P StatusText $u | grep -q -e 'backed up [0-9]* MB' -e 'backing up slot00' -e 'copying slot00'" \
    || { t_fail "no progress in StatusText: $(th_run "$H" systemctl show -P StatusText "$u")"; return 1; }
  th_wait_for 60 th_sh "$H" "systemctl show -P ActiveState $u | grep -qx inactive" || { t_fail "scheduled backup did not finish"; return 1; }
  assert_eq success "$(th_run "$H" systemctl show -P Result "$u")" "first scheduled backup" || return 1
  sleep 1
  assert_ok th_run "$H" systemctl start "$u" || return 1
  sleep 1
  assert_ok th_run "$H" systemctl start "$u" || return 1
  out=$(sos backup-list)
  assert_eq 2 "$(grep -c '^slot00\.auto-' <<<"$out")" "keeps 2 automatic backups: $out" || return 1
  assert_contains "$out" "slot00.manual" "other backups are not touched by retention" || return 1
  assert_contains "$(th_run "$H" journalctl -u "$u" --no-pager)" "deleted (keeping 2)" "retention deleted the oldest" || return 1
  assert_eq running "$(th_run "$H" systemctl show -P FreezerState systemd-nspawn@slot00)" "slot thawed" || return 1
  assert_ok th_run "$H" systemctl enable --now slot-os-backup@slot00.timer || return 1
  assert_contains "$(th_run "$H" systemctl list-timers --all --no-pager)" "slot-os-backup@slot00.timer" "timer scheduled" || return 1
  assert_ok sos stop 0 || return 1
  assert_ok sos backup-del slot00.manual || return 1
}

test_btrfs_snapshot_backup_freezes_under_100ms() {
  th_pre_boot_hook() {
    truncate -s 4G "$IMG" && mkfs.btrfs -q -f "$IMG" >/dev/null && mkdir -p "$2/var/lib/machines" && mount -o loop "$IMG" "$2/var/lib/machines" \
      && mkdir -p "$2/var/lib/slot-os" && ln -s /var/lib/machines/.backups "$2/var/lib/slot-os/backups" && mkdir -p "$2/var/lib/machines/.backups"
  }
  th_boot "$B" unified || return 1
  unset -f th_pre_boot_hook
  th_sh "$B" 'mkdir -p /etc/slot-os && printf "[backup]\nengine = \"tar\"\n" > /etc/slot-os/slot-os.toml' || return 1
  th_run "$B" slot-os make-base-image >/dev/null || { t_fail "make-base-image"; return 1; }
  th_run "$B" slot-os build 1 >/dev/null || { t_fail "build 1"; return 1; }
  assert_ok th_run "$B" slot-os start 0 || return 1
  local out ms best= i
  # The best of three: the freeze window is the implementation's; other test hosts running
  # beside this one (the suite runs two at a time) only ever add to it.
  for i in 1 2 3; do
    out=$(th_run "$B" slot-os backup 0 "snap$i" 2>&1) || { t_fail "backup: $out"; return 1; }
    assert_contains "$out" "snapshot backup" "btrfs snapshot used" || return 1
    ms=$(printf '%s' "$out" | sed -n 's/.*frozen for \([0-9.]*\) ms.*/\1/p')
    echo "    btrfs backup $i froze the slot for $ms ms"
    if [[ -z "$best" ]] || awk -v m="$ms" -v b="$best" 'BEGIN { exit !(m < b) }'; then best=$ms; fi
  done
  awk -v m="$best" 'BEGIN { exit !(m < 100) }' || { t_fail "freeze took $best ms at best (>= 100)"; return 1; }
  th_run "$B" slot-os backup-del slot00.snap2 >/dev/null && th_run "$B" slot-os backup-del slot00.snap3 >/dev/null || { t_fail "backup-del"; return 1; }
  th_run "$B" slot-os exec 0 -- sh -c 'echo after > /root/after'
  assert_ok th_run "$B" slot-os stop 0 || return 1
  out=$(th_run "$B" slot-os backup-restore 0 slot00.snap1 2>&1) || { t_fail "restore: $out"; return 1; }
  assert_ok th_run "$B" slot-os start 0 || return 1
  assert_exit 1 th_run "$B" slot-os exec 0 -- test -e /root/after || return 1
  assert_ok th_run "$B" slot-os stop 0 || return 1
  out=$(th_run "$B" slot-os backup-restore 0 slot-os 2>&1) || { t_fail "reset to base image: $out"; return 1; }
  assert_ok th_run "$B" slot-os start 0 || return 1
}
