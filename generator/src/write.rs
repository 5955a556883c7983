//! Writing generated files so that no reader ever sees half of one, skipping files whose
//! content is already right, and removing files of ours that the current config no longer
//! produces.
//!
//! With a thousand slots the generator makes ~3500 files, and at boot that is most of its
//! time (docs/notes/scale.md has the profile), so every file costs as few system calls and
//! path walks as can be: files are made relative to an open directory, and a file known
//! to be absent is written unnamed (`O_TMPFILE`) and given its name, complete, by `linkat`
//! (one step fewer than a temporary name and a rename, and just as atomic). A file that
//! exists, or a file system without `O_TMPFILE`, gets the temporary name and `renameat`.
//! A symlink is atomic by itself: an absent one is made in place.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;
use slot_config::render::Content;
use slot_config::GENERATED_HEADER;

/// Regular files as `fs::write` makes them: 0666 less the umask (systemd's 0022).
const FILE_MODE: u32 = 0o666;
const DIR_MODE: u32 = 0o755;

/// An output directory, open, with the names it held when the run began.
pub struct OpenDir {
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub existing: HashSet<String>,
}

/// Creates `path` if needed and opens it; lists what is in it.
pub fn open_dir(path: &Path) -> io::Result<OpenDir> {
    fs::create_dir_all(path)?;
    let fd = rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let existing = fs::read_dir(path)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    Ok(OpenDir {
        path: path.to_path_buf(),
        fd,
        existing,
    })
}

/// Makes the directory `name` in `parent` unless it exists.
pub fn ensure_subdir(parent: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `.NAME.slot-os-tmp` beside `rel` (`NAME` or `SUBDIR/NAME`).
fn tmp_name(rel: &str) -> String {
    match rel.rsplit_once('/') {
        Some((sub, name)) => format!("{sub}/.{name}.slot-os-tmp"),
        None => format!(".{rel}.slot-os-tmp"),
    }
}

/// The directory part of `rel`, "." for a plain name.
fn parent_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or(".", |(sub, _)| sub)
}

fn write_fd(fd: &OwnedFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A new file `rel` under `dir`, whole when it gets its name; false if O_TMPFILE or the
/// link could not be used (or `rel` appeared meanwhile): the caller replaces instead.
fn link_new(dir: BorrowedFd<'_>, rel: &str, bytes: &[u8]) -> bool {
    let Ok(fd) = rustix::fs::openat(
        dir,
        parent_of(rel),
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(FILE_MODE),
    ) else {
        return false;
    };
    if write_fd(&fd, bytes).is_err() {
        return false;
    }
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH (a generator runs as root); without it the
    // descriptor's /proc link does the same.
    rustix::fs::linkat(&fd, "", dir, rel, AtFlags::EMPTY_PATH).is_ok()
        || rustix::fs::linkat(
            CWD,
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
            dir,
            rel,
            AtFlags::SYMLINK_FOLLOW,
        )
        .is_ok()
}

/// `rel` under `dir` replaced by a file holding `bytes`: written under a temporary name,
/// then renamed over it.
fn replace(dir: BorrowedFd<'_>, rel: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_name(rel);
    let r = (|| -> io::Result<()> {
        let fd = rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(FILE_MODE),
        )?;
        write_fd(&fd, bytes)?;
        drop(fd);
        Ok(rustix::fs::renameat(dir, tmp.as_str(), dir, rel)?)
    })();
    if r.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    r
}

