//! Slot images on disk: preparing a fresh root (identity, mount points) and swapping a
//! finished image into place by rename, so an interrupted run never leaves half an image
//! under the real name.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::sys::inroot;

/// `struct btrfs_ioctl_vol_args` of linux/btrfs.h.
#[repr(C)]
pub struct BtrfsVolArgs {
    fd: i64,
    name: [u8; 4088],
}

nix::ioctl_write_ptr!(btrfs_subvol_create, 0x94, 14, BtrfsVolArgs);

/// `struct btrfs_ioctl_vol_args_v2` of linux/btrfs.h (4096 bytes).
#[repr(C)]
pub struct BtrfsVolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

nix::ioctl_write_ptr!(btrfs_snap_create_v2, 0x94, 23, BtrfsVolArgsV2);
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;

/// A btrfs snapshot of subvolume `src` at `dest` (same file system): milliseconds,
/// whatever the image's size.
pub fn snapshot(src: &Path, dest: &Path, read_only: bool) -> anyhow::Result<()> {
    let parent = dest.parent().context("snapshot path has no parent")?;
    let name = dest
        .file_name()
        .context("snapshot path has no name")?
        .as_encoded_bytes();
    let mut args = BtrfsVolArgsV2 {
        fd: 0,
        transid: 0,
        flags: if read_only { BTRFS_SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; 4040],
    };
    anyhow::ensure!(name.len() < args.name.len(), "snapshot name too long");
    args.name[..name.len()].copy_from_slice(name);
    let s = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    args.fd = std::os::fd::AsRawFd::as_raw_fd(&s) as i64;
    let dir = File::open(parent).with_context(|| format!("opening {}", parent.display()))?;
    // SAFETY: args is a properly laid out btrfs_ioctl_vol_args_v2 that outlives the call.
    unsafe { btrfs_snap_create_v2(std::os::fd::AsRawFd::as_raw_fd(&dir), &args) }
        .map_err(std::io::Error::from)
        .with_context(|| format!("btrfs snapshot of {} at {}", src.display(), dest.display()))?;
    Ok(())
}

nix::ioctl_write_ptr!(btrfs_snap_destroy, 0x94, 15, BtrfsVolArgs);

/// Deletes a subvolume with everything in it, read-only or not.
pub fn delete_subvolume(p: &Path) -> anyhow::Result<()> {
    let parent = p.parent().context("subvolume path has no parent")?;
    let name = p
        .file_name()
        .context("subvolume path has no name")?
        .as_encoded_bytes();
    let mut args = BtrfsVolArgs {
        fd: 0,
        name: [0; 4088],
    };
    anyhow::ensure!(name.len() < args.name.len(), "subvolume name too long");
    args.name[..name.len()].copy_from_slice(name);
    let dir = File::open(parent).with_context(|| format!("opening {}", parent.display()))?;
    let id = crate::storage::quota::qgroup::subvolume_id_of(p).ok();
    // SAFETY: as for btrfs_subvol_create.
    unsafe { btrfs_snap_destroy(std::os::fd::AsRawFd::as_raw_fd(&dir), &args) }
        .map_err(std::io::Error::from)
        .with_context(|| format!("deleting subvolume {}", p.display()))?;
    // Its qgroup (and with it a disk limit) would linger where quotas are on.
    if let Some(id) = id {
        crate::storage::quota::qgroup::destroy(parent, id);
    }
    Ok(())
}

/// True when `p` is the root of a btrfs subvolume (its inode is 256).
pub fn is_subvolume(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    is_btrfs(p) && fs::metadata(p).is_ok_and(|m| m.ino() == 256)
}

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

pub fn is_btrfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type().0 == BTRFS_SUPER_MAGIC)
}

/// A new empty directory; on btrfs a subvolume, so that machined's CloneImage can
/// snapshot it in milliseconds instead of copying every file.
pub fn create_image_dir(path: &Path) -> anyhow::Result<bool> {
    let parent = path.parent().context("image path has no parent")?;
    if is_btrfs(parent) {
        let name = path
            .file_name()
            .context("image path has no name")?
            .as_encoded_bytes();
        let mut args = BtrfsVolArgs {
            fd: 0,
            name: [0; 4088],
        };
        if name.len() < args.name.len() {
            args.name[..name.len()].copy_from_slice(name);
            let dir =
                File::open(parent).with_context(|| format!("opening {}", parent.display()))?;
            // SAFETY: args is a properly laid out btrfs_ioctl_vol_args that outlives the call.
            if unsafe { btrfs_subvol_create(std::os::fd::AsRawFd::as_raw_fd(&dir), &args) }.is_ok()
            {
                return Ok(true);
            }
        }
    }
    fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(false)
}

