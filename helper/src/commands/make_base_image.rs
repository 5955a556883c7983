//! `make-base-image`: the image every slot is cloned from, made from the host's own root
//! filesystem (Fulcon), a root filesystem tarball, or a distribution bootstrap.
//!
//! Over 400 lines: the three sources (host, tarball, bootstrap) share the scrub that makes
//! any of them a clean base image.
//!
//! Whatever the source, the image leaves the host's secrets and identity behind (every
//! slot is cloned from it, and a slot's root can read all of it): root's files, users'
//! homes and mail, SSH host keys, private keys and credentials of the system, and every
//! password hash is locked. `--keep-users` keeps accounts' hashes and homes for an admin
//! who wants Fulcon's "same composition" of users. From the host they are never copied;
//! from a tarball or a bootstrap they are removed after unpacking.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use slot_config::names::check_name;

use super::Ctx;
use crate::error::bad_input;
use crate::storage::hostkeys::{self, HostKeys};
use crate::storage::image;
use crate::sys::lock;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Make the image from a root filesystem tarball instead of the host.
    #[arg(long, value_name = "FILE", conflicts_with = "bootstrap")]
    pub from_tar: Option<PathBuf>,
    /// Make the image by bootstrapping a Debian suite with debootstrap, e.g. bookworm.
    #[arg(long, value_name = "SUITE")]
    pub bootstrap: Option<String>,
    /// Mirror for --bootstrap.
    #[arg(long, requires = "bootstrap")]
    pub mirror: Option<String>,
    /// Name of the image (default: `image` in slot-os.toml, "slot-os").
    #[arg(long)]
    pub name: Option<String>,
    /// Keep password hashes (shadow, gshadow) and the contents of /home, /var/mail and
    /// users' crontabs. Root's files, SSH host keys and system secrets are left out anyway.
    #[arg(long)]
    pub keep_users: bool,
}

/// Host secrets and host identity, relative to the root: never in an image. A last
/// component may be a glob (`*` matches dot files too). Why each:
const SECRETS: &[&str] = &[
    // root's SSH keys, shell history, mail and whatever else the admin keeps there
    "root/*",
    // the host's SSH identity: every slot would impersonate the host (and each other)
    "etc/ssh/ssh_host_*",
    // earlier copies of the password files, with earlier hashes
    "etc/shadow-",
    "etc/gshadow-",
    "var/backups/*shadow*",
    // systemd: the seed of the host's entropy pool, the key of its encrypted credentials
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    // TLS private keys (ssl-cert's snakeoil key included), certbot's keys and account
    "etc/ssl/private/*",
    "etc/letsencrypt",
    // Kerberos host keytab, IPsec and PPP secrets, WireGuard keys
    "etc/krb5.keytab",
    "etc/ipsec.secrets",
    "etc/ppp/chap-secrets",
    "etc/ppp/pap-secrets",
    "etc/wireguard/*",
    // NetworkManager connections (Wi-Fi PSKs, VPN passwords) and its address secret
    "etc/NetworkManager/system-connections/*",
    "var/lib/NetworkManager/secret_key",
    // credentials for package repositories
    "etc/apt/auth.conf",
    "etc/apt/auth.conf.d/*",
    // SSSD's cached credentials and secrets
    "var/lib/sss/db/*",
    "var/lib/sss/secrets/*",
    // DHCP leases and DUID: the host's addresses and identity on the network
    "var/lib/dhcp/*",
    // who logged in from where; btmp holds what was typed as user names (passwords too)
    "var/log/btmp",
    "var/log/wtmp",
    "var/log/lastlog",
    "var/log/auth.log*",
];

/// Users' own data: kept with `--keep-users`.
const USER_DATA: &[&str] = &["home/*", "var/mail/*", "var/spool/cron/crontabs/*"];