fn read_at(dir: BorrowedFd<'_>, rel: &str) -> io::Result<Vec<u8>> {
    let fd = rustix::fs::openat(
        dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    fs::File::from(fd).read_to_end(&mut out)?;
    Ok(out)
}

/// Writes `content` as `rel` (`NAME`, or `SUBDIR/NAME` in an existing subdirectory) under
/// `dir` atomically; false if it was already so. `may_exist` false means the caller knows
/// the file is absent (from the directory's listing), which saves opening it for
/// comparison and lets it be linked in new.
pub fn write_atomic(
    dir: BorrowedFd<'_>,
    rel: &str,
    content: &Content,
    may_exist: bool,
) -> io::Result<bool> {
    match content {
        Content::Text(text) => {
            if may_exist && read_at(dir, rel).is_ok_and(|old| old == text.as_bytes()) {
                return Ok(false);
            }
            if !may_exist && link_new(dir, rel, text.as_bytes()) {
                return Ok(true);
            }
            replace(dir, rel, text.as_bytes()).map(|()| true)
        }
        Content::Link(target) => {
            if may_exist
                && rustix::fs::readlinkat(dir, rel, Vec::new())
                    .is_ok_and(|old| old.as_bytes() == target.as_os_str().as_encoded_bytes())
            {
                return Ok(false);
            }
            if !may_exist && rustix::fs::symlinkat(target.as_path(), dir, rel).is_ok() {
                return Ok(true);
            }
            let tmp = tmp_name(rel);
            let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
            let r = rustix::fs::symlinkat(target.as_path(), dir, tmp.as_str())
                .and_then(|()| rustix::fs::renameat(dir, tmp.as_str(), dir, rel));
            if r.is_err() {
                let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
            }
            r.map(|()| true).map_err(io::Error::from)
        }
    }
}

/// True when the file's first line is our header (only then may we delete it).
pub fn is_ours(path: &Path) -> bool {
    let mut buf = [0u8; GENERATED_HEADER.len()];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok_and(|()| buf == GENERATED_HEADER.as_bytes())
}

/// Removes generated files in `dir` that `keep` does not list; `candidate` says which
/// names could be ours at all, so other files are not even opened.
pub fn remove_stale(
    dir: &Path,
    keep: &HashSet<PathBuf>,
    candidate: impl Fn(&str) -> bool,
) -> Vec<(PathBuf, io::Error)> {
    let mut errors = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return errors;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".slot-os-tmp") {
            // Left behind by an interrupted earlier run.
            let _ = fs::remove_file(&path);
            continue;
        }
        if !candidate(&name) || keep.contains(&path) || !is_ours(&path) {
            continue;
        }
        if let Err(err) = fs::remove_file(&path) {
            errors.push((path, err));
        }
    }
    errors
}

/// The fd's directory as a borrowed handle (for callers holding an `OpenDir`).
pub fn fd(d: &OpenDir) -> BorrowedFd<'_> {
    d.fd.as_fd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn new_changed_and_unchanged_files() {
        let t = std::env::temp_dir().join(format!("slot-os-gen-write-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let d = open_dir(&t).unwrap();
        let text = |s: &str| Content::Text(s.to_string());
        // absent: linked in whole (or replaced where O_TMPFILE is not there)
        assert!(write_atomic(fd(&d), "a.nspawn", &text("one\n"), false).unwrap());
        assert_eq!(fs::read_to_string(t.join("a.nspawn")).unwrap(), "one\n");
        let mode = fs::metadata(t.join("a.nspawn"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o644, 0o644, "{mode:o}");
        // the same content: nothing written
        assert!(!write_atomic(fd(&d), "a.nspawn", &text("one\n"), true).unwrap());
        // new content over an existing file
        assert!(write_atomic(fd(&d), "a.nspawn", &text("two\n"), true).unwrap());
        assert_eq!(fs::read_to_string(t.join("a.nspawn")).unwrap(), "two\n");
        // "absent" but there after all (a race): replaced, not refused
        assert!(write_atomic(fd(&d), "a.nspawn", &text("three\n"), false).unwrap());
        assert_eq!(fs::read_to_string(t.join("a.nspawn")).unwrap(), "three\n");
        // links: new, same, changed, and "absent" but there
        ensure_subdir(fd(&d), "m.wants").unwrap();
        ensure_subdir(fd(&d), "m.wants").unwrap();
        let link = |p: &str| Content::Link(PathBuf::from(p));
        let l = "m.wants/u.service";
        assert!(write_atomic(fd(&d), l, &link("/x"), false).unwrap());
        assert!(!write_atomic(fd(&d), l, &link("/x"), true).unwrap());
        assert!(write_atomic(fd(&d), l, &link("/y"), true).unwrap());
        assert!(write_atomic(fd(&d), l, &link("/z"), false).unwrap());
        // a file in a subdirectory: new, then changed
        ensure_subdir(fd(&d), "u.service.d").unwrap();
        let f = "u.service.d/50.conf";
        assert!(write_atomic(fd(&d), f, &text("a\n"), false).unwrap());
        assert!(write_atomic(fd(&d), f, &text("b\n"), true).unwrap());
        assert_eq!(fs::read_to_string(t.join(f)).unwrap(), "b\n");
        assert_eq!(
            fs::read_link(t.join("m.wants/u.service")).unwrap(),
            Path::new("/z")
        );
        // nothing temporary left behind
        assert_eq!(names(&t), ["a.nspawn", "m.wants", "u.service.d"]);
        assert_eq!(names(&t.join("m.wants")), ["u.service"]);
        assert_eq!(names(&t.join("u.service.d")), ["50.conf"]);
        fs::remove_dir_all(&t).unwrap();
    }
}