/// A new random machine ID (32 lowercase hex digits, UUID v4 layout like systemd's).
pub fn new_machine_id() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Gives an image its own identity: machine ID (clones would otherwise share one, and
/// with it journal directories and networkd's MAC addresses), hostname and SSH host keys.
/// Every path is resolved inside the image (`inroot`): the image's root user may have made
/// any of them a symlink to a host file.
pub fn set_identity(
    image: &Path,
    hostname: &str,
    machine_id: Option<&str>,
    keys: crate::storage::hostkeys::HostKeys,
) -> anyhow::Result<()> {
    set_identity_in(&inroot::Root::open(image)?, hostname, machine_id, keys)
}

/// [`set_identity`] of a root already open (an overlay slot's root, mounted for this).
pub fn set_identity_in(
    root: &inroot::Root,
    hostname: &str,
    machine_id: Option<&str>,
    keys: crate::storage::hostkeys::HostKeys,
) -> anyhow::Result<()> {
    // Removed first: where var/lib/dbus is a symlink to /etc, its machine-id is the
    // image's own /etc/machine-id, which is written next.
    root.remove("var/lib/dbus/machine-id")?;
    let id = machine_id.map(|m| format!("{m}\n")).unwrap_or_default();
    root.write_file("etc/machine-id", id.as_bytes(), 0o444)?;
    set_hostname(root, hostname)?;
    crate::storage::hostkeys::apply(root, hostname, keys)
}

/// Writes the image's hostname and names it on /etc/hosts' `127.0.1.1` line, as Debian's
/// installer does for a host. An image made from a host keeps the host's name there
/// otherwise: the slot cannot resolve its own name from files, and on Debian 13 every boot
/// then waited about 12 s for DNS (rsyslog, sshd).
pub fn set_hostname(root: &inroot::Root, hostname: &str) -> anyhow::Result<()> {
    root.write_file("etc/hostname", format!("{hostname}\n").as_bytes(), 0o644)?;
    let old = root.read_file("etc/hosts", 1 << 20)?;
    let text = hosts_naming(
        old.as_deref().map(String::from_utf8_lossy).as_deref(),
        hostname,
    );
    root.write_file("etc/hosts", text.as_bytes(), 0o644)?;
    Ok(())
}

/// `hosts` (None: the file is missing) with every `127.0.1.1` line naming `hostname` only,
/// or such a line added after `127.0.0.1`'s; other lines are kept as they are.
fn hosts_naming(hosts: Option<&str>, hostname: &str) -> String {
    let ours = format!("127.0.1.1\t{hostname}");
    let hosts =
        hosts.unwrap_or("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut out: Vec<String> = Vec::new();
    let mut named = false;
    for line in hosts.lines() {
        if line.split_whitespace().next() == Some("127.0.1.1") {
            if !named {
                out.push(ours.clone());
                named = true;
            }
            continue;
        }
        out.push(line.to_string());
    }
    if !named {
        let at = out
            .iter()
            .position(|l| l.split_whitespace().next() == Some("127.0.0.1"))
            .map_or(0, |i| i + 1);
        out.insert(at, ours);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The extended attribute on an image's root directory that names the backup it was last
/// restored from. In the `trusted.` namespace: only the host's root can set or read it, so
/// a slot (whose root user owns that directory) cannot claim a restore that did not happen.
const RESTORED_XATTR: &str = "trusted.slot-os.restored";

/// The backup an image was last restored from: its name and when it was made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    pub backup: String,
    pub created_unix: u64,
}

impl Restored {
    fn encode(&self) -> String {
        format!("{} {}", self.backup, self.created_unix)
    }
    fn decode(v: &[u8]) -> Option<Restored> {
        let s = std::str::from_utf8(v).ok()?;
        let (name, created) = s.split_once(' ')?;
        let ok = !name.is_empty()
            && name.len() <= 2 * slot_config::names::MAX_NAME_LEN + 1
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        Some(Restored {
            backup: ok.then(|| name.to_string())?,
            created_unix: created.parse().ok()?,
        })
    }
}

fn c_path(p: &Path) -> anyhow::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .with_context(|| format!("{} has a NUL byte", p.display()))
}

/// Marks the image at `root` (a directory the helper made) as restored from `r`. Fails
/// where the file system has no trusted xattrs.
pub fn mark_restored(root: &Path, r: &Restored) -> anyhow::Result<()> {
    let (p, n, v) = (
        c_path(root)?,
        std::ffi::CString::new(RESTORED_XATTR)?,
        r.encode(),
    );
    // SAFETY: NUL-terminated path and name, a value buffer of the given length.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting {RESTORED_XATTR} on {}", root.display()));
    }
    Ok(())
}

/// The backup the image at `root` was last restored from, if it carries a valid mark.
pub fn restored_from(root: &Path) -> Option<Restored> {
    let (p, n) = (
        c_path(root).ok()?,
        std::ffi::CString::new(RESTORED_XATTR).ok()?,
    );
    let mut buf = [0u8; 256];
    // SAFETY: NUL-terminated path and name, a buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let len = usize::try_from(len).ok()?;
    Restored::decode(&buf[..len])
}

/// Removes a restore mark from the image at `root` (a clone or an import is no restore;
/// a mark the base image or an export file carried is not this image's).
pub fn clear_restored(root: &Path) -> anyhow::Result<()> {
    let (p, n) = (c_path(root)?, std::ffi::CString::new(RESTORED_XATTR)?);
    // SAFETY: NUL-terminated path and name.
    if unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) {
            return Err(e)
                .with_context(|| format!("removing {RESTORED_XATTR} from {}", root.display()));
        }
    }
    Ok(())
}

