//! One helper at a time changes config and images: an exclusive flock on
//! /run/slot-os/lock, held for the whole command (released by the kernel if we die).
//! Commands that replace or move a slot's root also take the image's own lock, the one
//! systemd-nspawn and machined take ([`ImageLock`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use slot_config::Paths;

pub struct Lock {
    _flock: Flock<File>,
}

/// How long a helper waits for another one's lock by default (`SLOT_OS_LOCK_TIMEOUT`, in
/// seconds, changes it): long enough for a backup or an image copy to finish, short
/// enough that a stuck helper is reported instead of waited for forever.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

fn lock_timeout() -> Duration {
    std::env::var("SLOT_OS_LOCK_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(LOCK_TIMEOUT, Duration::from_secs)
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Who holds the lock, as its holder wrote it: "PID N: slot-os ARGS".
fn holder(path: &Path) -> String {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "another slot-os".to_string())
}

pub fn exclusive(paths: &Paths) -> anyhow::Result<Lock> {
    take(paths, true)?.context("the helper lock was not taken")
}

/// The lock if no other helper holds it now, without waiting (for work that the next run
/// can do as well, such as settling an interrupted move).
pub fn try_exclusive(paths: &Paths) -> anyhow::Result<Option<Lock>> {
    take(paths, false)
}

fn take(paths: &Paths, wait: bool) -> anyhow::Result<Option<Lock>> {
    let dir = paths.run_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("lock");
    let open = || open_lock_file(&path).with_context(|| format!("opening {}", path.display()));
    let mut flock = match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) if !wait => return Ok(None),
        Err((_, Errno::EWOULDBLOCK)) => wait_for(&path, open()?, lock_timeout())?,
        Err((_, e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    };
    // Said to whoever waits for us next. The file's content is only a message: the flock
    // is the lock.
    let me = format!(
        "PID {}: {}\n",
        std::process::id(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = flock
        .set_len(0)
        .and_then(|()| flock.write_all(me.as_bytes()));
    Ok(Some(Lock { _flock: flock }))
}

/// A lock of its own for a step that takes milliseconds and must not wait behind a
/// long-held helper lock (a slot's unit runs `disk-apply` while `build` may hold that one):
/// an exclusive flock on /run/slot-os/NAME.lock, waited for without a limit.
pub fn brief(paths: &Paths, name: &str) -> anyhow::Result<Lock> {
    let dir = paths.run_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let f = open_lock_file(&path).with_context(|| format!("opening {}", path.display()))?;
    let flock = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(Lock { _flock: flock })
}

/// Blocks in flock(2) on a thread of its own, so waiting ends the moment the holder
/// releases the lock, or at `limit` with who holds it.
fn wait_for(path: &Path, f: File, limit: Duration) -> anyhow::Result<Flock<File>> {
    eprintln!(
        "slot-os: waiting for the helper lock {}, held by {}",
        path.display(),
        holder(path)
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.with_context(|| format!("locking {}", path.display())),
        Err(_) => anyhow::bail!(
            "gave up after {} s waiting for the helper lock {}, still held by {} \
             (let it finish or end it; SLOT_OS_LOCK_TIMEOUT=SECONDS waits longer)",
            limit.as_secs(),
            path.display(),
            holder(path)
        ),
    }
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
    use super::*;

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

    #[test]
    fn a_held_lock_names_its_holder_and_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let open = || open_lock_file(&path).unwrap();
        let mut held = Flock::lock(open(), FlockArg::LockExclusive).unwrap();
        held.write_all(b"PID 42: slot-os backup 0 x\n").unwrap();
        let e = wait_for(&path, open(), Duration::from_millis(100)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("gave up after 0 s"), "{msg}");
        assert!(
            msg.contains("still held by PID 42: slot-os backup 0 x"),
            "{msg}"
        );
        drop(held);
        assert!(wait_for(&path, open(), Duration::from_secs(5)).is_ok());
    }
}
