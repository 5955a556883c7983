//! An overlay slot's own layer (`MACHINES/.slot-os/slot/NAME`: `upper/`, `work/` and the
//! pin `base`), and its root: the overlay of the pinned base version and the upper,
//! mounted on `MACHINES/NAME` while the slot runs, or for the helper alone (a detached
//! mount no other process sees) to write a stopped slot's identity or read its tree.
//!
//! The paths up to the upper and up to the mount point are ours: the slot controls what is
//! below them, never them. They are still resolved from a descriptor of the machines
//! directory without following any symlink (`RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`), and
//! the kernel gets descriptors, not paths: nothing planted anywhere can redirect a mount.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};

use super::layout::{layers_dir, HIDDEN, PIN, UPPER, WORK};
use super::lower::{self, Version};
use crate::sys::overlay;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {why}")]
    Refused { path: PathBuf, why: &'static str },
    #[error("{0}: no base version is recorded (its `base` file is missing or not IMAGE@N)")]
    NoPin(PathBuf),
    #[error("base version {0} is missing from {1}")]
    NoVersion(String, PathBuf),
    #[error("mounting the overlay root: {0}")]
    Mount(#[from] overlay::Error),
    #[error(transparent)]
    Lower(#[from] lower::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Lower(lower::io(what, path)(source))
}

/// Opens `rel` below the directory `base` (a path of the host's configuration) as a
/// directory, refusing any symlink on the way and anything outside `base`.
fn open_beneath(base: &Path, rel: &Path, flags: OFlags) -> Result<OwnedFd> {
    let top = rfs::open(
        base,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("opening", base)(e.into()))?;
    rfs::openat2(
        &top,
        rel,
        flags | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV | rustix::io::Errno::NOTDIR => {
            Error::Refused {
                path: base.join(rel),
                why: "not a directory of the machines directory's own (a symlink?); refusing to follow it",
            }
        }
        e => io("opening", &base.join(rel))(e.into()),
    })
}

/// The version a layer is pinned to.
pub fn pin(layer: &Path) -> Result<Version> {
    let p = layer.join(PIN);
    let text = fs::read_to_string(&p).map_err(|_| Error::NoPin(layer.to_path_buf()))?;
    Version::parse(&text).ok_or_else(|| Error::NoPin(layer.to_path_buf()))
}

/// Pins a layer to `v` (write-then-rename: a crash leaves the old pin or the new one).
pub fn set_pin(layer: &Path, v: &Version) -> Result<()> {
    let p = layer.join(PIN);
    let tmp = layer.join(format!(".{PIN}.{}", std::process::id()));
    crate::sys::replace_file(&p, &tmp, &format!("{}\n", v.id()), Some(0o644))
        .map_err(|e| io("writing", &p)(std::io::Error::other(format!("{e:#}"))))
}

/// Makes a new, empty layer at `layer` pinned to `v`: the upper's own directory takes the
/// version's root directory's mode and owner (overlayfs shows the upper's attributes for
/// the root of the merged tree).
pub fn create(machines: &Path, layer: &Path, v: &Version) -> Result<()> {
    let lower_root = lower::root(machines, v);
    let top =
        fs::metadata(&lower_root).map_err(|_| Error::NoVersion(v.id(), lower_root.clone()))?;
    if let Some(parent) = layer.parent() {
        lower::private_dirs(machines, parent)?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(layer)
        .map_err(io("creating", layer))?;
    let upper = layer.join(UPPER);
    fs::create_dir(&upper).map_err(io("creating", &upper))?;
    std::os::unix::fs::chown(&upper, Some(top.uid()), Some(top.gid()))
        .map_err(io("chown", &upper))?;
    fs::set_permissions(&upper, fs::Permissions::from_mode(top.mode() & 0o7777))
        .map_err(io("chmod", &upper))?;
    let work = layer.join(WORK);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&work)
        .map_err(io("creating", &work))?;
    set_pin(layer, v)
}

/// The layer `name` (a layer directory's name under `MACHINES/.slot-os/slot`, such as a
/// slot's image name or a hidden `.new-…` beside it), mounted for the helper alone: a
/// detached overlay of its pinned version and its upper, IDs as on disk (nothing shifted).
/// Writes through it copy up as the slot's own writes would. Dropping it unmounts it.
pub fn mount_private(machines: &Path, name: &str, stage: &Path) -> Result<OwnedFd> {
    mount(machines, name, None, stage)
}

/// The layer `name` as a slot's root: the layers idmapped to `shift` (a slot's uid base;
/// `None` for a privileged slot).
pub fn mount(machines: &Path, name: &str, shift: Option<u32>, stage: &Path) -> Result<OwnedFd> {
    let rel = Path::new(HIDDEN).join("slot").join(name);
    let layer = open_beneath(machines, &rel, OFlags::RDONLY)?;
    for sub in [UPPER, WORK] {
        open_beneath(machines, &rel.join(sub), OFlags::PATH)?;
    }
    let v = pin(&machines.join(&rel))?;
    let lower_rel = Path::new(HIDDEN).join("lower").join(v.id()).join("root");
    let lower = open_beneath(machines, &lower_rel, OFlags::RDONLY)
        .map_err(|_| Error::NoVersion(v.id(), machines.join(&lower_rel)))?;
    fs::create_dir_all(stage).map_err(io("creating", stage))?;
    let label = if name.starts_with('.') { "new" } else { name };
    let id = v.id();
    let spec = overlay::Spec {
        lowers: vec![(&id, lower.as_fd())],
        upper: Some((label, layer.as_fd())),
        shift,
        read_only: false,
    };
    Ok(overlay::mount_detached(&spec, stage)?)
}

/// The merged tree of a layer, read-only, IDs as on disk, without taking the layer's upper
/// and work directories (the upper is a second lower here): it may be read while the slot
/// runs on them, e.g. for an export of a frozen slot.
pub fn mount_read_only(machines: &Path, name: &str, stage: &Path) -> Result<OwnedFd> {
    let rel = Path::new(HIDDEN).join("slot").join(name);
    let upper = open_beneath(machines, &rel.join(UPPER), OFlags::RDONLY)?;
    let v = pin(&machines.join(&rel))?;
    let lower_rel = Path::new(HIDDEN).join("lower").join(v.id()).join("root");
    let lower = open_beneath(machines, &lower_rel, OFlags::RDONLY)
        .map_err(|_| Error::NoVersion(v.id(), machines.join(&lower_rel)))?;
    fs::create_dir_all(stage).map_err(io("creating", stage))?;
    let id = v.id();
    let spec = overlay::Spec {
        lowers: vec![(name, upper.as_fd()), (&id, lower.as_fd())],
        upper: None,
        shift: None,
        read_only: true,
    };
    Ok(overlay::mount_detached(&spec, stage)?)
}

/// A layer's merged tree from [`mount_read_only`], reached by a path that child processes
/// (GNU tar) can open: `/proc/PID/fd/N` of its root. The mount lives as long as this value.
pub struct ReadOnlyTree {
    _root: OwnedFd,
    path: PathBuf,
}

impl ReadOnlyTree {
    pub fn mount(machines: &Path, name: &str, stage: &Path) -> Result<ReadOnlyTree> {
        let m = mount_read_only(machines, name, stage)?;
        let root = overlay::root_dir(&m)?;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(&root)
        ));
        Ok(ReadOnlyTree { _root: root, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The mount point `MACHINES/NAME` (made if missing), resolved without symlinks.
fn mount_point(machines: &Path, name: &str) -> Result<OwnedFd> {
    let p = machines.join(name);
    match fs::DirBuilder::new().mode(0o755).create(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(io("creating", &p)(e));
        }
        _ => {}
    }
    open_beneath(machines, Path::new(name), OFlags::PATH)
}

/// Makes the mount point of an overlay slot's root (an empty directory machined lists as
/// the slot's image).
pub fn make_mount_point(machines: &Path, name: &str) -> Result<()> {
    mount_point(machines, name).map(drop)
}

/// Mounts slot `name`'s root on `MACHINES/NAME` for nspawn: whatever a killed earlier run
/// left mounted there is unmounted first, so the result is always exactly one fresh overlay
/// with the current pin.
pub fn mount_root(machines: &Path, name: &str, shift: Option<u32>, stage: &Path) -> Result<()> {
    unmount_root(machines, name)?;
    let mnt = mount(machines, name, shift, stage)?;
    let target = mount_point(machines, name)?;
    Ok(overlay::attach(mnt, target.as_fd())?)
}

/// Unmounts whatever is mounted on `MACHINES/NAME`; returns how many mounts went.
pub fn unmount_root(machines: &Path, name: &str) -> Result<usize> {
    let p = machines.join(name);
    match fs::symlink_metadata(&p) {
        Err(_) => return Ok(0),
        Ok(m) if !m.is_dir() => {
            return Err(Error::Refused {
                path: p,
                why: "not a directory; an overlay slot's mount point must be one",
            })
        }
        Ok(_) => {}
    }
    Ok(overlay::unmount_all(&p)?)
}

/// Whether an overlay is mounted on `MACHINES/NAME`.
pub fn is_mounted(machines: &Path, name: &str) -> bool {
    open_beneath(machines, Path::new(name), OFlags::PATH)
        .ok()
        .and_then(|fd| overlay::mounted_at(fd.as_fd()).ok())
        .is_some_and(|(root, _)| root)
}

/// `MACHINES/.slot-os/slot/NAME`.
pub fn path(machines: &Path, name: &str) -> PathBuf {
    layers_dir(machines).join(name)
}

/// Runs `f` on the root of a stopped slot's image `name`: the image directory itself, or
/// for an overlay slot its root privately mounted (writes copy up into its upper, as the
/// slot's own would). Paths inside are resolved in the root (`inroot`).
pub fn with_root<T>(
    machines: &Path,
    name: &str,
    overlay: bool,
    stage: &Path,
    f: impl FnOnce(&crate::sys::inroot::Root) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if !overlay {
        return f(&crate::sys::inroot::Root::open(&machines.join(name))?);
    }
    let mnt = mount_private(machines, name, stage)?;
    let root = crate::sys::inroot::Root::from_fd(overlay::root_dir(&mnt)?, &machines.join(name));
    f(&root)
}

/// Makes a complete layer for slot `name` on version `v` under the hidden name
/// `.new-NAME` beside its layer (removing what a killed run left there): `upper` is filled
/// by `unpack` (nothing: an empty upper), then the privately mounted root is handed to
/// `fill` (the slot's identity). Returns its path; the caller puts it into place by rename
/// ([`provision`]) or rename-exchange (a restore). Nothing is left under the hidden name if
/// it fails.
pub fn prepare(
    machines: &Path,
    name: &str,
    v: &Version,
    stage: &Path,
    unpack: impl FnOnce(&Path) -> anyhow::Result<()>,
    fill: impl FnOnce(&crate::sys::inroot::Root) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let tmp_name = format!(".new-{name}");
    let tmp = path(machines, &tmp_name);
    if tmp.symlink_metadata().is_ok() {
        crate::storage::image::remove_any(&tmp)?;
    }
    create(machines, &tmp, v)?;
    let filled = (|| -> anyhow::Result<()> {
        unpack(&tmp.join(UPPER))?;
        let mnt = mount_private(machines, &tmp_name, stage)?;
        let root =
            crate::sys::inroot::Root::from_fd(overlay::root_dir(&mnt)?, &machines.join(name));
        fill(&root)?;
        drop(root);
        drop(mnt);
        crate::storage::image::sync_fs(&tmp)
    })();
    match filled {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = crate::storage::image::remove_any(&tmp);
            Err(e)
        }
    }
}

/// A new overlay slot `name` on version `v`: [`prepare`]d with an empty upper, renamed
/// into place, then its mount point. A run killed at any point leaves no layer under the
/// slot's name.
pub fn provision(
    machines: &Path,
    name: &str,
    v: &Version,
    stage: &Path,
    fill: impl FnOnce(&crate::sys::inroot::Root) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tmp = prepare(machines, name, v, stage, |_| Ok(()), fill)?;
    let to = path(machines, name);
    if let Err(e) = fs::rename(&tmp, &to) {
        let _ = crate::storage::image::remove_any(&tmp);
        return Err(io("renaming into", &to)(e).into());
    }
    make_mount_point(machines, name)?;
    Ok(())
}

/// For a stopped overlay slot: its root unit stopped (it goes by itself once the slot is
/// stopped, StopWhenUnneeded=yes, but asynchronously) and its root unmounted, so the layer
/// can be changed. Call after checking the slot is stopped, holding its image lock.
pub fn settle_stopped(
    bus: &crate::dbus::Bus,
    machines: &Path,
    slot: &slot_config::Slot,
) -> anyhow::Result<()> {
    if let Some(Err(e)) = bus.stop_units(&[slot.root_unit()]).pop() {
        return Err(e.context(format!("stopping {}", slot.root_unit())));
    }
    unmount_root(machines, slot.image_name())?;
    Ok(())
}

/// Removes slot `name`'s root: unmounted (the slot is stopped), its layer deleted (in the
/// background, as images are) and its mount point (an empty directory) removed. Never
/// descends into a mount: a root still mounted is refused.
pub fn remove(machines: &Path, name: &str) -> Result<()> {
    unmount_root(machines, name)?;
    let mp = machines.join(name);
    if is_mounted(machines, name) {
        return Err(Error::Refused {
            path: mp,
            why: "still mounted; stop the slot first",
        });
    }
    let l = path(machines, name);
    if l.symlink_metadata().is_ok() {
        crate::storage::image::remove_later(&l)
            .map_err(|e| io("removing", &l)(std::io::Error::other(format!("{e:#}"))))?;
    }
    match fs::remove_dir(&mp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &mp)(e)),
        _ => Ok(()),
    }
}

