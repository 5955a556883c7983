# Issue 14, "200 slots on one host" and "Watching many slots", in CI's size: 80 slots in one
# test host (more than machined's 64 operations at once), all of them booted at the same
# time; bounded starts and update-prog runs proven from the journal and from inside the
# slots; `top` and `metrics` over all of them, metrics parsed by prometheus_client's strict
# OpenMetrics parser and its traffic counters checked against `ip -s link`. The 200-slot
# and 1000-file numbers are benchmarks (tests/bench/scale.sh, tests/bench/generator.sh).
# releases: bookworm trixie

H=scale
N=80
BTRFS_IMG=""

# /var/lib/machines on btrfs, as on a real slot-os host: 80 images are snapshots of one.
th_pre_boot_hook() {
  truncate -s 8G "$BTRFS_IMG" && mkfs.btrfs -q -f "$BTRFS_IMG" >/dev/null \
    && mkdir -p "$2/var/lib/machines" && mount -o loop "$BTRFS_IMG" "$2/var/lib/machines"
}

scenario_setup() {
  # The OpenMetrics parser the test holds the output to (Debian's prometheus_client).
  /usr/bin/python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-prometheus-client >/dev/null \
    || return 1
  BTRFS_IMG=/var/tmp/slot-os-test-scale-btrfs-$$.img
  th_boot "$H" unified || return 1
  th_copy_slot_image "$H" slot-os || return 1
}

scenario_teardown() {
  th_destroy "$H"
  [[ -z "$BTRFS_IMG" ]] || rm -f "$BTRFS_IMG"
}

sos() { th_run "$H" slot-os "$@"; }

# The largest number of intervals ("START END" lines on stdin, any unit) open at once.
max_overlap() {
  /usr/bin/python3 -c '
import sys
ev = []
for line in sys.stdin:
    s, e = map(int, line.split())
    ev += [(s, 1), (e, -1)]
# An interval that ends at the moment another starts does not overlap it.
ev.sort(key=lambda x: (x[0], x[1]))
now = most = 0
for _, d in ev:
    now += d
    most = max(most, now)
print(most)'
}

# "START END" (microseconds) of each systemd-nspawn@ start job since the time $1 (epoch s),
# from the host's journal: "Starting ..." and "Started ..." (their message IDs).
start_jobs_since() {
  th_run "$H" journalctl -o json --since "@$1" \
    MESSAGE_ID=7d4958e842da4a758f6c1cdc7b36dcc5 MESSAGE_ID=39f53479d3a045ac8e11786248231fbf |
    /usr/bin/python3 -c '
import json, sys
start, end = {}, {}
for line in sys.stdin:
    m = json.loads(line)
    u = m.get("UNIT", "")
    if not u.startswith("systemd-nspawn@"):
        continue
    t = int(m["__REALTIME_TIMESTAMP"])
    if m["MESSAGE_ID"].startswith("7d49"):
        start[u] = t
    else:
        end[u] = t
for u, s in start.items():
    if u in end:
        print(s, end[u])'
}

test_build_past_machineds_operation_limit() {
  local out rc
  out=$(sos build "$N" 2>&1); rc=$?
  echo "$out" | tail -n 5
  assert_eq 0 "$rc" "build $N succeeds (machined takes 64 operations at once)" || return 1
  assert_not_contains "$out" "failed" "no slot failed" || return 1
  assert_eq "$N" "$(th_sh "$H" 'ls -d /var/lib/machines/slot[0-9]* | wc -l')" "$N images" || return 1
  assert_eq "$N" "$(th_sh "$H" 'ls /etc/slot-os/slot[0-9]*.toml | wc -l')" "$N slot files" || return 1
  assert_eq "$N" "$(th_sh "$H" 'cat /var/lib/machines/slot[0-9]*/etc/machine-id | sort -u | wc -l')" "each its own machine-id" || return 1
  assert_eq "$N" "$(th_sh "$H" 'ls /run/systemd/nspawn/slot[0-9]*.nspawn | wc -l')" "the generator wrote every slot's .nspawn" || return 1
}

