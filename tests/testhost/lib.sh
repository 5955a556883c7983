# slot-os end-to-end harness: boots real systemd test hosts in systemd-nspawn (see
# ../../README.md and tests/testhost/README.md). Source it from bash; functions are th_*.
# Only processes this shell started are ever ended, by PID.

TH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TH_CACHE=${SLOT_OS_TEST_CACHE:-/var/cache/slot-os-test}
TH_RUN=${SLOT_OS_TEST_RUN:-/var/tmp/slot-os-test}
TH_PROFILE=${SLOT_OS_PROFILE:-debug}
# Packages of the test host; also what the slot images (copies of it) contain.
TH_PACKAGES=systemd,systemd-sysv,dbus,systemd-container,iproute2,udev,iputils-ping,procps,btrfs-progs,iptables,kmod,less,tar
# Bump when the setup steps below change: it is part of the cache key.
TH_RECIPE=3
TH_BOOTED=()

th_log() { printf '[testhost] %s\n' "$*" >&2; }

th_ensure_packages() {
  local p missing=()
  for p in systemd-container debootstrap dbus iproute2 btrfs-progs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

th_cache_key() {
  printf '%s\n%s\n' "$TH_PACKAGES" "$TH_RECIPE" | sha256sum | cut -c1-12
}

# Prints the cached rootfs path, building it first if needed (built under a temporary
# name and renamed when complete, so an interrupted build is never taken for a cache).
th_rootfs() {
  local dir="$TH_CACHE/rootfs-$(th_cache_key)"
  if [ -f "$dir/.complete" ]; then echo "$dir"; return 0; fi
  mkdir -p "$TH_CACHE"
  local tmp="$TH_CACHE/.building-$$"
  rm -rf "$tmp"
  th_log "building the test host rootfs in $dir (debootstrap, about 1-2 minutes)"
  local t0=$SECONDS
  if ! debootstrap --variant=minbase --include="$TH_PACKAGES" bookworm "$tmp" http://deb.debian.org/debian >"$TH_CACHE/debootstrap.log" 2>&1; then
    th_log "debootstrap failed; last lines of $TH_CACHE/debootstrap.log:"; tail -20 "$TH_CACHE/debootstrap.log" >&2
    rm -rf "$tmp"; return 1
  fi
  : > "$tmp/etc/machine-id"
  rm -f "$tmp/var/lib/dbus/machine-id"
  echo testhost > "$tmp/etc/hostname"
  # networkd manages bridges and the slots' veths in the test host (and in slots)
  ln -sf /lib/systemd/system/systemd-networkd.service "$tmp/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
  mkdir -p "$tmp/etc/systemd/system/sockets.target.wants"
  ln -sf /lib/systemd/system/systemd-networkd.socket "$tmp/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
  # root logs in on the console without a password (the demo's `slot-os console`)
  sed -i 's/^root:[^:]*:/root::/' "$tmp/etc/shadow"
  # nothing in the test host or a slot needs these, and they slow boot or fail in nspawn
  for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$tmp/etc/systemd/system/$u"
  done
  chroot "$tmp" apt-get clean >/dev/null 2>&1 || true
  rm -rf "$tmp/var/lib/apt/lists/"*
  touch "$tmp/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  th_log "rootfs built in $((SECONDS - t0)) s"
  echo "$dir"
}

th_dir() { echo "$TH_RUN/$1"; }
th_root() { echo "$TH_RUN/$1/root"; }
th_leader() { cat "$TH_RUN/$1/leader" 2>/dev/null; }

# Ends what an earlier (crashed) run of this name left: only the nspawn PID it recorded,
# and only if that PID still is a systemd-nspawn for this very directory.
th_kill_stale() {
  local d; d=$(th_dir "$1")
  local pid; pid=$(cat "$d/nspawn.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "systemd-nspawn.*-D $d/root"; then
    kill -TERM "$pid" 2>/dev/null || true
    local i; for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

# Unmounts anything still mounted below a directory (deepest first).
th_umount_below() {
  local m
  awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

th_boot() {
  local name=$1 mode=${2:-unified}
  local d; d=$(th_dir "$name")
  local cache; cache=$(th_rootfs) || return 1
  th_kill_stale "$name"
  th_umount_below "$d"
  rm -rf "$d"
  mkdir -p "$d"
  local t0; t0=$(date +%s%N)
  cp -a --reflink=auto "$cache" "$d/root" || return 1
  rm -f "$d/root/.complete"
  systemd-id128 new > "$d/root/etc/machine-id"
  echo "$name" > "$d/root/etc/hostname"
  if ! make -s -C "$TH_REPO" install DESTDIR="$d/root" PREFIX=/usr PROFILE="$TH_PROFILE" >"$d/install.log" 2>&1; then
    th_log "make install into the test host failed (are the binaries built? cargo build):"; cat "$d/install.log" >&2
    return 1
  fi
  if declare -F th_pre_boot_hook >/dev/null; then th_pre_boot_hook "$name" "$d/root"; fi
  echo "$mode" > "$d/mode"
  th_start "$name" || return 1
  th_log "$name booted ($mode) in $(( ($(date +%s%N) - t0) / 1000000 )) ms (copy + install + boot)"
  TH_BOOTED+=("$name")
}

# Boots an existing root dir (th_boot made it) and waits until its systemd is up.
th_start() {
  local name=$1
  local d; d=$(th_dir "$name")
  local mode; mode=$(cat "$d/mode")
  local env=()
  [ "$mode" = unified ] && env=(SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1)
  rm -f "$d/leader"
  # setsid: the host gets its own session, so a ^C of the test run reaches it only
  # through th_cleanup_all.
  env "${env[@]}" setsid systemd-nspawn -D "$d/root" -b --register=no --keep-unit --console=pipe \
    --private-network -M "$name" >"$d/console.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" > "$d/nspawn.pid"
  local leader="" i
  for i in $(seq 300); do
    leader=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null | awk '{print $1}')
    if [ -n "$leader" ] && [ "$(cat /proc/"$leader"/comm 2>/dev/null)" = systemd ]; then break; fi
    leader=""
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$leader" ]; then
    th_log "$name: no systemd appeared in the container"; tail -30 "$d/console.log" >&2; return 1
  fi
  echo "$leader" > "$d/leader"
  # `is-system-running --wait` needs the host's bus, which comes up a moment after PID 1.
  local st="" end=$((SECONDS + 90))
  while [ $SECONDS -lt $end ]; do
    st=$(timeout 60 nsenter -t "$leader" -a env PATH=/usr/sbin:/usr/bin:/sbin:/bin systemctl is-system-running --wait 2>/dev/null)
    case "$st" in running|degraded|maintenance|stopping) break ;; esac
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  case "$st" in
    running|degraded) ;;
    *)
      th_log "$name: systemd did not finish booting (state: '$st')"
      tail -30 "$d/console.log" >&2
      th_run "$name" systemctl --failed --no-pager >&2 || true
      return 1 ;;
  esac
  if [ "$st" = degraded ]; then
    th_log "$name: degraded: $(th_run "$name" systemctl --failed --no-legend --plain 2>/dev/null | awk '{print $1}' | tr '\n' ' ')"
  fi
}

