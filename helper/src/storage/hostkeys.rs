//! SSH host keys of a slot. An image has none (`make-base-image` leaves the host's behind);
//! each slot gets its own when it becomes a machine of its own (`build`, a reset to the base
//! image, `import` under a new name). They are made on the host by `ssh-keygen` in a private
//! directory, then written into the slot root through a directory resolved inside it
//! (`inroot`) and created `O_EXCL|O_NOFOLLOW`: the slot's root user controls every path in
//! there, so nothing may follow a symlink it planted.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;

use crate::sys::inroot::Root;
use std::process::Stdio;

use anyhow::{bail, Context};
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};

/// What happens to the SSH host keys of a root whose identity is being set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKeys {
    /// A base image: no host keys at all (every slot made from it makes its own).
    Strip,
    /// A new machine: new keys, whatever keys the tree had are removed.
    New,
    /// The same machine (its own backup, a move): its keys stay; made only if it has none.
    Keep,
}

/// The key types Debian's openssh-server makes (`ssh-keygen -A`).
const TYPES: [&str; 3] = ["rsa", "ecdsa", "ed25519"];
const PREFIX: &str = "ssh_host_";

/// Opens `rel` below the slot root `root`, symlinks on the way resolved inside the root
/// (`inroot`); `None` when it does not exist.
pub fn open_dir_in(root: &Root, rel: &str) -> anyhow::Result<Option<OwnedFd>> {
    match root.open_dir(rel) {
        Ok(fd) => Ok(Some(fd)),
        Err(crate::sys::inroot::Error::Io { source, .. })
            if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// True when `name` in `dir` exists (not followed, if a symlink).
fn exists_at(dir: &OwnedFd, name: &str) -> bool {
    fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

/// openssh-server is in the tree: its config or its daemon.
pub fn has_sshd(root: &Root, etc_ssh: Option<&OwnedFd>) -> bool {
    etc_ssh.is_some_and(|d| exists_at(d, "sshd_config"))
        || open_dir_in(root, "usr/sbin")
            .ok()
            .flatten()
            .is_some_and(|d| exists_at(&d, "sshd"))
}

/// Names of the host key files (private and public) in `dir`, read from the open
/// descriptor itself: nothing is resolved by name again.
fn key_files(dir: &OwnedFd) -> anyhow::Result<Vec<String>> {
    let mut names = crate::sys::inroot::list_fd(dir.as_fd()).context("listing etc/ssh")?;
    names.retain(|n| n.starts_with(PREFIX));
    Ok(names)
}

/// Applies `keys` to the root `root`; `hostname` goes in the keys' comment.
pub fn apply(root: &Root, hostname: &str, keys: HostKeys) -> anyhow::Result<()> {
    let image = root.label();
    let ssh = open_dir_in(root, "etc/ssh")?;
    let existing = match &ssh {
        Some(d) => key_files(d)?,
        None => Vec::new(),
    };
    let has_private = existing.iter().any(|n| n.ends_with("_key"));
    if keys == HostKeys::Keep && has_private {
        return Ok(());
    }
    let make = keys != HostKeys::Strip && has_sshd(root, ssh.as_ref());
    let Some(ssh) = ssh else {
        // No /etc/ssh: no openssh-server, nothing to remove (a bare sshd binary without
        // its config dir would not start anyway).
        return Ok(());
    };
    let made = if make { generate(hostname)? } else { None };
    for n in &existing {
        unlinkat(ssh.as_fd(), n.as_str(), UnlinkatFlags::NoRemoveDir)
            .with_context(|| format!("removing {}/etc/ssh/{n}", image.display()))?;
    }
    let Some((dir, _guard)) = made else {
        if make {
            eprintln!(
                "warning: ssh-keygen is not installed on this host (package openssh-client); \
                 {hostname} makes its own SSH host keys when it first boots"
            );
        }
        return Ok(());
    };
    // The keys belong to the slot's root, which in a tree already shifted for a user
    // namespace is not UID 0: whoever owns /etc/ssh.
    let st = fstat(ssh.as_fd()).context("stat of etc/ssh")?;
    for t in TYPES {
        for (name, mode) in [
            (format!("{PREFIX}{t}_key"), 0o600),
            (format!("{PREFIX}{t}_key.pub"), 0o644),
        ] {
            let bytes = fs::read(dir.join(&name)).with_context(|| format!("reading {name}"))?;
            let fd = openat(
                ssh.as_fd(),
                name.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            )
            .with_context(|| format!("creating {}/etc/ssh/{name}", image.display()))?;
            fchown(
                fd.as_fd(),
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )?;
            let mut f = fs::File::from(fd);
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}/etc/ssh/{name}", image.display()))?;
        }
    }
    Ok(())
}

/// Three new key pairs in a fresh 0700 directory (removed when the guard drops), or `None`
/// when there is no ssh-keygen on the host. The three run at once: RSA takes the longest.
fn generate(hostname: &str) -> anyhow::Result<Option<(std::path::PathBuf, tempfile::TempDir)>> {
    let tmp = tempfile::Builder::new()
        .prefix("slot-os-hostkeys-")
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir()
        .context("making a private directory for new SSH host keys")?;
    let mut children = Vec::new();
    for t in TYPES {
        let spawned = crate::sys::tool("ssh-keygen")
            .args(["-q", "-N", "", "-t", t, "-C"])
            .arg(format!("root@{hostname}"))
            .arg("-f")
            .arg(tmp.path().join(format!("{PREFIX}{t}_key")))
            .stdin(Stdio::null())
            .spawn();
        match spawned {
            Ok(c) => children.push((t, c)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("running ssh-keygen"),
        }
    }
    for (t, mut c) in children {
        let st = c.wait().context("waiting for ssh-keygen")?;
        if !st.success() {
            bail!("ssh-keygen -t {t} failed ({st})");
        }
    }
    Ok(Some((tmp.path().to_path_buf(), tmp)))
}

/// A unit for the image: a slot made from it by other means than slot-os (`machinectl
/// clone`, a copy) makes its own keys before sshd starts, instead of sshd failing for want
/// of any. Slots slot-os makes have keys already, so the condition skips it there.
pub const KEYGEN_UNIT_NAME: &str = "slot-os-ssh-keygen.service";
pub const KEYGEN_UNIT: &str = "\
# Installed by slot-os make-base-image: the image carries no SSH host keys; a slot
# copied from it by hand makes its own at first boot.
[Unit]
Description=SSH host keys of this slot
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
ConditionFileIsExecutable=/usr/bin/ssh-keygen
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
";
