# Issue 5: a slot (root + TOML) exported to one file on test host A, imported and booted
# on test host B (fog05's migration).

# on fog05's two kinds of servers: A runs Debian 12, B Debian 13 (and a slot goes back).

A=exa
B=exb

scenario_setup() {
  th_boot "$A" unified bookworm || return 1
  th_boot "$B" unified trixie || return 1
  th_copy_slot_image "$A" slot00 || return 1
  th_sh "$A" 'mkdir -p /etc/slot-os && printf "memory = \"512M\"\n[environment]\nROLE = \"moved\"\n" > /etc/slot-os/slot00.toml && systemctl daemon-reload' || return 1
}

scenario_teardown() {
  th_destroy "$A"
  th_destroy "$B"
}

test_export_running_slot() {
  assert_ok th_run "$A" slot-os start 0 || return 1
  th_run "$A" slot-os exec 0 -- sh -c 'echo travelled > /root/moved && chown 4321:8765 /root/moved && setfattr -n user.k -v v /root/moved' \
    || { t_fail "writing the file in slot00"; return 1; }
  local out
  out=$(th_run "$A" slot-os export 0 /var/tmp/slot00.slot 2>&1) || { t_fail "export: $out"; return 1; }
  echo "    $out"
  assert_contains "$out" "slot00: exported to /var/tmp/slot00.slot" "export reports" || return 1
  assert_contains "$out" "frozen meanwhile" "running slot frozen while captured" || return 1
  assert_eq running "$(th_run "$A" systemctl show -P FreezerState systemd-nspawn@slot00)" "thawed after export" || return 1
  assert_eq "" "$(th_sh "$A" 'ls -A /var/tmp | grep "^\.slot00"; ls /run/slot-os/frozen 2>/dev/null')" "no temporaries or freeze markers left" || return 1
  assert_exit 2 th_run "$A" slot-os export 0 /var/tmp/slot00.slot || return 1
  assert_exit 2 th_run "$A" slot-os export 0 /nonexistent/x.slot || return 1
  cp "$(th_root "$A")/var/tmp/slot00.slot" "$(th_root "$B")/var/tmp/slot00.slot" || return 1
}

test_import_on_second_host_boots_same_slot() {
  local out
  out=$(th_run "$B" slot-os import /var/tmp/slot00.slot 2>&1) || { t_fail "import: $out"; return 1; }
  assert_contains "$out" "slot00: imported" "import reports" || return 1
  assert_eq "$(th_run "$A" cat /etc/slot-os/slot00.toml)" "$(th_run "$B" cat /etc/slot-os/slot00.toml)" "same TOML on B" || return 1
  assert_ok th_run "$B" slot-os start 0 || return 1
  assert_eq running "$(th_run "$B" systemctl show -P SubState systemd-nspawn@slot00)" "slot00 runs on B" || return 1
  assert_eq travelled "$(th_run "$B" slot-os exec 0 -- cat /root/moved)" "file travelled" || return 1
  assert_eq "12 13" "$(th_run "$B" slot-os exec 0 -- sh -c '. /etc/os-release; echo $VERSION_ID') $(th_sh "$B" '. /etc/os-release; echo $VERSION_ID')" "a Debian 12 slot on the Debian 13 host" || return 1
  assert_eq "4321:8765 v" "$(th_run "$B" slot-os exec 0 -- sh -c 'echo $(stat -c %u:%g /root/moved) $(getfattr --only-values -n user.k /root/moved)')" "owner and xattr" || return 1
  assert_contains "$(th_run "$B" slot-os exec 0 -- cat /proc/1/environ | tr '\0' '\n')" "ROLE=moved" "environment from the TOML" || return 1
  assert_eq "$(th_run "$A" cat /var/lib/machines/slot00/etc/machine-id)" "$(th_run "$B" cat /var/lib/machines/slot00/etc/machine-id)" "moved slot keeps its machine-id" || return 1
}