test_start_all_runs_at_most_j_jobs_at_once() {
  local t0 out rc most
  t0=$(th_run "$H" date +%s)
  out=$(sos start -j 4 all 2>&1); rc=$?
  echo "$out" | tail -n 3
  assert_eq 0 "$rc" "start -j 4 all" || return 1
  assert_contains "$out" "$N of $N slot(s) started" "every slot started" || return 1
  assert_eq "$N" "$(th_sh "$H" "systemctl list-units --no-legend --state=active 'systemd-nspawn@*' | wc -l")" "$N units active" || return 1
  assert_eq "$N" "$(th_sh "$H" 'machinectl list --no-legend | grep -c "^slot"')" "$N machines registered" || return 1
  most=$(start_jobs_since "$t0" | max_overlap)
  echo "start jobs under way at once: at most $most"
  ((most >= 2 && most <= 4)) || { t_fail "start -j 4 had $most start jobs under way at once"; return 1; }
}

test_list_and_info_see_every_running_slot() {
  local js
  js=$(sos list --json) || return 1
  assert_eq "$N" "$(/usr/bin/python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r["state"] == "RUNNING" and r["leader"]))' <<<"$js")" "list: $N running, each with its leader" || return 1
  js=$(sos info "$((N - 1))" --json) || return 1
  assert_eq RUNNING "$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' <<<"$js")" "info of the last slot" || return 1
  # its processes, from its payload cgroup: as many as in its PID namespace
  assert_eq "$(th_sh "$H" 'ls -l /proc/[0-9]*/ns/pid 2>/dev/null | grep -cF "$(readlink /proc/$(machinectl show -p Leader --value "$1")/ns/pid)"' "slot$((N - 1))")" \
    "$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["usage"]["processes"])' <<<"$js")" "info counts the slot's processes" || return 1
}

test_top_prints_two_snapshots_with_every_running_slot() {
  local out
  out=$(sos top -n 2 -d 0.5 --sort name) || { t_fail "top -n 2: $out"; return 1; }
  echo "$out" | head -n 5
  assert_eq 2 "$(grep -c '^slot-os top: ' <<<"$out")" "two snapshots" || return 1
  assert_eq "$((2 * N))" "$(grep -cE '^slot[0-9]+ +RUNNING ' <<<"$out")" "every running slot in each" || return 1
  # CPU% is counted here (cgroup v2 cpu.stat); memory and I/O need controllers this host lacks.
  assert_eq "" "$(grep -E '^slot[0-9]+ +RUNNING +- ' <<<"$out")" "every slot has a CPU%" || return 1
  assert_eq "slot00" "$(grep -m1 -oE '^slot[0-9]+' <<<"$out")" "--sort name" || return 1
}

test_metrics_parse_and_match_ip_link() {
  local before after m rc
  # Some traffic on every slot's link: the host pings each slot's NAT address.
  th_sh "$H" 'for s in $(machinectl list --no-legend | cut -d" " -f1 | head -n 5); do
      a=$(machinectl show "$s" -p Leader --value | xargs -I{} nsenter -t {} -n ip -4 -o addr show host0 | awk "{print \$4}" | cut -d/ -f1)
      [ -n "$a" ] && ping -c 2 -i 0.2 -W 1 "$a" >/dev/null || true
    done'
  local d prog report
  d=$(mktemp -d) || return 1
  th_run "$H" ip -s -j link >"$d/before" || return 1
  sos metrics >"$d/metrics"; rc=$?
  th_run "$H" ip -s -j link >"$d/after" || return 1
  assert_eq 0 "$rc" "metrics" || return 1
  read -r -d '' prog <<'EOF'
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
n, d = int(sys.argv[1]), sys.argv[2]
before, after = (json.load(open(f"{d}/{w}")) for w in ("before", "after"))
fams = {f.name: f for f in text_string_to_metric_families(open(f"{d}/metrics").read())}
state = {(s.labels["slot"], s.labels["state"]): s.value for s in fams["slot_os_slot_state"].samples}
running = [slot for (slot, st), v in state.items() if st == "running" and v == 1]
assert len(running) == n, f"{len(running)} slots running, not {n}"
assert all(sum(v for (s, _), v in state.items() if s == slot) == 1 for slot in running)
cpu = {s.labels["slot"]: s.value for s in fams["slot_os_cpu_seconds"].samples}
assert sorted(cpu) == sorted(running) and all(v > 0 for v in cpu.values()), cpu
assert fams["slot_os_cpu_seconds"].type == "counter" and fams["slot_os_cpu_seconds"].unit == "seconds"
# Not counted in this test host (no memory/io controllers): no sample at all.
assert not fams["slot_os_memory_bytes"].samples
stats = lambda links: {l["ifname"]: l["stats64"] for l in links}
b, a = stats(before), stats(after)
checked = 0
for fam, host_dir in (("slot_os_network_receive_bytes", "tx"), ("slot_os_network_transmit_bytes", "rx")):
    slots = set()
    for s in fams[fam].samples:
        i = s.labels["interface"]
        lo, hi = b[i][host_dir]["bytes"], a[i][host_dir]["bytes"]
        assert lo <= s.value <= hi, f"{fam} {i}: {s.value} not within ip -s link's {lo}..{hi}"
        slots.add(s.labels["slot"])
        checked += 1
    assert slots == set(running), f"{fam}: {len(slots)} slots have links"
print(f"{len(fams)} families; {checked} traffic counters within ip -s link's")
EOF
  report=$(/usr/bin/python3 -c "$prog" "$N" "$d" 2>&1); rc=$?
  rm -rf "$d"
  ((rc == 0)) || { t_fail "metrics: $report"; return 1; }
  echo "$report"
}

