# Issue 10 items 4 and 5: nothing in a slot's root or in an export file reaches the host.
# Two suites on one test host: hostile export files (crafted from a real export: unpacked,
# modified, repacked in the same layout) and a hostile slot (its root plants symlinks,
# then backup, restore, rename, export and net-add run). After each, the test host's
# /etc and /root (every path, type, mode, owner, symlink target and file hash) must be
# exactly as before.

H=hostile

scenario_setup() {
  th_boot "$H" unified || return 1
  th_copy_slot_image "$H" slot01 || return 1
  # slot00 only exists to be exported: a small root (export and import never boot it)
  # keeps every crafted file a few kilobytes. /dev has the nodes a real root has.
  th_sh "$H" 'r=/var/lib/machines/slot00 && mkdir -p $r/etc $r/var/lib/dbus $r/root $r/usr/bin $r/dev &&
    echo slot00 > $r/etc/hostname && echo 0123456789abcdef0123456789abcdef > $r/etc/machine-id &&
    ln -s /etc/machine-id $r/var/lib/dbus/machine-id && echo secret > $r/root/f &&
    for d in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0" "console 5 1" "ptmx 5 2"; do
      set -- $d && mknod -m 666 $r/dev/$1 c $2 $3 || exit 1; done' || return 1
  th_sh "$H" 'mkdir -p /etc/slot-os /root/target && echo host-file > /root/target/file &&
    : > /etc/slot-os/slot00.toml && : > /etc/slot-os/slot01.toml && systemctl daemon-reload' || return 1
  # The base export every hostile one is made from, unpacked once.
  th_sh "$H" 'slot-os export 0 /var/tmp/base.slot >/dev/null && mkdir /var/tmp/base &&
    tar --zstd -xpf /var/tmp/base.slot -C /var/tmp/base' || return 1
}

sos() { th_run "$H" slot-os "$@"; }

# Everything about the host's /etc and /root that a write, chmod, chown, unlink or
# symlink swap would change. /etc/slot-os is compared separately (imports write there).
host_state() {
  th_sh "$H" 'find /etc /root -xdev -path /etc/slot-os -prune -o -printf "%p %y %m %U:%G %l\n" | LC_ALL=C sort
    find /etc /root -xdev -path /etc/slot-os -prune -o -type f -print0 | xargs -0 sha256sum | LC_ALL=C sort'
}

# hostile_export NAME 'python code': /var/tmp/NAME.slot, the base export with the
# changes the code makes. The code gets `add(info, data)` (append a crafted member),
# `members` (the base's TarInfo list, editable in place) and `base` (the unpacked tree).
hostile_export() {
  th_run "$H" python3 - "$1" "$2" <<'EOF'
import io, subprocess, sys, tarfile
name, code = sys.argv[1], sys.argv[2]
base = "/var/tmp/base"
src = tarfile.open(fileobj=io.BytesIO(subprocess.run(
    ["zstd", "-dc", "/var/tmp/base.slot"], check=True, capture_output=True).stdout))
members = src.getmembers()
extra = []
def add(info, data=b""):
    info.size = len(data)
    extra.append((info, data))
def member(name, **kw):
    t = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(t, k, v)
    return t
exec(code)
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as dst:
    for m in members:
        dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    for m, data in extra:
        dst.addfile(m, io.BytesIO(data))
z = subprocess.run(["zstd", "-q", "-c"], input=out.getvalue(), check=True, capture_output=True).stdout
# The end-to-end checksum trailer (a zstd skippable frame), as an attacker can add it too.
import hashlib, struct
trailer = struct.pack("<II", 0x184D2A50, 48) + b"slot-os-sha256\0\0" + hashlib.sha256(z).digest()
with open(f"/var/tmp/{name}.slot", "wb") as f:
    f.write(z + trailer)
EOF
}

# toml_swap TEXT: python code for hostile_export that replaces slot.toml by TEXT.
toml_swap() {
  printf '%s\n' "text = b'$1'" '
for m in members:
    if m.name == "slot-os-export/slot.toml":
        m.size = len(text)
        orig = src.extractfile
        def extractfile(x, orig=orig, m=m):
            return io.BytesIO(text) if x is m else orig(x)
        src.extractfile = extractfile'
}

# same_host BEFORE AFTER WHAT: the two host_state outputs are equal; else the lines that differ.
same_host() {
  [[ "$1" == "$2" ]] && return 0
  t_fail "$3: the host changed: $(diff <(echo "$1") <(echo "$2") | grep '^[<>]' | head -8 | tr '\n' ';')"
  return 1
}

# Config files and images: a refused import leaves both lists as they were.
slot_state() { th_sh "$H" 'ls -A /etc/slot-os /var/lib/machines'; }