test_import_under_new_name_and_refusals() {
  assert_exit 2 th_run "$B" slot-os import /var/tmp/slot00.slot || return 1   # slot00 exists
  assert_exit 2 th_run "$B" slot-os import /var/tmp/slot00.slot bad/name || return 1
  assert_exit 2 th_run "$B" slot-os import /etc/hostname slot09 || return 1   # not an export
  local out
  out=$(th_run "$B" slot-os import /var/tmp/slot00.slot slot05 2>&1) || { t_fail "import as slot05: $out"; return 1; }
  assert_contains "$(th_run "$B" slot-os list)" "slot05" "slot05 listed" || return 1
  [[ "$(th_run "$B" cat /var/lib/machines/slot05/etc/machine-id)" != "$(th_run "$B" cat /var/lib/machines/slot00/etc/machine-id)" ]] \
    || { t_fail "a copy under a new name needs its own machine-id"; return 1; }
  assert_eq slot05 "$(th_run "$B" cat /var/lib/machines/slot05/etc/hostname)" "hostname" || return 1
  assert_ok th_run "$B" slot-os start 5 || return 1
  assert_ok th_run "$B" slot-os stop 0 5 || return 1
}

test_damaged_export_is_refused_and_nothing_changes() {
  local before after rc out
  th_sh "$B" 'cp /var/tmp/slot00.slot /var/tmp/bad.slot && size=$(stat -c %s /var/tmp/bad.slot) && printf X | dd of=/var/tmp/bad.slot bs=1 seek=$((size / 2)) conv=notrunc status=none' || return 1
  before=$(th_sh "$B" 'ls -A /etc/slot-os /var/lib/machines')
  out=$(th_run "$B" slot-os import /var/tmp/bad.slot slot07 2>&1); rc=$?
  assert_eq 1 "$rc" "import of a damaged file fails" || return 1
  assert_contains "$out" "may be damaged" "clear message" || return 1
  after=$(th_sh "$B" 'ls -A /etc/slot-os /var/lib/machines')
  assert_eq "$before" "$after" "nothing changed" || return 1
}

test_export_from_13_imports_and_boots_on_12() {
  # a slot made on the Debian 13 host (from its own release) travels back to the Debian 12 one
  th_copy_slot_image "$B" slot03 || return 1
  th_sh "$B" ': > /etc/slot-os/slot03.toml && systemctl daemon-reload' || return 1
  assert_ok th_run "$B" slot-os start 3 || return 1
  th_run "$B" slot-os exec 3 -- sh -c 'echo from-13 > /root/back' || { t_fail "writing the file in slot03"; return 1; }
  local out
  out=$(th_run "$B" slot-os export 3 /var/tmp/slot03.slot 2>&1) || { t_fail "export on B: $out"; return 1; }
  assert_ok th_run "$B" slot-os stop 3 || return 1
  cp "$(th_root "$B")/var/tmp/slot03.slot" "$(th_root "$A")/var/tmp/slot03.slot" || return 1
  out=$(th_run "$A" slot-os import /var/tmp/slot03.slot 2>&1) || { t_fail "import on A: $out"; return 1; }
  assert_ok th_run "$A" slot-os start 3 || return 1
  assert_eq running "$(th_run "$A" systemctl show -P SubState systemd-nspawn@slot03)" "slot03 runs on A" || return 1
  assert_eq from-13 "$(th_run "$A" slot-os exec 3 -- cat /root/back)" "file travelled" || return 1
  assert_eq 13 "$(th_run "$A" slot-os exec 3 -- sh -c '. /etc/os-release; echo $VERSION_ID')" "a Debian 13 slot on the Debian 12 host" || return 1
  assert_eq 12 "$(th_run "$A" sh -c '. /etc/os-release; echo $VERSION_ID')" "A is Debian 12" || return 1
  assert_ok th_run "$A" slot-os stop 3 || return 1
}

# Issue 14: `export N -` | `import - NAME`: one stream from host to host, read once, checked
# end to end by the SHA-256 trailer; nothing is stored on the way.
test_export_streams_into_import_on_another_host() {
  assert_ok th_run "$A" slot-os start 0 || return 1
  th_run "$A" slot-os exec 0 -- sh -c 'echo streamed > /root/streamed' || { t_fail "writing in slot00"; return 1; }
  local before_a out rc
  before_a=$(th_sh "$A" 'ls -A /var/tmp /run/slot-os')
  out=$( { th_run "$A" slot-os export 0 - | th_run "$B" slot-os import - slot06; } 2>&1); rc=$?
  echo "    $out"
  assert_eq 0 "$rc" "export | import" || return 1
  assert_contains "$out" "slot00: exported to standard output" "export reports on stderr" || return 1
  assert_contains "$out" "slot06: imported from standard input" "import reports" || return 1
  assert_eq "$before_a" "$(th_sh "$A" 'ls -A /var/tmp /run/slot-os')" "nothing stored on the exporting host" || return 1
  assert_eq "" "$(th_sh "$B" 'ls -A /var/tmp /var/lib/machines | grep -E "^\.(slot-os-import|.*tmp-)"')" "no temporaries on the importing host" || return 1
  assert_eq running "$(th_run "$A" systemctl show -P FreezerState systemd-nspawn@slot00)" "thawed after the stream" || return 1
  assert_ok th_run "$B" slot-os start 6 || return 1
  assert_eq streamed "$(th_run "$B" slot-os exec 6 -- cat /root/streamed)" "the file travelled" || return 1
  assert_ok th_run "$B" slot-os stop 6 || return 1
}