test_metrics_timer_writes_the_file_atomically() {
  local out rc
  out=$(sos metrics --output /var/lib/prometheus/node-exporter/slot-os.prom 2>&1); rc=$?
  assert_eq 2 "$rc" "a missing directory is bad input: $out" || return 1
  assert_ok th_run "$H" mkdir -p /var/lib/prometheus/node-exporter || return 1
  assert_ok th_run "$H" systemctl start slot-os-metrics.service || return 1
  assert_eq "644" "$(th_run "$H" stat -c %a /var/lib/prometheus/node-exporter/slot-os.prom)" "readable by node_exporter" || return 1
  assert_eq "slot-os.prom" "$(th_run "$H" ls -A /var/lib/prometheus/node-exporter)" "no temporary file left" || return 1
  th_run "$H" cat /var/lib/prometheus/node-exporter/slot-os.prom | /usr/bin/python3 -c '
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
print(sum(len(f.samples) for f in text_string_to_metric_families(sys.stdin.read())), "samples")' \
    || { t_fail "the timer's file does not parse"; return 1; }
  assert_ok th_run "$H" systemctl cat slot-os-metrics.timer || return 1
}

# Each slot's command notes when it ran (inside the slot, on the kernel's clock shared by
# all), and the intervals are overlaid.
probe_runs() { # JOBS: update-prog -j JOBS over slots 0..11; prints the most at once
  local out
  out=$(sos update-prog -j "$1" $(seq 0 11) : 'a=$(date +%s%6N); sleep 1; echo "$a $(date +%s%6N)" > /var/tmp/slot-os-probe') \
    || { echo "update-prog failed: $out" >&2; return 1; }
  th_sh "$H" 'cat /var/lib/machines/slot[0-9]*/var/tmp/slot-os-probe; rm -f /var/lib/machines/slot[0-9]*/var/tmp/slot-os-probe' | max_overlap
}

test_update_prog_j4_runs_in_at_most_4_slots_at_once() {
  local most
  most=$(probe_runs 4) || { t_fail "update-prog -j 4"; return 1; }
  echo "update-prog -j 4: at most $most slots at once"
  ((most >= 2 && most <= 4)) || { t_fail "-j 4 ran $most at once"; return 1; }
  # The same measure sees more than 4 when more are allowed: it can tell.
  most=$(probe_runs 12) || { t_fail "update-prog -j 12"; return 1; }
  echo "update-prog -j 12: at most $most slots at once"
  ((most > 4)) || { t_fail "-j 12 ran only $most at once"; return 1; }
}

test_stop_all() {
  local out rc
  out=$(sos stop all 2>&1); rc=$?
  echo "$out" | tail -n 2
  assert_eq 0 "$rc" "stop all" || return 1
  assert_eq 0 "$(th_sh "$H" "systemctl list-units --no-legend --state=active 'systemd-nspawn@*' | wc -l")" "no slot left running" || return 1
}