# import_leaves_host_alone NAME [IMPORT ARGS...]: imports /var/tmp/NAME.slot as slot09
# and checks the host is unchanged; sets LAST_RC, LAST_OUT, SLOTS_BEFORE.
import_leaves_host_alone() {
  local name=$1 before after
  shift
  drop_slot09
  SLOTS_BEFORE=$(slot_state)
  before=$(host_state)
  LAST_OUT=$(sos import "/var/tmp/$name.slot" slot09 "$@" 2>&1); LAST_RC=$?
  after=$(host_state)
  echo "    import $name: rc=$LAST_RC: $LAST_OUT"
  same_host "$before" "$after" "importing $name" || return 1
  # failing is fine, failing halfway is not
  [[ $LAST_RC -eq 0 ]] || assert_eq "$SLOTS_BEFORE" "$(slot_state)" "failed import $name left nothing" || return 1
}

# A refused import changes nothing at all: no config, no image, no temporary left.
assert_refused_cleanly() {
  [[ $LAST_RC -ne 0 ]] || { t_fail "$1: import succeeded"; return 1; }
  assert_eq "$SLOTS_BEFORE" "$(slot_state)" "$1: no config, image or temporary left" || return 1
}

# A neutralised import may succeed, but only inside the slot; it is removed again.
drop_slot09() {
  th_sh "$H" 'rm -f /etc/slot-os/slot09.toml; rm -rf /var/lib/machines/slot09; systemctl daemon-reload'
}

# ---- suite 1: hostile export files

test_export_unchanged_imports() {
  # The control: the base export, repacked by the same code with no change, imports.
  hostile_export plain 'pass' || return 1
  local LAST_RC LAST_OUT SLOTS_BEFORE
  import_leaves_host_alone plain || return 1
  assert_eq 0 "$LAST_RC" "the unmodified export imports" || return 1
  assert_eq slot09 "$(th_run "$H" cat /var/lib/machines/slot09/etc/hostname)" "identity set" || return 1
  drop_slot09
}

test_export_etc_symlink_to_host_dir() {
  # rootfs/etc is a symlink to a host directory: identity files must not land there.
  hostile_export etc-link '
for m in members:
    if m.name == "rootfs/etc":
        m.type, m.linkname, m.mode = tarfile.SYMTYPE, "/root/target", 0o777
members[:] = [m for m in members if not m.name.startswith("rootfs/etc/")]' || return 1
  local LAST_RC LAST_OUT SLOTS_BEFORE
  import_leaves_host_alone etc-link || return 1
  assert_eq "file" "$(th_run "$H" ls /root/target)" "nothing written into the host dir" || return 1
  drop_slot09
}

test_export_etc_symlink_followed_by_members() {
  # The classic: member etc -> /root/target, then etc/passwd. Refused by the extraction.
  hostile_export etc-link-members '
add(member("rootfs/usr/hostlink", type=tarfile.SYMTYPE, linkname="/root/target", mode=0o777))
add(member("rootfs/usr/hostlink/passwd", mode=0o644), b"pwned\n")' || return 1
  local LAST_RC LAST_OUT SLOTS_BEFORE
  import_leaves_host_alone etc-link-members || return 1
  assert_refused_cleanly "symlinked dir then member below it" || return 1
}

test_export_var_lib_dbus_symlink_to_etc() {
  # rootfs/var/lib/dbus -> /etc: removing var/lib/dbus/machine-id must not delete the host's.
  hostile_export dbus-link '
members[:] = [m for m in members if not m.name.startswith("rootfs/var/lib/dbus/")]
for m in members:
    if m.name == "rootfs/var/lib/dbus":
        m.type, m.linkname, m.mode = tarfile.SYMTYPE, "/etc", 0o777' || return 1
  local LAST_RC LAST_OUT SLOTS_BEFORE
  import_leaves_host_alone dbus-link || return 1
  assert_ok th_run "$H" test -s /etc/machine-id || return 1
  drop_slot09
}