# damaged_stream 'python filter' NAME: export slot00 from A through the filter into import on B.
damaged_stream() {
  local filter=$1 name=$2
  { th_run "$A" slot-os export 0 - 2>/dev/null | python3 -c "$filter" | th_run "$B" slot-os import - "$name"; } 2>&1
}

test_damaged_or_cut_streams_change_nothing() {
  local before out rc
  before=$(th_sh "$B" 'ls -A /etc/slot-os /var/lib/machines')
  # One bit flipped in the middle (zstd's frame checksum or the trailer catches it), in the
  # trailer's digest (only the trailer catches it), and a stream cut short.
  out=$(damaged_stream 'import sys; d = bytearray(sys.stdin.buffer.read()); d[len(d) // 2] ^= 1; sys.stdout.buffer.write(d)' slot07); rc=$?
  echo "    middle: rc=$rc: $out"
  [[ $rc -ne 0 ]] || { t_fail "a damaged stream was imported"; return 1; }
  assert_eq "$before" "$(th_sh "$B" 'ls -A /etc/slot-os /var/lib/machines')" "middle: nothing changed" || return 1
  out=$(damaged_stream 'import sys; d = bytearray(sys.stdin.buffer.read()); d[-1] ^= 1; sys.stdout.buffer.write(d)' slot07); rc=$?
  echo "    trailer: rc=$rc: $out"
  assert_eq 1 "$rc" "a wrong digest fails" || return 1
  assert_contains "$out" "does not match its trailer" "says the checksum did not match" || return 1
  assert_eq "$before" "$(th_sh "$B" 'ls -A /etc/slot-os /var/lib/machines')" "trailer: nothing changed" || return 1
  out=$(damaged_stream 'import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[:len(d) - 100])' slot07); rc=$?
  echo "    cut: rc=$rc: $out"
  [[ $rc -ne 0 ]] || { t_fail "a cut stream was imported"; return 1; }
  assert_eq "$before" "$(th_sh "$B" 'ls -A /etc/slot-os /var/lib/machines')" "cut: nothing changed" || return 1
}

test_export_files_of_format_1_still_import() {
  # A file from the slot-os before streams: format 1 in its manifest, no trailer.
  th_sh "$B" 'set -e; rm -rf /var/tmp/f1 && mkdir /var/tmp/f1 && zstd -dc /var/tmp/slot00.slot | tar -xpf - -C /var/tmp/f1 --numeric-owner --xattrs --xattrs-include="*"
    sed -i "s/\"format\": 2/\"format\": 1/" /var/tmp/f1/slot-os-export/manifest.json
    grep -q "\"format\": 1" /var/tmp/f1/slot-os-export/manifest.json
    tar -C /var/tmp/f1 --numeric-owner --xattrs --xattrs-include="*" -cf - slot-os-export rootfs | zstd -q -c > /var/tmp/f1.slot' || return 1
  local out
  out=$(th_run "$B" slot-os import /var/tmp/f1.slot slot08 2>&1) || { t_fail "format 1: $out"; return 1; }
  assert_ok th_run "$B" test -s /var/lib/machines/slot08/etc/os-release || return 1
  # The same file claiming format 2 has lost its trailer: refused.
  th_sh "$B" 'sed -i "s/\"format\": 1/\"format\": 2/" /var/tmp/f1/slot-os-export/manifest.json &&
    tar -C /var/tmp/f1 --numeric-owner -cf - slot-os-export rootfs | zstd -q -c > /var/tmp/f2.slot' || return 1
  local rc
  out=$(th_run "$B" slot-os import /var/tmp/f2.slot slot09 2>&1); rc=$?
  assert_eq 2 "$rc" "format 2 without a trailer" || return 1
  assert_contains "$out" "without its checksum trailer" "says why" || return 1
  th_sh "$B" 'rm -rf /var/tmp/f1 /var/tmp/f1.slot /var/tmp/f2.slot'
}