/// The machine ID an image currently has, if any (read inside the image: a symlink
/// there must not hand it the host's ID).
pub fn machine_id(image: &Path) -> Option<String> {
    machine_id_in(&inroot::Root::open(image).ok()?)
}

/// [`machine_id`] of a root already open.
pub fn machine_id_in(root: &inroot::Root) -> Option<String> {
    let bytes = root.read_file("etc/machine-id", 64).ok()??;
    let s = String::from_utf8(bytes).ok()?;
    let s = s.trim();
    (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_string())
}

/// Directories a bootable root must have even though their content was not copied.
pub fn make_mount_points(image: &Path) -> anyhow::Result<()> {
    let root = inroot::Root::open(image)?;
    for (d, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("var/tmp", 0o1777),
        ("var/lib/machines", 0o700),
    ] {
        root.mkdir_mode(d, mode)?;
    }
    Ok(())
}

/// Refuses a tree that holds device nodes other than the harmless ones of /dev: nspawn
/// gives a slot its own /dev, so a node anywhere else is only a way to a host device.
pub fn refuse_devices(image: &Path, what: &str) -> anyhow::Result<()> {
    let found = inroot::Root::open(image)?.devices()?;
    if !found.is_empty() {
        let mut list = found.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if found.len() > 5 {
            list.push_str(&format!(" and {} more", found.len() - 5));
        }
        return Err(crate::error::bad_input(format!(
            "{what} holds device nodes ({list}); a slot gets its own /dev from nspawn, other device nodes are refused"
        )));
    }
    Ok(())
}

/// Puts the finished tree `new` at `dest`. An existing `dest` is exchanged with `new` in
/// one `renameat2(RENAME_EXCHANGE)`, so a crash at any point leaves either the old or the
/// new tree at `dest`, never neither and never a mix; the old tree (now at `new`) is
/// deleted afterwards.
pub fn swap_into_place(new: &Path, dest: &Path) -> anyhow::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    // The new tree must be on disk before a rename makes it the one in use: after a
    // power cut a renamed directory of unwritten files would be neither tree.
    sync_fs(new)?;
    if dest.symlink_metadata().is_err() {
        return fs::rename(new, dest)
            .with_context(|| format!("renaming {} to {}", new.display(), dest.display()));
    }
    renameat2(AT_FDCWD, new, AT_FDCWD, dest, RenameFlags::RENAME_EXCHANGE)
        .with_context(|| format!("exchanging {} with {}", new.display(), dest.display()))?;
    remove_later(new)
}

