# Issue 10 item 6: images carry no host secrets; every slot has its own SSH host keys and
# machine-id; backups and exports are root-only; `console` still gives root a shell.
#
# The test host is given what a stock server has: a root SSH key, a user's home, password
# hashes, SSH host keys (made by the machine's ssh-keygen, copied into the host with the
# libraries it needs already there), a TLS private key. Each marker below is a string that
# must appear nowhere in an image unless asked for.

H=sec
HASH='$6$slotostest$FAKEHASHMARKERrootpasswordhashnotreal0123456789abcdefABCDEF'
UHASH='$6$slotostest$FAKEHASHMARKERalicepasswordhashnotreal0123456789abcdef'
M_IDRSA=MARKER-ROOT-ID-RSA-5f2c
M_HOME=MARKER-ALICE-SECRET-9d41
M_TLS=MARKER-TLS-PRIVATE-KEY-77aa
M_MAIL=MARKER-ROOT-MAIL-1c3e
TMUX_SOCK=""

scenario_setup() {
  th_boot "$H" unified || return 1
  # Plain copies, whose files this scenario reads from the image directory of stopped
  # slots: auto would give overlay slots on the test host's ext4 (60-overlay's subject).
  th_storage_backend "$H" copy || return 1
  # Backups as files (the tar engine), whose modes this scenario checks; a restic
  # repository's key and files are checked private by 62-backup-incremental.
  printf '\n[backup]\nengine = "tar"\n' >>"$(th_root "$H")/etc/slot-os/slot-os.toml" || return 1
  local r
  r=$(th_root "$H")
  # sshd is not in the test rootfs: its config and the machine's ssh-keygen make the host
  # look like an openssh-server host (keys are what matters here, not the daemon).
  cp /usr/bin/ssh-keygen "$r/usr/bin/ssh-keygen" || return 1
  th_sh "$H" '
    set -e
    mkdir -p /etc/ssh /root/.ssh /etc/ssl/private /var/mail
    echo "# sshd_config of the test host" > /etc/ssh/sshd_config
    ssh-keygen -A >/dev/null
    printf "%s\n" "-----BEGIN OPENSSH PRIVATE KEY-----" "$2" "-----END OPENSSH PRIVATE KEY-----" > /root/.ssh/id_rsa
    chmod 600 /root/.ssh/id_rsa
    echo "$5" > /root/mail-copy; echo "$5" > /var/mail/root
    useradd -m -u 1000 alice
    echo "$3" > /home/alice/secret
    echo "$4" > /etc/ssl/private/host.key
    usermod -p "$1" root
    usermod -p "$6" alice
    head -c 512 /dev/urandom > /var/lib/systemd/random-seed
    head -c 4096 /dev/urandom > /var/lib/systemd/credential.secret
  ' "$HASH" "$M_IDRSA" "$M_HOME" "$M_TLS" "$M_MAIL" "$UHASH" || return 1
  TMUX_SOCK=$TH_RUN/tmux-25-secrets.sock
}

scenario_teardown() {
  [[ -n "$TMUX_SOCK" && -S "$TMUX_SOCK" ]] && tmux -S "$TMUX_SOCK" kill-server 2>/dev/null
  th_destroy "$H"
}

sos() { th_run "$H" slot-os "$@"; }

# Lines of the host's secrets that must not be in DIR (inside the test host): markers, the
# hashes, and a line of each SSH host private key past the header all keys of a type share.
secrets_found_in() {
  th_sh "$H" '
    dir=$1; shift
    pats=$(mktemp)
    printf "%s\n" "$@" > "$pats"
    for k in /etc/ssh/ssh_host_*_key; do sed -n 3p "$k"; done >> "$pats"
    grep -rlaF -f "$pats" "$dir" 2>/dev/null
    rm -f "$pats"
  ' "$1" "$M_IDRSA" "$M_HOME" "$M_TLS" "$M_MAIL" FAKEHASHMARKER
}

fingerprint() { th_sh "$H" 'ssh-keygen -lf "$1" | cut -d" " -f2' "$1"; }