/// Deletes the base versions no layer on disk and no backup in `backup_dir` uses any more;
/// returns their ids. Call with the helper lock held.
pub fn prune_versions(machines: &Path, backup_dir: &Path) -> Vec<String> {
    let mut used = pins(machines);
    used.extend(lower::used_by_backups(backup_dir));
    lower::prune(machines, &used)
}

/// The versions the layers on disk are pinned to (every layer, also one whose slot file is
/// gone: its data still needs its base).
pub fn pins(machines: &Path) -> std::collections::BTreeSet<String> {
    fs::read_dir(layers_dir(machines))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| pin(&e.path()).ok())
        .map(|v| v.id())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A machines dir with base version slot-os@1 holding etc/hostname; `None` (test
    /// skipped) unless we are root: mounting needs it.
    fn machines() -> Option<(tempfile::TempDir, Version)> {
        if !root() {
            eprintln!("skipped: needs root");
            return None;
        }
        let t = tempfile::tempdir_in("/var/tmp").unwrap();
        fs::create_dir_all(t.path().join("slot-os/etc")).unwrap();
        fs::write(t.path().join("slot-os/etc/hostname"), "base\n").unwrap();
        let (v, _) = lower::current(t.path(), "slot-os").unwrap();
        Some((t, v))
    }

    #[test]
    fn pins_are_read_back_and_bad_ones_refused() {
        let t = tempfile::tempdir().unwrap();
        let v = Version::parse("slot-os@2").unwrap();
        set_pin(t.path(), &v).unwrap();
        assert_eq!(pin(t.path()).unwrap(), v);
        fs::write(t.path().join(PIN), "../../etc@1\n").unwrap();
        assert!(matches!(pin(t.path()), Err(Error::NoPin(_))));
    }

    #[test]
    fn identity_written_privately_lands_in_the_upper_only() {
        let Some((t, v)) = machines() else { return };
        let m = t.path();
        let stage = m.join("stage");
        create(m, &path(m, "slot00"), &v).unwrap();
        let mnt = mount_private(m, "slot00", &stage).unwrap();
        let r = crate::sys::inroot::Root::from_fd(overlay::root_dir(&mnt).unwrap(), Path::new("x"));
        r.write_file("etc/hostname", b"slot00\n", 0o644).unwrap();
        drop(r);
        drop(mnt);
        let up = path(m, "slot00").join(UPPER);
        assert_eq!(
            fs::read_to_string(up.join("etc/hostname")).unwrap(),
            "slot00\n"
        );
        assert_eq!(
            fs::read_to_string(lower::root(m, &v).join("etc/hostname")).unwrap(),
            "base\n"
        );
        assert_eq!(fs::metadata(up.join("etc")).unwrap().uid(), 0);
    }

    #[test]
    fn symlinked_layer_paths_are_refused() {
        let Some((t, v)) = machines() else { return };
        let m = t.path();
        let elsewhere = m.join("elsewhere");
        create(m, &elsewhere, &v).unwrap();
        fs::create_dir_all(layers_dir(m)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, path(m, "slot01")).unwrap();
        let e = mount_private(m, "slot01", &m.join("stage")).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        // The mount point itself a symlink to a host directory: refused, nothing mounted.
        fs::create_dir_all(m.join("hostdir")).unwrap();
        create(m, &path(m, "slot02"), &v).unwrap();
        std::os::unix::fs::symlink(m.join("hostdir"), m.join("slot02")).unwrap();
        let e = mount_root(m, "slot02", Some(0x7000_0000), &m.join("stage")).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        assert!(fs::read_dir(m.join("hostdir")).unwrap().next().is_none());
    }

    #[test]
    fn mounting_twice_leaves_one_mount() {
        let Some((t, v)) = machines() else { return };
        let m = t.path();
        let stage = m.join("stage");
        create(m, &path(m, "slot03"), &v).unwrap();
        mount_root(m, "slot03", Some(0x7003_0000), &stage).unwrap();
        mount_root(m, "slot03", Some(0x7003_0000), &stage).unwrap();
        assert!(is_mounted(m, "slot03"));
        assert_eq!(
            fs::metadata(m.join("slot03/etc/hostname")).unwrap().uid(),
            0x7003_0000
        );
        assert_eq!(unmount_root(m, "slot03").unwrap(), 1, "one mount, not two");
        assert!(!is_mounted(m, "slot03"));
    }
}
