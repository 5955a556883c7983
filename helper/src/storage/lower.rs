//! Versions of a base image: the read-only lowers of overlay slots.
//!
//! A slot's lower must never change under it, yet the base image (`MACHINES/IMAGE`) is an
//! ordinary machined image that `make-base-image`, `machinectl shell` or `systemd-nspawn -D`
//! change in place. So overlay slots never use it directly: they use a version, a copy
//! taken once (`MACHINES/.slot-os/lower/IMAGE@N/root`) and never written again. A new
//! version is made only when the base changed since the newest one, which a fingerprint of
//! the base's metadata tells (every change to a file changes its ctime, every change to a
//! directory's entries its directory's mtime and ctime). Slots are pinned to one version
//! and move to another only when rebuilt or rebased. A version no slot and no backup uses
//! is deleted (`prune`), automatically after the commands that drop a use.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::layout::{lowers_dir, HIDDEN};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("base image {0} does not exist; run `slot-os make-base-image` first")]
    NoBase(PathBuf),
    #[error("base image {0} changed while a version of it was being copied; nothing was kept; run the command again once nothing changes it")]
    Changed(PathBuf),
    #[error("copying {from} to {to} failed ({why})")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        why: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The error of an I/O step on `path` (also used by `layer`).
pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Version `number` of base image `image`: its id is `IMAGE@N`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub image: String,
    pub number: u32,
}

impl Version {
    pub fn id(&self) -> String {
        format!("{}@{}", self.image, self.number)
    }

    /// `IMAGE@N` with a valid image name, as written in a pin or a backup's metadata.
    pub fn parse(s: &str) -> Option<Version> {
        let (image, n) = s.trim().rsplit_once('@')?;
        slot_config::names::check_name("image", image).ok()?;
        let number = n.parse().ok().filter(|n| *n > 0)?;
        Some(Version {
            image: image.to_string(),
            number,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.image, self.number)
    }
}

/// What is known about a version, kept beside its tree.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub image: String,
    pub number: u32,
    /// Fingerprint of the base image when the version was copied from it.
    pub fingerprint: String,
    /// Entries of the tree (files, directories, links...).
    pub entries: u64,
    pub created_unix: u64,
}

/// `MACHINES/.slot-os/lower/IMAGE@N`.
pub fn dir(machines: &Path, v: &Version) -> PathBuf {
    lowers_dir(machines).join(v.id())
}

/// The tree of a version: what overlay slots pinned to it have as their lower.
pub fn root(machines: &Path, v: &Version) -> PathBuf {
    dir(machines, v).join("root")
}

const META: &str = "version.json";