test_make_base_image_leaves_host_secrets_behind() {
  local out img=/var/lib/machines/slot-os
  out=$(sos make-base-image 2>&1) || { t_fail "make-base-image: $out"; return 1; }
  assert_eq "" "$(secrets_found_in "$img")" "files in the image holding a host secret" || return 1
  assert_eq "" "$(th_sh "$H" 'find "$1/root" "$1/home" "$1/etc/ssl/private" -mindepth 1; ls "$1"/etc/ssh/ssh_host_* "$1"/etc/shadow- "$1"/etc/gshadow- "$1"/var/mail/* 2>/dev/null' "$img")" \
    "/root, /home and /etc/ssl/private empty, no host keys, no shadow backups" || return 1
  assert_eq "700 0:0" "$(th_run "$H" stat -c '%a %u:%g' "$img/root")" "/root kept as an empty 0700 dir" || return 1
  assert_ok th_run "$H" test -d "$img/home" || return 1
  assert_eq "" "$(th_sh "$H" 'ls "$1"/var/lib/systemd/random-seed "$1"/var/lib/systemd/credential.secret 2>/dev/null; cat "$1"/etc/machine-id' "$img")" \
    "no random seed, credential secret or machine-id from the host" || return 1
  # root has no password in the image (locked, not empty: an empty one logs in without one)
  assert_eq '!*' "$(th_sh "$H" 'awk -F: "\$1==\"root\"{print \$2}" "$1/etc/shadow"' "$img")" "root is locked" || return 1
  assert_eq "" "$(th_sh "$H" 'awk -F: "\$2!=\"*\" && \$2!=\"!*\"" "$1/etc/shadow" "$1/etc/gshadow"' "$img")" "every hash locked" || return 1
  # the shape stays: same accounts, same groups, shadow readable only by root and shadow
  assert_eq "$(th_sh "$H" 'cut -d: -f1 /etc/shadow')" "$(th_sh "$H" 'cut -d: -f1 "$1/etc/shadow"' "$img")" "same accounts" || return 1
  assert_eq "$(th_run "$H" stat -c '%a %U:%G' /etc/shadow)" "$(th_run "$H" stat -c '%a %U:%G' "$img/etc/shadow")" "shadow's mode and owner" || return 1
}

test_build_gives_each_slot_its_own_ssh_keys_and_machine_id() {
  local out
  out=$(sos build 2 2>&1) || { t_fail "build 2: $out"; return 1; }
  local t s fps="" ids
  for s in slot00 slot01; do
    for t in rsa ecdsa ed25519; do
      assert_eq "600 0:0" "$(th_run "$H" stat -c '%a %u:%g' "/var/lib/machines/$s/etc/ssh/ssh_host_${t}_key")" "$s $t private key" || return 1
      assert_eq "644 0:0" "$(th_run "$H" stat -c '%a %u:%g' "/var/lib/machines/$s/etc/ssh/ssh_host_${t}_key.pub")" "$s $t public key" || return 1
    done
    # the public key is the private key's (ssh-keygen -y derives it)
    assert_eq "$(th_sh "$H" 'cut -d" " -f1,2 "$1.pub"' "/var/lib/machines/$s/etc/ssh/ssh_host_ed25519_key")" \
      "$(th_sh "$H" 'ssh-keygen -y -f "$1" | cut -d" " -f1,2' "/var/lib/machines/$s/etc/ssh/ssh_host_ed25519_key")" "$s key pair matches" || return 1
    assert_eq "" "$(secrets_found_in "/var/lib/machines/$s")" "host secrets in $s" || return 1
    fps+="$(fingerprint "/var/lib/machines/$s/etc/ssh/ssh_host_ed25519_key.pub") "
  done
  fps+="$(fingerprint /etc/ssh/ssh_host_ed25519_key.pub)"
  assert_eq 3 "$(printf '%s\n' $fps | sort -u | grep -c .)" "slot00, slot01 and the host have three different host keys" || return 1
  ids=$(th_sh "$H" 'cat /etc/machine-id /var/lib/machines/slot00/etc/machine-id /var/lib/machines/slot01/etc/machine-id | sort -u | grep -c "^[0-9a-f]\{32\}$"')
  assert_eq 3 "$ids" "three different machine-ids" || return 1
}

