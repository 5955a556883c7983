//! One helper at a time changes config and images: an exclusive flock on
//! /run/slot-os/lock, held for the whole command (released by the kernel if we die).
//! Commands that replace or move a slot's root also take the image's own lock, the one
//! systemd-nspawn and machined take ([`ImageLock`]).

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use slot_config::Paths;

pub struct Lock {
    _flock: Flock<File>,
}

pub fn exclusive(paths: &Paths) -> anyhow::Result<Lock> {
    let dir = paths.run_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let flock = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(Lock { _flock: flock })
}

/// The lock systemd-nspawn and machined take on an image (systemd's image_path_lock): an
/// Open File Description write lock on `.#NAME.lck` beside the image and one on
/// `/run/systemd/nspawn/locks/inode-DEV:INO` of the image directory. While we hold it,
/// nspawn refuses to boot the image ("Directory tree … is currently busy") and machined
/// refuses to change it, so a concurrent `machinectl start` or autostart fails cleanly
/// instead of booting a root that is being swapped or renamed. Released on drop (and by
/// the kernel if we die).
pub struct ImageLock {
    files: Vec<(PathBuf, File)>,
}

/// Where nspawn's global image locks live.
const NSPAWN_LOCKS: &str = "/run/systemd/nspawn/locks";

/// A whole-file OFD lock, non-blocking; `Ok(false)` if someone else holds it.
fn ofd_lock(f: &File) -> std::io::Result<bool> {
    // SAFETY: a zeroed flock is a valid "whole file from offset 0" request.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl on an open fd with a valid flock.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Opens (creating) and locks `path` as systemd's make_lock_file does: a lock file that was
/// unlinked by its previous holder between our open and our lock is opened again.
fn lock_file(path: &Path) -> Result<Option<File>, std::io::Error> {
    loop {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(path)?;
        if !ofd_lock(&f)? {
            return Ok(None);
        }
        if f.metadata()?.nlink() > 0 {
            return Ok(Some(f));
        }
    }
}

impl ImageLock {
    /// Locks the image directories `dirs` (existing or not: a name that does not exist yet
    /// gets its local lock only). Bad input naming `what` if one is in use.
    pub fn images(dirs: &[&Path], what: &str) -> anyhow::Result<ImageLock> {
        let mut files = Vec::new();
        for dir in dirs {
            let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
                anyhow::bail!("{}: not an image path", dir.display());
            };
            let mut paths = vec![parent.join(format!(".#{}.lck", name.to_string_lossy()))];
            if let Ok(st) = fs::symlink_metadata(dir) {
                if st.is_dir() {
                    fs::create_dir_all(NSPAWN_LOCKS)
                        .with_context(|| format!("creating {NSPAWN_LOCKS}"))?;
                    paths.push(Path::new(NSPAWN_LOCKS).join(format!(
                        "inode-{}:{}",
                        st.dev(),
                        st.ino()
                    )));
                }
            }
            for p in paths {
                match lock_file(&p).with_context(|| format!("locking {}", p.display()))? {
                    Some(f) => files.push((p, f)),
                    None => {
                        return Err(crate::error::bad_input(format!(
                            "image {} is in use (a running slot, or machined or another tool is working on it); {what}",
                            dir.display()
                        )))
                    }
                }
            }
        }
        Ok(ImageLock { files })
    }
}

impl Drop for ImageLock {
    fn drop(&mut self) {
        // As systemd's release_lock_file: an exclusive holder removes the file.
        for (p, _) in &self.files {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lock_file;

    #[test]
    fn image_lock_files_exclude_each_other_until_released() {
        let dir = std::env::temp_dir().join(format!("slot-os-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(".#img.lck");
        let first = lock_file(&p).unwrap().expect("free lock");
        // OFD locks belong to the open file: a second open conflicts, also in one process.
        assert!(lock_file(&p).unwrap().is_none());
        drop(first);
        assert!(lock_file(&p).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
