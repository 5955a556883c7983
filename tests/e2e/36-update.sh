# Issue 11: `update all` really upgrades. A package built for the test in two versions is
# served from the test host over the slots' NAT network (an apt repository on 172.17.0.1);
# the slots' apt sources point only at it. All traffic stays inside the test host.

H=upd
REPO_PORT=8080

scenario_setup() {
  th_boot "$H" unified || return 1
  th_copy_slot_image "$H" slot00 && th_copy_slot_image "$H" slot01 || return 1
  # The slots' only apt source is the test host's repository (no mirror is reachable here).
  local img
  for img in slot00 slot01; do
    printf 'deb [trusted=yes] http://172.17.0.1:%s/ ./\n' "$REPO_PORT" >"$(th_root "$H")/var/lib/machines/$img/etc/apt/sources.list" || return 1
    rm -f "$(th_root "$H")/var/lib/machines/$img"/etc/apt/sources.list.d/*
  done
  th_sh "$H" 'mkdir -p /etc/slot-os && : > /etc/slot-os/slot00.toml && : > /etc/slot-os/slot01.toml && systemctl daemon-reload' || return 1
}

scenario_teardown() {
  th_destroy "$H"
}

sos() { th_run "$H" slot-os "$@"; }

# publish VERSION: build slot-os-probe VERSION with dpkg-deb and make it the repository's only
# package (a flat repository: Packages next to the .deb).
publish() {
  th_sh "$H" '
    set -e
    v=$1; d=$(mktemp -d); mkdir -p "$d/DEBIAN" "$d/usr/share/slot-os-probe" /srv/repo
    printf "Package: slot-os-probe\nVersion: %s\nArchitecture: all\nMaintainer: slot-os tests <root@localhost>\nDescription: test package for slot-os update\n" "$v" > "$d/DEBIAN/control"
    echo "$v" > "$d/usr/share/slot-os-probe/version"
    rm -f /srv/repo/*.deb
    dpkg-deb --root-owner-group -Zgzip -b "$d" "/srv/repo/slot-os-probe_${v}_all.deb" >/dev/null
    rm -rf "$d"
    f=slot-os-probe_${v}_all.deb
    { dpkg-deb -f "/srv/repo/$f"
      printf "Filename: ./%s\nSize: %s\nSHA256: %s\n\n" "$f" "$(stat -c %s "/srv/repo/$f")" "$(sha256sum "/srv/repo/$f" | cut -d" " -f1)"
    } > /srv/repo/Packages.tmp
    # apt asks with If-Modified-Since (whole seconds): a Packages file republished within
    # the second of the last one would be answered "304 Not Modified".
    if [ -e /srv/repo/Packages ]; then
      prev=$(stat -c %Y /srv/repo/Packages); now=$(date +%s)
      [ "$now" -gt "$prev" ] || touch -d "@$((prev + 1))" /srv/repo/Packages.tmp
    fi
    mv /srv/repo/Packages.tmp /srv/repo/Packages
  ' "$1"
}

probe_version() { # SLOT: the installed version of slot-os-probe in it
  th_run "$H" slot-os exec "$1" -- dpkg-query -W -f '${Version}' slot-os-probe 2>/dev/null
}

slot_has_nat_address() {
  th_sh "$H" "nsenter -t \$(machinectl show $1 -p Leader --value) -n ip -4 addr show host0 | grep -q 'inet 172\\.17\\.'"
}

test_repository_served_over_nat() {
  publish 1.0 || { t_fail "building the test package"; return 1; }
  assert_ok sos start all || return 1
  # The repository listens on the zone's address, which exists once the zone bridge is up.
  th_wait_for 20 th_sh "$H" 'ip -4 addr show vz-slots | grep -q "172.17.0.1/"' || { t_fail "no zone address"; return 1; }
  # The repository always answers in full: apt's If-Modified-Since has whole seconds and
  # once got "304 Not Modified" (apt: "Hit") for a republished Packages in a CI run. What
  # is tested is that slot-os runs each slot's apt, not HTTP caching.
  assert_ok th_run "$H" systemd-run --unit=slot-os-test-repo --property=Type=exec \
    python3 -c '
import functools, http.server, sys
class Full(http.server.SimpleHTTPRequestHandler):
    def send_head(self):
        del self.headers["If-Modified-Since"]
        return super().send_head()
http.server.ThreadingHTTPServer(("172.17.0.1", int(sys.argv[1])), functools.partial(Full, directory="/srv/repo")).serve_forever()
' "$REPO_PORT" || return 1
  # Type=exec returns before python listens (seconds under load): wait for the socket.
  th_wait_for 30 th_sh "$H" "ss -Hltn 'sport = :$REPO_PORT' | grep -q LISTEN" \
    || { t_fail "the repository server never listened: $(th_run "$H" journalctl -u slot-os-test-repo -n 20 --no-pager 2>&1)"; return 1; }
  local s
  for s in slot00 slot01; do
    th_wait_for 30 slot_has_nat_address "$s" || { t_fail "$s got no NAT address"; return 1; }
  done
  th_wait_for 30 th_sh "$H" "nsenter -t \$(machinectl show slot00 -p Leader --value) -n python3 -c 'import urllib.request; urllib.request.urlopen(\"http://172.17.0.1:$REPO_PORT/Packages\", timeout=2)'" \
    || { t_fail "slot00 cannot reach the repository"; return 1; }
  local out
  out=$(sos update-prog all : 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slot-os-probe' 2>&1) \
    || { t_fail "installing version 1.0: $out"; return 1; }
  assert_eq 1.0 "$(probe_version 0)" "slot00 has 1.0" || return 1
  assert_eq 1.0 "$(probe_version 1)" "slot01 has 1.0" || return 1
}

test_update_all_upgrades_every_slot() {
  publish 2.0 || { t_fail "building version 2.0"; return 1; }
  local out rc
  out=$(sos update all 2>&1); rc=$?
  echo "$out"
  assert_eq 0 "$rc" "update all succeeds" || return 1
  assert_contains "$out" "2 slot(s), 2 ok, 0 failed" "summary" || return 1
  assert_eq 2.0 "$(probe_version 0)" "slot00 upgraded (its apt said: $(grep '^slot00: .*\(Packages\|upgraded\)' <<<"$out" | tr '\n' ' '))" || return 1
  assert_eq 2.0 "$(probe_version 1)" "slot01 upgraded" || return 1
  assert_eq 2.0 "$(th_run "$H" slot-os exec 1 -- cat /usr/share/slot-os-probe/version)" "new files in place" || return 1
}

test_unreachable_repository_fails_that_slot_only() {
  publish 3.0 || { t_fail "building version 3.0"; return 1; }
  # slot01 points at a port nothing listens on: its update must fail, slot00's must not.
  th_run "$H" slot-os exec 1 -- sh -c "echo 'deb [trusted=yes] http://172.17.0.1:$((REPO_PORT + 1))/ ./' > /etc/apt/sources.list" || return 1
  local out rc
  out=$(sos update all 2>&1); rc=$?
  echo "$out"
  assert_eq 1 "$rc" "update all reports a failure" || return 1
  assert_contains "$out" "2 slot(s), 1 ok, 1 failed" "summary counts one failure" || return 1
  assert_contains "$(grep '^slot01 ' <<<"$out")" "FAILED" "slot01 failed" || return 1
  assert_contains "$(grep '^slot00 ' <<<"$out")" "ok" "slot00 ok" || return 1
  assert_eq 3.0 "$(probe_version 0)" "slot00 upgraded to 3.0 (its apt said: $(grep '^slot00: .*\(Packages\|upgraded\)' <<<"$out" | tr '\n' ' '))" || return 1
  assert_eq 2.0 "$(probe_version 1)" "slot01 kept 2.0" || return 1
  assert_ok sos stop all || return 1
}