test_keys_survive_restore_and_reset_makes_new_ones() {
  local k=/var/lib/machines/slot00/etc/ssh/ssh_host_ed25519_key.pub before out
  before=$(fingerprint "$k")
  out=$(sos backup 0 keys 2>&1) || { t_fail "backup: $out"; return 1; }
  out=$(sos backup-restore 0 slot00.keys 2>&1) || { t_fail "restore: $out"; return 1; }
  assert_eq "$before" "$(fingerprint "$k")" "restoring the slot's own backup keeps its keys" || return 1
  out=$(sos backup-restore 0 slot-os 2>&1) || { t_fail "reset: $out"; return 1; }
  local after
  after=$(fingerprint "$k") || { t_fail "no host key after a reset to the base image"; return 1; }
  [[ -n "$after" && "$after" != "$before" ]] || { t_fail "reset to the base image: keys $before -> $after"; return 1; }
  assert_eq "" "$(secrets_found_in /var/lib/machines/slot00)" "host secrets after reset" || return 1
  sos backup-del slot00.keys >/dev/null
}

test_slot_cloned_by_hand_makes_its_keys_at_first_boot() {
  assert_ok th_run "$H" machinectl clone slot-os handmade || return 1
  assert_eq "" "$(th_sh "$H" 'ls /var/lib/machines/handmade/etc/ssh/ssh_host_* 2>/dev/null')" "the clone has no keys yet" || return 1
  assert_ok th_run "$H" machinectl start handmade || return 1
  th_wait_for 60 th_run "$H" test -s /var/lib/machines/handmade/etc/ssh/ssh_host_ed25519_key.pub || { t_fail "no host key made at boot"; th_run "$H" journalctl -M handmade -b --no-pager | tail -20; return 1; }
  local fp
  fp=$(fingerprint /var/lib/machines/handmade/etc/ssh/ssh_host_ed25519_key.pub)
  [[ -n "$fp" && "$fp" != "$(fingerprint /etc/ssh/ssh_host_ed25519_key.pub)" ]] || { t_fail "handmade key $fp"; return 1; }
  th_run "$H" machinectl poweroff handmade
  th_wait_for 30 th_sh "$H" '! machinectl show handmade >/dev/null 2>&1' || return 1
  th_run "$H" machinectl remove handmade
}

test_keep_users_keeps_hashes_and_homes() {
  local out img=/var/lib/machines/kept
  out=$(sos make-base-image --keep-users --name kept 2>&1) || { t_fail "make-base-image --keep-users: $out"; return 1; }
  assert_eq "$HASH" "$(th_sh "$H" 'awk -F: "\$1==\"root\"{print \$2}" "$1/etc/shadow"' "$img")" "root's hash kept" || return 1
  assert_eq "$M_HOME" "$(th_run "$H" cat "$img/home/alice/secret")" "alice's home kept" || return 1
  # still no host identity or root's own files
  assert_eq "" "$(th_sh "$H" 'find "$1/root" -mindepth 1; ls "$1"/etc/ssh/ssh_host_* 2>/dev/null' "$img")" "no /root content or host keys with --keep-users" || return 1
  th_run "$H" machinectl remove kept
}

test_from_tar_and_bootstrap_paths_are_scrubbed_too() {
  # a tarball of a root with the same secrets (small, so it is quick to make)
  th_sh "$H" '
    set -e
    t=/var/tmp/fakeroot; rm -rf $t; mkdir -p $t/etc/ssh $t/root/.ssh $t/home/bob $t/etc/ssl/private
    cp /etc/passwd /etc/group $t/etc/; cp -p /etc/shadow /etc/gshadow $t/etc/
    cp /etc/ssh/ssh_host_* /etc/ssh/sshd_config $t/etc/ssh/
    cp /root/.ssh/id_rsa $t/root/.ssh/; cp /home/alice/secret $t/home/bob/
    cp /etc/ssl/private/host.key $t/etc/ssl/private/
    tar --numeric-owner -C $t -cf /var/tmp/fakeroot.tar .
  ' || { t_fail "making the tarball"; return 1; }
  local out img=/var/lib/machines/fromtar
  out=$(sos make-base-image --from-tar /var/tmp/fakeroot.tar --name fromtar 2>&1) || { t_fail "make-base-image --from-tar: $out"; return 1; }
  assert_eq "" "$(secrets_found_in "$img")" "host secrets in the image from a tarball" || return 1
  assert_eq "" "$(th_sh "$H" 'find "$1/root" "$1/home" "$1/etc/ssl/private" -mindepth 1; ls "$1"/etc/ssh/ssh_host_* 2>/dev/null' "$img")" "tarball image scrubbed" || return 1
  assert_eq '!*' "$(th_sh "$H" 'awk -F: "\$1==\"root\"{print \$2}" "$1/etc/shadow"' "$img")" "root locked in the tarball image" || return 1
  th_sh "$H" 'machinectl remove fromtar; rm -rf /var/tmp/fakeroot /var/tmp/fakeroot.tar'
}

