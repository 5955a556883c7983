#!/usr/bin/env bash
# The whole test suite, as CI runs it (as root, on a fresh Debian 12):
#   1. installs what it needs (idempotent),
#   2. checks formatting and lints, and that the RPM spec parses,
#   3. unit, golden and bad-input tests (cargo test),
#   4. the end-to-end suite in real systemd test hosts (tests/run-e2e.sh),
#   5. the VM tier: limits enforced by a real kernel in a qemu VM (tests/vm/run.sh),
# and ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "run-all.sh: must run as root (it boots systemd test hosts)" >&2
  exit 2
fi

log "installing packages"
bash tests/install-deps.sh || { echo "installing dependencies failed" >&2; exit 1; }

passed=0
failed=0

# Ctrl-C or a CI timeout ends the whole run: bash runs this trap once the step in the
# foreground returns, so the next step (the VM tier after an interrupted e2e run) never starts.
vm_img_pid=
interrupted() {
  echo "run-all.sh: interrupted ($1); not running the remaining steps" >&2
  [[ -n "$vm_img_pid" ]] && kill -- "$vm_img_pid" 2>/dev/null
  exit 130
}
trap 'interrupted SIGINT' INT
trap 'interrupted SIGTERM' TERM

# The VM tier's cached image (debootstrap + mkfs.ext4, minutes when cold) is made while cargo
# works; tests/vm/run.sh waits for nothing else. SLOT_OS_VM_RELEASES: all (default: Debian 12
# and 13), bookworm or trixie.
vm_rels=${SLOT_OS_VM_RELEASES:-all}
vm_img_log=$(mktemp)
(for r in $([ "$vm_rels" = all ] && echo bookworm trixie || echo "$vm_rels"); do bash tests/vm/image.sh "$r" || exit 1; done) >"$vm_img_log" 2>&1 &
vm_img_pid=$!

log "cargo fmt --check / clippy -D warnings"
if cargo fmt --all -- --check; then passed=$((passed + 1)); echo "ok   fmt"; else failed=$((failed + 1)); echo "FAIL fmt"; fi
if cargo clippy --all-targets --locked -- -D warnings; then passed=$((passed + 1)); echo "ok   clippy"; else failed=$((failed + 1)); echo "FAIL clippy"; fi

log "packaging/rpm/slot-os.spec parses (rpmspec -P)"
if bash tests/check-rpmspec.sh; then passed=$((passed + 1)); echo "ok   rpmspec"; else failed=$((failed + 1)); echo "FAIL rpmspec"; fi

log "cargo test (unit, golden, bad-input)"
cargo_out=$(mktemp)
cargo test --locked 2>&1 | tee "$cargo_out"
cargo_rc=${PIPESTATUS[0]}
read -r cp cf < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$cargo_out")
rm -f "$cargo_out"
if [ "$cargo_rc" != 0 ] && [ "$cf" = 0 ]; then cf=1; fi   # a build failure counts as a failure
passed=$((passed + cp)); failed=$((failed + cf))

log "end-to-end suite (real systemd in nspawn test hosts)"
e2e_out=$(mktemp)
# Two scenario runs at a time (1.9x faster here): each test host has cgroups of its own, so
# parallel hosts no longer share one cgroup tree (a slot start failed with status 219 when
# they did). SLOT_OS_E2E_JOBS=1 runs them one by one.
SLOT_OS_E2E_JOBS=${SLOT_OS_E2E_JOBS:-2} bash tests/run-e2e.sh 2>&1 | tee "$e2e_out"
e2e_rc=${PIPESTATUS[0]}
read -r ep ef < <(sed -n 's/^e2e: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$e2e_out" | tail -n 1)
rm -f "$e2e_out"
ep=${ep:-0}; ef=${ef:-0}
if [ "$e2e_rc" != 0 ] && [ "$ef" = 0 ]; then ef=1; fi
passed=$((passed + ep)); failed=$((failed + ef))

log "VM tier: limits enforced by a real kernel (tests/vm/run.sh $vm_rels)"
wait "$vm_img_pid" || { echo "# building the VM image failed:"; cat "$vm_img_log"; }
rm -f "$vm_img_log"
vm_out=$(mktemp)
vm_t0=$(date +%s)
bash tests/vm/run.sh "$vm_rels" 2>&1 | tee "$vm_out"
vm_rc=${PIPESTATUS[0]}
read -r vp vf < <(sed -n 's/^e2e: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$vm_out" | tail -n 1)
rm -f "$vm_out"
vp=${vp:-0}; vf=${vf:-0}
if [ "$vm_rc" != 0 ] && [ "$vf" = 0 ]; then vf=1; fi
echo "# VM tier: $(( $(date +%s) - vm_t0 )) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
passed=$((passed + vp)); failed=$((failed + vf))

echo
echo "cargo: $cp passed, $cf failed; e2e: $ep passed, $ef failed; vm: $vp passed, $vf failed; checks: fmt, clippy, rpmspec"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