th_run() {
  local name=$1; shift
  local leader; leader=$(th_leader "$name")
  [ -n "$leader" ] || { th_log "th_run: $name is not running"; return 125; }
  nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER= \
    SYSTEMD_COLORS=0 TERM=dumb HOME=/root "$@"
}

th_sh() { local name=$1; shift; th_run "$name" sh -c "$*"; }

th_copy_slot_image() {
  local name=$1 image=$2
  local cache; cache=$(th_rootfs) || return 1
  local dest; dest="$(th_root "$name")/var/lib/machines/$image"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest"
  cp -a --reflink=auto "$cache" "$dest" || return 1
  rm -f "$dest/.complete"
  systemd-id128 new > "$dest/etc/machine-id"
  echo "$image" > "$dest/etc/hostname"
}

th_poweroff() {
  local name=$1
  local d; d=$(th_dir "$name")
  local pid; pid=$(cat "$d/nspawn.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  local leader; leader=$(th_leader "$name")
  # SIGRTMIN+4 asks systemd for an orderly poweroff
  [ -n "$leader" ] && kill -s RTMIN+4 "$leader" 2>/dev/null
  local i
  for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    th_log "$name: no orderly shutdown within 30 s; killing its nspawn ($pid)"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  wait "$pid" 2>/dev/null || true
  rm -f "$d/leader"
}

th_reboot() {
  th_poweroff "$1"
  th_start "$1"
}

th_destroy() {
  local name=$1
  local d; d=$(th_dir "$name")
  th_poweroff "$name"
  th_umount_below "$d"
  rm -rf "$d"
  local keep=() n
  for n in "${TH_BOOTED[@]}"; do [ "$n" = "$name" ] || keep+=("$n"); done
  TH_BOOTED=("${keep[@]}")
}

th_cleanup_all() {
  local n
  for n in "${TH_BOOTED[@]}"; do th_destroy "$n"; done
}

# th_wait_for SECONDS CMD...: polls CMD every 0.2 s until it succeeds.
th_wait_for() {
  local limit=$1; shift
  local end=$((SECONDS + limit))
  while [ $SECONDS -lt $end ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# --- assertions ---------------------------------------------------------------------
# A test is a function test_*; it fails if it returns non-zero or calls t_fail.
T_FAILED=0
T_REASON=""
t_fail() { T_FAILED=1; T_REASON=${T_REASON:+$T_REASON; }$*; printf '    %s\n' "$*" >&2; return 1; }
assert_eq() {
  [ "$1" == "$2" ] && return 0
  t_fail "${3:-values differ}: expected '$1', got '$2'"
}
assert_contains() {
  case "$1" in *"$2"*) return 0 ;; esac
  t_fail "${3:-text missing}: '$2' not in: $(printf '%s' "$1" | head -c 600)"
}
assert_ok() {
  local out
  out=$("$@" 2>&1) && return 0
  t_fail "command failed ($?): $* :: $(printf '%s' "$out" | tail -c 600)"
}
assert_exit() {
  local want=$1; shift
  local out rc
  out=$("$@" 2>&1); rc=$?
  [ "$rc" = "$want" ] && return 0
  t_fail "expected exit $want, got $rc: $* :: $(printf '%s' "$out" | tail -c 400)"
}