/// Deletes the tree at `p` without making the caller wait: a subvolume at once (that is
/// one ioctl), anything else is renamed to a hidden `.slot-os-trash-*` sibling and
/// removed by a detached `rm`, since deleting a root file system file by file takes
/// seconds on ext4. Trash an interrupted `rm` leaves is removed by the next call.
pub fn remove_later(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    if is_subvolume(p) || !p.is_dir() {
        return remove_any(p);
    }
    let trash = sibling(p, &format!(".slot-os-trash-{}-", std::process::id()));
    fs::rename(p, &trash).with_context(|| format!("renaming {} to trash", p.display()))?;
    let dir = trash.parent().unwrap_or(Path::new("/"));
    let mut all: Vec<std::path::PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".slot-os-trash-")
        })
        .map(|e| e.path())
        .collect();
    all.sort();
    let mut rm = Command::new("rm");
    rm.args(["-rf", "--one-file-system", "--"])
        .args(&all)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches rm from our session so it
    // outlives us and a terminal hangup.
    unsafe {
        rm.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    if rm.spawn().is_err() {
        return remove_any(&trash);
    }
    Ok(())
}

/// syncfs(2) on the file system holding `p`.
pub fn sync_fs(p: &Path) -> anyhow::Result<()> {
    let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
    nix::unistd::syncfs(&f).with_context(|| format!("syncing the file system of {}", p.display()))
}

/// Removes a tree whatever it is: a btrfs subvolume, a directory or a file.
pub fn remove_any(p: &Path) -> anyhow::Result<()> {
    if is_subvolume(p) {
        delete_subvolume(p)
    } else if p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
        remove_tree(p)
    } else {
        match fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", p.display()))
            }
            _ => Ok(()),
        }
    }
}

/// `dir/.PREFIXname`: hidden from machined's image list and from `build`.
pub fn sibling(dest: &Path, prefix: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!("{prefix}{name}"))
}

pub fn remove_tree(p: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_names_the_slot_on_127_0_1_1() {
        let host = "127.0.0.1\tlocalhost\n127.0.1.1\tstock.lan stock\n\n# The following lines\n::1\tlocalhost ip6-localhost\n";
        assert_eq!(
            super::hosts_naming(Some(host), "slot01"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tslot01\n\n# The following lines\n::1\tlocalhost ip6-localhost\n"
        );
        // no such line: added after localhost; twice: one left
        assert_eq!(
            super::hosts_naming(Some("127.0.0.1 localhost\n10.0.0.5 db\n"), "a"),
            "127.0.0.1 localhost\n127.0.1.1\ta\n10.0.0.5 db\n"
        );
        assert_eq!(
            super::hosts_naming(Some("127.0.1.1 x\n127.0.1.1 y\n"), "b"),
            "127.0.1.1\tb\n"
        );
        assert!(super::hosts_naming(None, "c").contains("127.0.1.1\tc\n"));
    }

    #[test]
    fn restore_marks_decode_only_what_they_encode() {
        use super::Restored;
        let r = Restored {
            backup: "slot01.before-upgrade".into(),
            created_unix: 1_733_300_000,
        };
        assert_eq!(Restored::decode(r.encode().as_bytes()), Some(r));
        for bad in [
            "",
            "x",
            "slot01.a",
            "Slot01.a 1",
            "../x 1",
            "a b 1",
            "a -1",
            "a 1 2",
            "a\n 1",
        ] {
            assert_eq!(Restored::decode(bad.as_bytes()), None, "{bad:?}");
        }
    }

    /// Needs root (trusted xattrs) and a file system that has them (the tests' target dir).
    #[test]
    fn a_restore_mark_is_set_read_and_cleared() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("slot-os-mark-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = super::Restored {
            backup: "slot02.nightly".into(),
            created_unix: 7,
        };
        assert_eq!(super::restored_from(&dir), None);
        super::clear_restored(&dir).unwrap();
        super::mark_restored(&dir, &r).unwrap();
        assert_eq!(super::restored_from(&dir), Some(r));
        super::clear_restored(&dir).unwrap();
        assert_eq!(super::restored_from(&dir), None);
        std::fs::remove_dir(&dir).unwrap();
    }
}
