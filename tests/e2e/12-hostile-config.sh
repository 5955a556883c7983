# Issue 10 items 1-3: config values cannot inject settings into generated files.
# Hard but legal values reach the slot exactly (read back from inside it); injection
# attempts are refused by `slot-os check` and skipped by the generator, and what is
# generated stays clean for `systemd-analyze verify`.
# Sourced by tests/run-e2e.sh, which provides th_* and the assertion helpers.

H=hostile

scenario_setup() {
  th_boot "$H" unified || return 1
  th_copy_slot_image "$H" slot20 || return 1
  th_sh "$H" 'mkdir -p /etc/slot-os "/srv/with space" && echo here > "/srv/with space/marker"'
}

scenario_teardown() {
  th_destroy "$H"
}

put() { # put FILE CONTENT: write a file inside the test host
  printf '%s\n' "$2" | th_run "$H" sh -c "cat > '$1'"
}

leader() { th_run "$H" machinectl show "$1" -p Leader --value; }

# The slot's command line, one argument a line; the arguments as the config gave them.
HARD_ARGS=(/bin/sh -c 'sleep infinity & wait' 'x" B=inj C=a"' 'back\slash' "it's" 'a  b' '' 'ünï=cöde ✓' 'trail\' '100% $HOME')

test_hard_legal_values_reach_the_slot_exactly() {
  put /etc/slot-os/slot20.toml 'boot = false
command = ["/bin/sh", "-c", "sleep infinity & wait", "x\" B=inj C=a\"", "back\\slash", "it'"'"'s", "a  b", "", "ünï=cöde ✓", "trail\\", "100% $HOME"]
[environment]
QUOTES = '"'"'x" B=inj C=a"'"'"'
BACK = '"'"'C:\dir\'"'"'
SPACES = "  two  spaces  "
APOS = "it'"'"'s"
EQ = "a=b=c"
UNI = "ünïcödé ✓"
DOLLAR = "$HOME %i"
[[bind]]
source = "/srv/with space"
target = "/mnt/with space"
read_only = true'
  local out
  out=$(th_run "$H" slot-os check 2>&1) || { t_fail "check refused legal values: $out"; return 1; }
  assert_ok th_run "$H" systemctl daemon-reload || return 1
  out=$(th_run "$H" systemd-analyze verify --man=no systemd-nspawn@slot20.service 2>&1) \
    || { t_fail "systemd-analyze verify: $out"; return 1; }
  assert_ok th_run "$H" machinectl start slot20 || return 1
  local pid
  th_wait_for 30 th_sh "$H" '[ -n "$(machinectl show slot20 -p Leader --value 2>/dev/null)" ]' || { t_fail "slot20 has no leader"; return 1; }
  pid=$(leader slot20)
  # Parameters=: the slot's PID 1 has exactly the configured argv.
  local want got
  want=$(printf '%s\n' "${HARD_ARGS[@]}")
  th_wait_for 20 th_sh "$H" 'tr "\0" "\n" < /proc/$1/cmdline | grep -q "^trail"' "$pid" || { t_fail "slot20 command line not readable"; return 1; }
  got=$(th_sh "$H" 'tr "\0" "\n" < /proc/$1/cmdline' "$pid")
  assert_eq "$want" "$got" "the slot's argv is the config's command" || return 1
  # Environment=: each variable arrives whole, nothing extra is split off.
  local kv
  for kv in 'QUOTES=x" B=inj C=a"' 'BACK=C:\dir\' 'SPACES=  two  spaces  ' "APOS=it's" 'EQ=a=b=c' 'UNI=ünïcödé ✓' 'DOLLAR=$HOME %i'; do
    assert_ok th_sh "$H" 'tr "\0" "\n" < /proc/$1/environ | grep -Fxq -- "$2"' "$pid" "$kv" || { t_fail "missing in /proc/1/environ: $kv"; return 1; }
  done
  if th_sh "$H" 'tr "\0" "\n" < /proc/$1/environ | grep -q "^B=inj\|^C=a"' "$pid"; then
    t_fail "a quote split one variable into several"; return 1
  fi
  # Bind= with a space in both paths: present, read-only.
  assert_eq here "$(th_sh "$H" 'cat "/proc/$1/root/mnt/with space/marker"' "$pid")" "bind with spaces" || return 1
  if th_sh "$H" 'nsenter -t "$1" -m touch "/mnt/with space/x" 2>/dev/null' "$pid"; then
    t_fail "read-only bind is writable"; return 1
  fi
  assert_ok th_run "$H" machinectl terminate slot20 || return 1
  th_wait_for 30 th_sh "$H" '[ "$(systemctl show -P ActiveState systemd-nspawn@slot20)" != active ]' || { t_fail "slot20 did not stop"; return 1; }
}

# check_refuses FILE KEY: `slot-os check` exits 2 and names the file and the key.
check_refuses() {
  local out rc
  out=$(th_run "$H" slot-os check 2>&1); rc=$?
  assert_eq 2 "$rc" "check exit code for $1 ($out)" || return 1
  assert_contains "$out" "/etc/slot-os/$1: $2: " "check names file and key" || return 1
}

test_injections_in_slot_files_are_refused_and_skipped() {
  # Each file asks, through one value, for a privileged slot with the host's / bound in.
  put /etc/slot-os/bad1.toml 'number = 31
[environment]
A = "x\rPrivateUsers=no\r[Files]\rBind=/:/host\r#"'
  check_refuses bad1.toml environment.A || return 1
  put /etc/slot-os/bad2.toml 'number = 32
[environment]
A = "x\u0000PrivateUsers=no\u0000[Files]\u0000Bind=/:/host"'
  check_refuses bad2.toml environment.A || return 1
  put /etc/slot-os/bad3.toml 'number = 33
boot = false
command = ["/bin/sh", "-c", "x\rPrivateUsers=no\r[Files]\rBind=/:/host\r#"]'
  check_refuses bad3.toml 'command[2]' || return 1
  put /etc/slot-os/bad4.toml 'number = 34
[[bind]]
source = "/x\r[Files]\rBind=/:/host"
target = "/y"'
  check_refuses bad4.toml 'bind[0].source' || return 1
  put /etc/slot-os/bad5.toml 'number = 35
[[bind]]
source = "/srv"
target = "//"'
  check_refuses bad5.toml 'bind[0].target' || return 1
  put /etc/slot-os/bad6.toml 'number = 36
[[bind]]
source = "/srv/x\\"
target = "/y"'
  check_refuses bad6.toml 'bind[0].source' || return 1

  assert_ok th_run "$H" systemctl daemon-reload || return 1
  local n j
  j=$(th_run "$H" journalctl -b --no-pager -o cat -t slot-os-generator 2>/dev/null)
  for n in 1 2 3 4 5 6; do
    assert_ok th_run "$H" test ! -e "/run/systemd/nspawn/bad$n.nspawn" || { t_fail "bad$n.nspawn written"; return 1; }
    assert_ok th_run "$H" test ! -e "/run/systemd/generator/systemd-nspawn@bad$n.service.d" || { t_fail "bad$n drop-in written"; return 1; }
    assert_contains "$j" "slot bad$n skipped" "generator logs the skipped file" || return 1
  done
  if th_sh "$H" 'grep -rl "PrivateUsers=no\|/host" /run/systemd/nspawn'; then
    t_fail "an injected setting reached a .nspawn file"; return 1
  fi
  local out
  out=$(th_run "$H" systemd-analyze verify --man=no systemd-nspawn@slot20.service 2>&1) \
    || { t_fail "systemd-analyze verify after the skips: $out"; return 1; }
  th_sh "$H" 'rm -f /etc/slot-os/bad*.toml'
}

test_injections_in_the_host_file_are_refused() {
  # slot21 boots an image not named after it, so its drop-in names the machines dir.
  put /etc/slot-os/slot21.toml 'image = "slot20"'
  local machines
  # (ExecStartPre= alone is legal now: NAT slots run `slot-os zone-ready` before they start.)
  for machines in '"/x\r[Service]\rExecStartPre=/bin/touch /tmp/PWNED\r#"' '"/x\u0000[Service]\u0000ExecStartPre=/bin/touch /tmp/PWNED"' '"/a "' '"/var/lib/m%i"'; do
    put /etc/slot-os/slot-os.toml "[storage]
machines = $machines"
    check_refuses slot-os.toml storage.machines || return 1
    assert_ok th_run "$H" systemctl daemon-reload || return 1
    if th_sh "$H" 'grep -r "ExecStartPre=/bin/touch\|PWNED\|/a " /run/systemd/generator/*.d/'; then
      t_fail "machines = $machines reached a drop-in"; return 1
    fi
    assert_eq "/var/lib/machines/slot20" \
      "$(th_sh "$H" 'grep -o -- "--directory=[^ ]*" /run/systemd/generator/systemd-nspawn@slot21.service.d/50-slot-os.conf | cut -d= -f2')" \
      "the host file was skipped: default machines dir" || return 1
    local out
    out=$(th_run "$H" systemd-analyze verify --man=no systemd-nspawn@slot21.service 2>&1) \
      || { t_fail "systemd-analyze verify: $out"; return 1; }
  done
  local j
  j=$(th_run "$H" journalctl -b --no-pager -o cat -t slot-os-generator 2>/dev/null)
  assert_contains "$j" "host-wide settings skipped" "generator logs the skipped host file" || return 1
  assert_ok th_run "$H" test ! -e /tmp/PWNED || return 1
  th_run "$H" rm -f /etc/slot-os/slot21.toml
}

test_bridge_device_patterns_are_refused() {
  local dev
  for dev in '"e*"' '"!eth0"' '["host0", "eth?"]'; do
    put /etc/slot-os/slot-os.toml "[[bridge]]
number = 1
address = \"10.77.0.1/24\"
device = $dev"
    check_refuses slot-os.toml 'bridge[0].device' || return 1
    assert_ok th_run "$H" systemctl daemon-reload || return 1
    if th_sh "$H" 'grep -l "^Name=.*[*?!]" /run/systemd/network/*slot-os* 2>/dev/null'; then
      t_fail "device = $dev wrote a pattern into a .network file"; return 1
    fi
  done
  th_run "$H" rm -f /etc/slot-os/slot-os.toml
}

# Item 10 in a real systemd: daemon-reload waits for generators.
test_fifo_named_toml_does_not_hold_up_daemon_reload() {
  th_sh "$H" 'mkfifo /etc/slot-os/fifo.toml && ln -sf /dev/zero /etc/slot-os/zero.toml' || return 1
  assert_ok th_run "$H" timeout 60 systemctl daemon-reload || { t_fail "daemon-reload did not return"; return 1; }
  assert_ok th_run "$H" test -f /run/systemd/nspawn/slot20.nspawn || return 1
  local j
  j=$(th_run "$H" journalctl -b --no-pager -o cat -t slot-os-generator 2>/dev/null)
  assert_contains "$j" "/etc/slot-os/fifo.toml: cannot be read: it is a FIFO, not a regular file" "FIFO logged" || return 1
  assert_contains "$j" "/etc/slot-os/zero.toml: cannot be read: it is a symbolic link, not a regular file" "symlink logged" || return 1
  th_run "$H" rm -f /etc/slot-os/fifo.toml /etc/slot-os/zero.toml
}

test_unreadable_config_dir_keeps_generated_files() {
  assert_ok th_run "$H" systemctl daemon-reload || return 1
  local before
  before=$(th_run "$H" cat /run/systemd/nspawn/slot20.nspawn) || return 1
  th_sh "$H" 'mv /etc/slot-os /etc/slot-os.saved && echo not-a-dir > /etc/slot-os' || return 1
  assert_ok th_run "$H" systemctl daemon-reload || return 1
  local after
  after=$(th_run "$H" cat /run/systemd/nspawn/slot20.nspawn 2>&1)
  th_sh "$H" 'rm -f /etc/slot-os && mv /etc/slot-os.saved /etc/slot-os'
  assert_eq "$before" "$after" "slot20.nspawn kept while the config dir cannot be listed" || return 1
  local j
  j=$(th_run "$H" journalctl -b --no-pager -o cat -t slot-os-generator 2>/dev/null)
  assert_contains "$j" "config directory unreadable: generated files left as they are" "logged" || return 1
  assert_ok th_run "$H" systemctl daemon-reload || return 1
}