test_export_absolute_and_dotdot_members() {
  # Each is refused by name before tar writes it (bad input, exit 2), not repaired: GNU tar
  # alone would strip the leading / and go on.
  local LAST_RC LAST_OUT SLOTS_BEFORE
  hostile_export dotdot '
add(member("rootfs/../../../../../root/target/dotdot", mode=0o644), b"pwned\n")' || return 1
  import_leaves_host_alone dotdot || return 1
  assert_refused_cleanly "a .. member" || return 1
  assert_eq 2 "$LAST_RC" "a .. member: bad input" || return 1
  assert_contains "$LAST_OUT" 'rootfs/../../../../../root/target/dotdot" has a `..` component' "names the member" || return 1
  hostile_export absolute '
add(member("/root/target/absolute", mode=0o644), b"pwned\n")
add(member("/rootfs/root/absolute-in-rootfs", mode=0o644), b"stays inside\n")' || return 1
  import_leaves_host_alone absolute || return 1
  assert_refused_cleanly "absolute members" || return 1
  assert_eq 2 "$LAST_RC" "absolute members: bad input" || return 1
  assert_contains "$LAST_OUT" '"/root/target/absolute" is an absolute path' "names the member" || return 1
  hostile_export hardlink '
add(member("rootfs/root/hl", type=tarfile.LNKTYPE, linkname="/root/target/file"))
add(member("rootfs/root/hl2", type=tarfile.LNKTYPE, linkname="../../../../../root/target/file"))' || return 1
  import_leaves_host_alone hardlink || return 1
  assert_refused_cleanly "hard links out of the tree" || return 1
  assert_eq 2 "$LAST_RC" "hard links out of the tree: bad input" || return 1
  assert_contains "$LAST_OUT" 'is a hard link to "/root/target/file"' "names the link" || return 1
  assert_eq 1 "$(th_run "$H" stat -c %h /root/target/file)" "no hard link to the host file" || return 1
}