/// Every complete version (a directory with its metadata), oldest first.
pub fn list(machines: &Path) -> Vec<(Version, Meta)> {
    let mut out: Vec<(Version, Meta)> = fs::read_dir(lowers_dir(machines))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = Version::parse(e.file_name().to_str()?)?;
            let meta = fs::read(e.path().join(META)).ok()?;
            Some((v, serde_json::from_slice(&meta).ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A fingerprint of a tree's metadata (names, types, modes, owners, sizes, inode numbers,
/// mtimes and ctimes of every entry) and its number of entries. The walk never follows a
/// symlink and stays on the tree's file system.
pub fn fingerprint(tree: &Path) -> Result<(String, u64)> {
    let top = rfs::open(
        tree,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("opening", tree)(e.into()))?;
    let dev = rfs::fstat(&top)
        .map_err(|e| io("stat", tree)(e.into()))?
        .st_dev;
    let mut h = Sha256::new();
    let mut n = 0;
    walk(top.as_fd(), "", dev, 0, &mut h, &mut n).map_err(|e| io("walking", tree)(e.into()))?;
    Ok((format!("{:x}", h.finalize()), n))
}

fn walk(
    dir: BorrowedFd,
    at: &str,
    dev: u64,
    depth: usize,
    h: &mut Sha256,
    n: &mut u64,
) -> std::result::Result<(), rustix::io::Errno> {
    if depth > 512 {
        return Err(rustix::io::Errno::LOOP);
    }
    let mut names: Vec<std::ffi::CString> = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    for name in names {
        let st = rfs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        *n += 1;
        let path = format!("{at}/{}", name.to_string_lossy());
        h.update(
            format!(
                "{path}\0{:o}\0{}\0{}\0{}\0{}\0{}.{}\0{}.{}\0{}\n",
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_ino,
                st.st_mtime,
                st.st_mtime_nsec,
                st.st_ctime,
                st.st_ctime_nsec,
                st.st_rdev,
            )
            .as_bytes(),
        );
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory && st.st_dev == dev {
            let sub = rfs::openat(
                dir,
                name.as_c_str(),
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            walk(sub.as_fd(), &path, dev, depth + 1, h, n)?;
        }
    }
    Ok(())
}

/// Makes `MACHINES/.slot-os` (root only: the versions hold every file of the base, the
/// layers every file of the slots) and the directory below it.
pub fn private_dirs(machines: &Path, sub: &Path) -> Result<()> {
    let hidden = machines.join(HIDDEN);
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&hidden)
        .map_err(io("creating", &hidden))?;
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(sub)
        .map_err(io("creating", sub))
}

/// The version of base image `image` that new overlay slots get: the newest one if the
/// base has not changed since it was taken, else a new one copied now. `made` says which.
/// Call with the helper lock held.
pub fn current(machines: &Path, image: &str) -> Result<(Version, bool)> {
    let base = machines.join(image);
    if !base.is_dir() {
        return Err(Error::NoBase(base));
    }
    let (fp, entries) = fingerprint(&base)?;
    let newest = list(machines).into_iter().rfind(|(v, _)| v.image == image);
    if let Some((v, m)) = &newest {
        if m.fingerprint == fp {
            return Ok((v.clone(), false));
        }
    }
    let v = Version {
        image: image.to_string(),
        number: newest.map_or(1, |(v, _)| v.number + 1),
    };
    make(machines, &base, &v, &fp, entries)?;
    Ok((v, true))
}

/// Copies the base into a new version under a hidden name and renames it into place once
/// it is complete and on disk; the base must not have changed meanwhile.
fn make(machines: &Path, base: &Path, v: &Version, fp: &str, entries: u64) -> Result<()> {
    let lowers = lowers_dir(machines);
    private_dirs(machines, &lowers)?;
    sweep(&lowers);
    let tmp = lowers.join(format!(".new-{}-{}", v.id(), std::process::id()));
    fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
    let made = copy_tree(base, &tmp.join("root")).and_then(|()| {
        if fingerprint(base)?.0 != fp {
            return Err(Error::Changed(base.to_path_buf()));
        }
        let meta = Meta {
            image: v.image.clone(),
            number: v.number,
            fingerprint: fp.to_string(),
            entries,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let text = serde_json::to_string_pretty(&meta).unwrap_or_default();
        fs::write(tmp.join(META), text).map_err(io("writing", &tmp.join(META)))?;
        crate::storage::image::sync_fs(&tmp).map_err(|e| Error::Copy {
            from: base.to_path_buf(),
            to: tmp.clone(),
            why: format!("{e:#}"),
        })?;
        let to = dir(machines, v);
        fs::rename(&tmp, &to).map_err(io("renaming into", &to))
    });
    if made.is_err() {
        remove(&tmp);
    }
    made
}

/// A read-only btrfs snapshot where the base is a subvolume, else `cp -a` (reflinks where
/// the file system has them: xfs, btrfs), not crossing into other file systems.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let failed = |why: String| Error::Copy {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        why,
    };
    if crate::storage::image::is_subvolume(from) {
        return crate::storage::image::snapshot(from, to, true)
            .map_err(|e| failed(format!("{e:#}")));
    }
    let st = crate::sys::tool("cp")
        .args(["-a", "--reflink=auto", "--one-file-system", "--"])
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| failed(format!("running cp: {e}")))?;
    if st.success() {
        Ok(())
    } else {
        Err(failed(format!("cp {st}")))
    }
}

/// Removes a version's tree (a read-only snapshot is deleted as a subvolume first).
fn remove(dir: &Path) {
    let r = dir.join("root");
    if crate::storage::image::is_subvolume(&r) {
        let _ = crate::storage::image::delete_subvolume(&r);
    }
    let _ = crate::storage::image::remove_later(dir);
}

/// What an interrupted `make` left: hidden `.new-*` trees (only one helper runs at a time,
/// under the helper lock, so none belongs to a live run).
fn sweep(lowers: &Path) {
    for e in fs::read_dir(lowers).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(".new-") {
            remove(&e.path());
        }
    }
}