/// Paths (relative to the root) that are not part of an image: API file systems, other
/// machines, slot-os's own state and config, caches and logs.
const EXCLUDES: &[&str] = &[
    "./proc",
    "./sys",
    "./dev",
    "./run",
    "./tmp",
    "./var/tmp",
    "./var/lib/machines",
    "./var/lib/slot-os",
    "./etc/slot-os",
    "./var/cache/apt/archives/*.deb",
    "./var/cache/apt/*.bin",
    "./var/log/journal/*",
    "./mnt/*",
    "./media/*",
    "./lost+found",
    "./swapfile",
    "./var/lib/dbus/machine-id",
];

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let name = a.name.clone().unwrap_or_else(|| cfg.host.image.clone());
    check_name("image", &name)?;
    if let Some(t) = &a.from_tar {
        if !t.is_file() {
            return Err(bad_input(format!("{}: no such file", t.display())));
        }
    }
    let _lock = lock::exclusive(&ctx.paths)?;
    let machines = ctx.paths.under(&cfg.host.machines_dir);
    std::fs::create_dir_all(&machines)
        .with_context(|| format!("creating {}", machines.display()))?;
    let dest = machines.join(&name);
    let tmp = image::sibling(&dest, ".slot-os-new-");
    image::remove_tree(&tmp)?;
    let subvolume = image::create_image_dir(&tmp)?;

    let started = Instant::now();
    let made = if let Some(tar) = &a.from_tar {
        extract_tar(tar, &tmp)
    } else if let Some(suite) = &a.bootstrap {
        bootstrap(suite, a.mirror.as_deref(), &tmp)
    } else {
        copy_host(ctx.paths.root(), &tmp, a.keep_users)
    };
    let prepared = made.and_then(|bytes| {
        scrub(&tmp, a.keep_users)?;
        image::make_mount_points(&tmp)?;
        crate::sys::inroot::Root::open(&tmp)?.mkdir_p("etc/slot-os", 0o755)?;
        image::set_identity(&tmp, &name, None, HostKeys::Strip)?;
        install_keygen_unit(&tmp)?;
        let r = crate::storage::image_prep::prepare(&tmp)?;
        for c in &r.changes {
            println!("image {name}: {c}");
        }
        for w in &r.warnings {
            eprintln!("slot-os: warning: image {name}: {w}");
        }
        Ok(bytes)
    });
    let bytes = match prepared {
        Ok(b) => b,
        Err(e) => {
            let _ = image::remove_tree(&tmp);
            return Err(e.context(format!("making image {name}; nothing was changed")));
        }
    };
    image::swap_into_place(&tmp, &dest)?;
    println!(
        "image {name} made at {}{} ({:.1} MB in {:.1} s)",
        dest.display(),
        if subvolume { " (btrfs subvolume)" } else { "" },
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  left out: /root, SSH host keys, system secrets and machine-id{}",
        if a.keep_users {
            "; password hashes and /home kept (--keep-users)"
        } else {
            ", /home; every password locked (--keep-users keeps them)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn tar_extract_cmd(dir: &Path) -> Command {
    crate::storage::archive::tar_extract(dir, "-".as_ref())
}

/// Streams `tar -c` of the root into `tar -x` of the new image through this process,
/// counting bytes for the progress line.
fn copy_host(root: &Path, dest: &Path, keep_users: bool) -> anyhow::Result<u64> {
    let mut create = crate::storage::archive::tar_create(root);
    create.arg("--one-file-system");
    for x in EXCLUDES {
        create.arg(format!("--exclude={x}"));
    }
    // Secrets are not even copied (deleted files stay readable on the disk for a while);
    // `scrub` runs afterwards all the same, for what a pattern of tar's misses.
    for x in SECRETS
        .iter()
        .chain(if keep_users { &[][..] } else { USER_DATA })
    {
        create.arg(format!("--exclude=./{x}"));
    }
    create
        .arg(".")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut src = create
        .spawn()
        .context("running tar (is GNU tar installed?)")?;
    let mut dst = tar_extract_cmd(dest)
        .stdin(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let bytes = crate::storage::archive::pump(
        src.stdout.take().context("tar stdout")?,
        dst.stdin.take().context("tar stdin")?,
        "copied",
        |_| {},
    )?;
    let mut err = String::new();
    if let Some(mut e) = src.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let s1 = src.wait()?;
    let s2 = dst.wait()?;
    // GNU tar exits 1 for "file changed as we read it", which a live root always has.
    if !(s1.success() || s1.code() == Some(1)) {
        bail!("tar of the host root failed ({s1}): {}", err.trim());
    }
    if !s2.success() {
        bail!("unpacking into {} failed ({s2})", dest.display());
    }
    Ok(bytes)
}

fn extract_tar(file: &Path, dest: &Path) -> anyhow::Result<u64> {
    crate::storage::archive::extract_checked(file, dest, &[])
}

fn bootstrap(suite: &str, mirror: Option<&str>, dest: &Path) -> anyhow::Result<u64> {
    let mut c = Command::new("debootstrap");
    c.args([
        "--variant=minbase",
        "--include=systemd,systemd-sysv,dbus,iproute2,udev",
    ])
    .arg(suite)
    .arg(dest);
    if let Some(m) = mirror {
        c.arg(m);
    }
    let st = c
        .status()
        .context("running debootstrap (install the debootstrap package)")?;
    if !st.success() {
        bail!("debootstrap {suite} failed ({st})");
    }
    Ok(0)
}

/// Removes what `SECRETS` (and, without `keep_users`, `USER_DATA`) name, keeps an empty
/// /root (0700) and /home, and locks every password.
fn scrub(root: &Path, keep_users: bool) -> anyhow::Result<()> {
    for pattern in SECRETS
        .iter()
        .chain(if keep_users { &[][..] } else { USER_DATA })
    {
        for p in matches(root, pattern)? {
            image::remove_any(&p)?;
        }
    }
    let home = root.join("root");
    if home.symlink_metadata().is_err() {
        fs::create_dir(&home).with_context(|| format!("creating {}", home.display()))?;
    }
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", home.display()))?;
    fs::create_dir_all(root.join("home"))?;
    if !keep_users {
        for f in ["etc/shadow", "etc/gshadow"] {
            lock_passwords(&root.join(f))?;
        }
    }
    Ok(())
}

/// Paths in `root` that `pattern` names; only its last component may be a glob, and no
/// component on the way may be a symlink (a tarball's tree is not followed out of itself).
fn matches(root: &Path, pattern: &str) -> anyhow::Result<Vec<PathBuf>> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let mut at = root.to_path_buf();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        at.push(part);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            _ => return Ok(Vec::new()),
        }
    }
    let glob = glob::Pattern::new(name).with_context(|| format!("pattern {pattern}"))?;
    if !name.contains(['*', '?', '[']) {
        let p = at.join(name);
        return Ok(p
            .symlink_metadata()
            .is_ok()
            .then_some(p)
            .into_iter()
            .collect());
    }
    let mut out = Vec::new();
    for e in fs::read_dir(&at).with_context(|| format!("reading {}", at.display()))? {
        let e = e?;
        if glob.matches(&e.file_name().to_string_lossy()) {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// The password field of every entry becomes `*` (already locked: kept) or `!*`: no
/// account can log in with a password; the file keeps its accounts, mode and owner.
fn lock_passwords(path: &Path) -> anyhow::Result<()> {
    let Ok(meta) = path.symlink_metadata() else {
        return Ok(());
    };
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let locked = locked_text(&text);
    let tmp = path.with_extension("slot-os-tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.mode() & 0o7777)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
    f.write_all(locked.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn locked_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.split_once(':') {
            Some((user, rest)) if !line.starts_with('#') => {
                let (pw, tail) = rest.split_once(':').unwrap_or((rest, ""));
                let pw = if pw == "*" { "*" } else { "!*" };
                out.push_str(user);
                out.push(':');
                out.push_str(pw);
                if rest.contains(':') {
                    out.push(':');
                    out.push_str(tail);
                }
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// With openssh-server in the image, the unit that gives a hand-made copy its own keys.
fn install_keygen_unit(root: &Path) -> anyhow::Result<()> {
    // A --from-tar image is as untrusted as a slot: its etc/systemd may be a symlink.
    let r = crate::sys::inroot::Root::open(root)?;
    let ssh = hostkeys::open_dir_in(&r, "etc/ssh")?;
    if !hostkeys::has_sshd(&r, ssh.as_ref()) {
        return Ok(());
    }
    let unit = format!("etc/systemd/system/{}", hostkeys::KEYGEN_UNIT_NAME);
    r.write_file(&unit, hostkeys::KEYGEN_UNIT.as_bytes(), 0o644)?;
    r.symlink(
        &format!(
            "etc/systemd/system/multi-user.target.wants/{}",
            hostkeys::KEYGEN_UNIT_NAME
        ),
        &format!("/{unit}"),
    )?;
    Ok(())
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, self)
    }
}

#[cfg(test)]
mod tests {
    use super::locked_text;

    #[test]
    fn every_hash_is_locked_and_the_shape_kept() {
        let shadow = "root:$6$salt$hash:20000:0:99999:7:::\n\
                      daemon:*:20000:0:99999:7:::\n\
                      nopw::20000:0:99999:7:::\n\
                      locked:!$6$x$y:20000::::::\n\
                      odd\n";
        assert_eq!(
            locked_text(shadow),
            "root:!*:20000:0:99999:7:::\n\
             daemon:*:20000:0:99999:7:::\n\
             nopw:!*:20000:0:99999:7:::\n\
             locked:!*:20000::::::\n\
             odd\n"
        );
        assert_eq!(
            locked_text("adm:x:root,alice:alice\n"),
            "adm:!*:root,alice:alice\n"
        );
    }
}