test_export_device_node_is_refused() {
  hostile_export device '
add(member("rootfs/root/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666))' || return 1
  local LAST_RC LAST_OUT SLOTS_BEFORE
  import_leaves_host_alone device || return 1
  assert_eq 2 "$LAST_RC" "device node: bad input" || return 1
  assert_contains "$LAST_OUT" "/root/sda" "message names the device" || return 1
  assert_refused_cleanly "a block device" || return 1
}

test_export_config_asking_for_host_access() {
  hostile_export greedy "$(toml_swap 'privileged = true\nautostart = true\n[[bind]]\nsource = "/"\ntarget = "/host"\n')" || return 1
  local LAST_RC LAST_OUT SLOTS_BEFORE
  import_leaves_host_alone greedy || return 1
  assert_eq 2 "$LAST_RC" "host access refused as bad input" || return 1
  assert_contains "$LAST_OUT" "privileged" "names privileged" || return 1
  assert_contains "$LAST_OUT" "bind" "names the bind" || return 1
  assert_contains "$LAST_OUT" "--trust-config" "says how to allow it" || return 1
  assert_refused_cleanly "privileged + bind of /" || return 1
  # the admin who trusts the file gets what it asks for
  local out
  drop_slot09
  out=$(sos import /var/tmp/greedy.slot slot09 --trust-config 2>&1) || { t_fail "trusted import: $out"; return 1; }
  assert_contains "$(th_run "$H" cat /etc/slot-os/slot09.toml)" "privileged = true" "trusted: kept" || return 1
  drop_slot09
}

test_export_autostart_alone_is_not_carried_over() {
  hostile_export autostart "$(toml_swap 'autostart = true\n')" || return 1
  local out
  drop_slot09
  out=$(sos import /var/tmp/autostart.slot slot09 2>&1) || { t_fail "import: $out"; return 1; }
  assert_contains "$out" "autostart" "says autostart was not kept" || return 1
  assert_not_contains "$(th_run "$H" cat /etc/slot-os/slot09.toml)" "autostart" "autostart dropped" || return 1
  assert_eq "" "$(th_sh "$H" 'ls /run/systemd/generator*/machines.target.wants 2>/dev/null | grep slot09')" "not started at boot" || return 1
  drop_slot09
}

test_from_tar_hostile_tarball() {
  # make-base-image --from-tar: tmp -> a host dir (mount points are chmod-ed), and
  # var/lib/dbus -> /etc (identity removes var/lib/dbus/machine-id).
  th_sh "$H" 'rm -rf /var/tmp/ft && mkdir -p /var/tmp/ft/etc /var/tmp/ft/var/lib && ln -s /root/target /var/tmp/ft/tmp &&
    ln -s /etc /var/tmp/ft/var/lib/dbus && ln -s /root/target /var/tmp/ft/etc/slot-os && tar -C /var/tmp/ft -cf /var/tmp/ft.tar .' || return 1
  local before after out rc
  before=$(host_state)
  out=$(sos make-base-image --from-tar /var/tmp/ft.tar --name hostilebase 2>&1); rc=$?
  after=$(host_state)
  echo "    make-base-image: rc=$rc: $out"
  same_host "$before" "$after" "make-base-image --from-tar" || return 1
  th_sh "$H" 'rm -rf /var/lib/machines/hostilebase /var/lib/machines/.slot-os-new-hostilebase'
  # A tarball with absolute member names (tar -P) is refused by name, not stripped.
  th_sh "$H" 'tar -cPf /var/tmp/ft-abs.tar /root/target/file' || return 1
  out=$(sos make-base-image --from-tar /var/tmp/ft-abs.tar --name hostileabs 2>&1); rc=$?
  echo "    make-base-image (absolute members): rc=$rc: $out"
  assert_eq 2 "$rc" "absolute members: bad input" || return 1
  assert_contains "$out" '"/root/target/file" is an absolute path' "names the member" || return 1
  assert_eq "" "$(th_sh "$H" 'ls -A /var/lib/machines | grep hostileabs')" "no image left" || return 1
}

# ---- suite 2: a hostile slot

test_slot_plants_symlinks_then_backup_and_restore() {
  # What slot01's root user can do in its own tree (here while it is stopped; the same
  # as `ln -s` from inside): the host's /etc through var/lib/dbus, identity files that
  # point at host files.
  assert_ok sos start 1 || return 1
  assert_ok sos exec 1 -- sh -c 'rm -rf /var/lib/dbus && ln -s /etc /var/lib/dbus &&
    ln -sf /root/target/owned /etc/hostname && rm -f /etc/hosts && ln -s /root/target/hosts /etc/hosts && rm -f /etc/machine-id && ln -s /etc/machine-id /etc/machine-id && sync' || return 1
  assert_ok sos stop 1 || return 1
  local before after out
  before=$(host_state)
  out=$(sos backup 1 b1 2>&1) || { t_fail "backup: $out"; return 1; }
  out=$(sos backup-restore 1 slot01.b1 2>&1); echo "    restore: rc=$?: $out"
  after=$(host_state)
  same_host "$before" "$after" "backup and restore" || return 1
  assert_ok th_run "$H" test -s /etc/machine-id || return 1
  [[ "$(th_run "$H" cat /var/lib/machines/slot01/etc/machine-id 2>/dev/null)" != "$(th_run "$H" cat /etc/machine-id)" ]] \
    || { t_fail "the host's machine-id was copied into the slot"; return 1; }
}

test_slot_rename_export_netadd_stay_inside() {
  local before after out rc
  # restore rewrote the identity files; plant the hostname link again, as the slot could
  th_sh "$H" 'ln -sfn /root/target/owned /var/lib/machines/slot01/etc/hostname && ln -sfn /root/target/hosts /var/lib/machines/slot01/etc/hosts' || return 1
  before=$(host_state)
  out=$(sos rename slot01 slot02 2>&1); rc=$?; echo "    rename: rc=$rc: $out"
  assert_eq 0 "$rc" "rename" || return 1
  assert_eq "" "$(th_run "$H" ls /root/target | grep -v '^file$')" "rename wrote no host file" || return 1
  out=$(sos export slot02 /var/tmp/slot02.slot 2>&1); rc=$?; echo "    export: rc=$rc: $out"
  assert_eq 0 "$rc" "export" || return 1
  out=$(sos br-add 31 192.168.31.1/24 2>&1); rc=$?; echo "    br-add: rc=$rc: $out"
  out=$(sos net-add slot02 192.168.31.2/24 31 2>&1); rc=$?; echo "    net-add: rc=$rc: $out"
  assert_eq 0 "$rc" "net-add" || return 1
  after=$(host_state)
  same_host "$before" "$after" "rename, export, net-add" || return 1
  # and its export, imported, is no threat either
  drop_slot09
  before=$(host_state)
  out=$(sos import /var/tmp/slot02.slot slot09 2>&1); rc=$?; echo "    import: rc=$rc: $out"
  after=$(host_state)
  same_host "$before" "$after" "importing the hostile slot" || return 1
  drop_slot09
}

test_slot_os_release_links_do_not_reach_the_host() {
  # The slot's root points its os-release at /dev/zero (a device: read without limit, the
  # helper would eat the host's memory) and a FIFO (a read would hang): `update` must
  # refuse both quickly and read nothing outside the slot.
  local out rc
  assert_ok sos start slot02 || return 1
  th_run "$H" slot-os exec slot02 -- sh -c 'ln -sfn /dev/zero /etc/os-release && rm -f /usr/lib/os-release && mkfifo /usr/lib/os-release' \
    || { t_fail "planting the links in slot02"; return 1; }
  out=$(th_run "$H" timeout 20 slot-os update slot02 --dry-run 2>&1); rc=$?; echo "    update: rc=$rc: $out"
  assert_eq 1 "$rc" "update fails for that slot (not killed by the timeout, 124)" || return 1
  assert_contains "$out" "not a regular file" "says why" || return 1
  assert_ok sos stop slot02 || return 1
}