test_backups_and_exports_are_root_only() {
  local out d=/var/lib/slot-os/backups
  out=$(sos backup 1 priv 2>&1) || { t_fail "backup: $out"; return 1; }
  assert_eq "700" "$(th_run "$H" stat -c '%a' "$d")" "backup dir" || return 1
  assert_eq "600 600" "$(th_sh "$H" 'stat -c %a "$1/slot01.priv.tar.zst" "$1/slot01.priv.json" | xargs' "$d")" "backup data and metadata" || return 1
  assert_exit 1 th_run "$H" setpriv --reuid=65534 --regid=65534 --clear-groups cat "$d/slot01.priv.tar.zst" || return 1
  # an existing backup dir that others can read is fixed by the next backup
  th_sh "$H" 'chmod 755 "$1"; chmod 644 "$1/slot01.priv.json"' "$d"
  out=$(sos backup 1 priv2 2>&1) || { t_fail "second backup: $out"; return 1; }
  assert_contains "$out" "0755" "the fix is reported" || return 1
  assert_eq "700 600" "$(th_run "$H" stat -c '%a' "$d" "$d/slot01.priv.json" | xargs)" "backup dir and old metadata fixed" || return 1
  out=$(sos export 1 /var/tmp/slot01.slot 2>&1) || { t_fail "export: $out"; return 1; }
  assert_eq "600" "$(th_run "$H" stat -c '%a' /var/tmp/slot01.slot)" "export file" || return 1
  assert_exit 1 th_run "$H" setpriv --reuid=65534 --regid=65534 --clear-groups cat /var/tmp/slot01.slot || return 1
  th_sh "$H" 'rm -f /var/tmp/slot01.slot; slot-os backup-del slot01.priv; slot-os backup-del slot01.priv2' >/dev/null
}

test_console_gives_root_a_shell_without_a_password() {
  assert_ok sos start 0 || return 1
  local leader
  leader=$(th_leader "$H") || return 1
  tmux -S "$TMUX_SOCK" kill-server 2>/dev/null
  tmux -S "$TMUX_SOCK" -f /dev/null new-session -d -s console -x 160 -y 40 \
    "env -i TERM=xterm PATH=/usr/sbin:/usr/bin:/sbin:/bin nsenter -t $leader -a slot-os console 0; sleep 30" || { t_fail "tmux"; return 1; }
  # the shell is there when its prompt is (machinectl prints "Connected to" first)
  th_wait_for 30 sh -c 'tmux -S "$1" capture-pane -p -t console | grep -q "#"' sh "$TMUX_SOCK" \
    || { t_fail "no root prompt: $(tmux -S "$TMUX_SOCK" capture-pane -p -t console | grep .)"; return 1; }
  tmux -S "$TMUX_SOCK" send-keys -t console 'echo "uid=$(id -u) host=$(hostname)"' Enter
  th_wait_for 15 sh -c 'tmux -S "$1" capture-pane -p -t console | grep -q "^uid=0 host=slot00"' sh "$TMUX_SOCK" \
    || { t_fail "no root shell in slot00: $(tmux -S "$TMUX_SOCK" capture-pane -p -t console | grep .)"; return 1; }
  tmux -S "$TMUX_SOCK" send-keys -t console 'exit' Enter
  tmux -S "$TMUX_SOCK" kill-server 2>/dev/null
  assert_ok sos stop 0 || return 1
}