/// The versions backups in `backup_dir` were taken on (their metadata's `lower`): a
/// restore of an overlay slot's backup needs its version back.
pub fn used_by_backups(backup_dir: &Path) -> BTreeSet<String> {
    fs::read_dir(backup_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
            Some(Version::parse(v.get("lower")?.as_str()?)?.id())
        })
        .collect()
}

/// Deletes every version whose id is not in `used`; returns the ids deleted.
pub fn prune(machines: &Path, used: &BTreeSet<String>) -> Vec<String> {
    let lowers = lowers_dir(machines);
    sweep(&lowers);
    let mut gone = Vec::new();
    for e in fs::read_dir(&lowers).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if Version::parse(&name).is_some() && !used.contains(&name) {
            remove(&e.path());
            gone.push(name);
        }
    }
    gone.sort();
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids() {
        let v = Version::parse("slot-os@3").unwrap();
        assert_eq!((v.image.as_str(), v.number), ("slot-os", 3));
        assert_eq!(v.id(), "slot-os@3");
        for bad in ["slot-os", "slot-os@0", "@1", "../x@1", "Slot@1", "a@b"] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_see_every_change_and_follow_no_symlink() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().join("base");
        fs::create_dir_all(b.join("etc")).unwrap();
        fs::write(b.join("etc/hostname"), "a\n").unwrap();
        std::os::unix::fs::symlink("/etc", b.join("host-etc")).unwrap();
        let (f0, n) = fingerprint(&b).unwrap();
        assert_eq!(n, 3, "the symlink is an entry, not a way into /etc");
        assert_eq!(fingerprint(&b).unwrap().0, f0, "stable");
        fs::write(b.join("etc/hostname"), "b\n").unwrap();
        let f1 = fingerprint(&b).unwrap().0;
        assert_ne!(f1, f0, "content change");
        fs::set_permissions(
            b.join("etc/hostname"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let f2 = fingerprint(&b).unwrap().0;
        assert_ne!(f2, f1, "mode change");
        fs::write(b.join("etc/new"), "").unwrap();
        assert_ne!(fingerprint(&b).unwrap().0, f2, "new file");
    }

    #[test]
    fn a_version_is_made_once_per_change_and_pruned_when_unused() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        fs::create_dir_all(m.join("base/etc")).unwrap();
        fs::write(m.join("base/etc/os-release"), "ID=debian\n").unwrap();
        let (v1, made) = current(m, "base").unwrap();
        assert!(made);
        assert_eq!(v1.id(), "base@1");
        assert_eq!(
            fs::read_to_string(root(m, &v1).join("etc/os-release")).unwrap(),
            "ID=debian\n"
        );
        assert_eq!(current(m, "base").unwrap(), (v1.clone(), false));
        fs::write(m.join("base/etc/new"), "x").unwrap();
        let (v2, made) = current(m, "base").unwrap();
        assert!(made);
        assert_eq!(v2.id(), "base@2");
        assert!(!root(m, &v1).join("etc/new").exists(), "v1 unchanged");
        assert_eq!(list(m).len(), 2);
        let used: BTreeSet<String> = [v2.id()].into();
        assert_eq!(prune(m, &used), vec!["base@1".to_string()]);
        assert_eq!(list(m).len(), 1);
        assert!(matches!(current(m, "nope"), Err(Error::NoBase(_))));
    }
}
