//! Paths inside a slot root (or an unpacked export), resolved the way the slot itself
//! would see them and never onto the host.
//!
//! Over 400 lines: every operation below an untrusted root goes through the one `Root`
//! type, so none of them can resolve a path outside it by mistake; a third is tests.
//!
//! A slot's root user controls every file in its tree, so `ROOT/etc/hostname` may be a
//! symlink to `/etc/shadow` and `ROOT/var/lib/dbus` one to `/etc`: a host-side
//! `open(ROOT + "/etc/...")` follows them onto the host. Everything here starts from a
//! directory fd of the root and resolves with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`: absolute symlinks and `..` stay inside the root (as in a
//! chroot), `/proc/*/root`-style magic links are refused. The last component is then
//! handled with `*at()` calls that do not follow it: writes go to a temporary file in the
//! resolved parent and are renamed over the name (a symlink there is replaced, not
//! followed), removal unlinks the link itself, and tree removal never descends through
//! a symlink.
//!
//! rustix (already in the dependency tree through zbus) gives typed, safe wrappers for
//! openat2 and the *at calls; libpathrs would do the same resolution but brings a C-ABI
//! library and its own procfs handling that the helper does not need.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {root}/{path}: {source}")]
    Io {
        what: &'static str,
        root: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{root}/{path}: {why}")]
    Refused {
        root: String,
        path: String,
        why: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How deep `remove_tree`/`devices` descend; deeper trees are refused rather than risking
/// the helper's stack.
const MAX_DEPTH: usize = 512;

/// A slot root (or any tree the helper does not trust) opened once; every path below is
/// relative to it, absolute paths are taken as relative to it.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// Character devices that nspawn and debootstrap themselves create in `/dev`; any other
/// device node in an imported root is refused.
const HARMLESS_CHAR_DEVICES: &[(u32, u32)] = &[
    (1, 3), // null
    (1, 5), // zero
    (1, 7), // full
    (1, 8), // random
    (1, 9), // urandom
    (5, 0), // tty
    (5, 1), // console
    (5, 2), // ptmx
];

/// Whether a character device `(major, minor)` in directory `dir` (relative to a slot's
/// root, `dev` for /dev) is one of the harmless ones a root may hold.
pub fn harmless_char_device(dir: &str, dev: (u32, u32)) -> bool {
    dir.trim_matches('/') == "dev" && HARMLESS_CHAR_DEVICES.contains(&dev)
}

impl Root {
    /// Opens the root directory itself; the path up to it is the host's own (the machines
    /// directory), only its last component must not be a symlink.
    pub fn open(path: &Path) -> Result<Root> {
        Self::open_with(path, OFlags::NOFOLLOW)
    }

    /// A root already open as a directory descriptor (an overlay mounted for the helper
    /// alone, see `sys::overlay`); `label` names it in messages.
    pub fn from_fd(fd: OwnedFd, label: &Path) -> Root {
        Root {
            fd,
            path: label.to_path_buf(),
        }
    }

    /// The path that names this root in messages.
    pub fn label(&self) -> &Path {
        &self.path
    }

    /// The root directory of a running process (`/proc/PID/root`), e.g. a slot's leader.
    /// That path is a magic link the kernel owns, so it is followed (unlike `open`); every
    /// path below it is then resolved inside it.
    pub fn open_process_root(pid: u32) -> Result<Root> {
        Self::open_with(Path::new(&format!("/proc/{pid}/root")), OFlags::empty())
    }

    fn open_with(path: &Path, extra: OFlags) -> Result<Root> {
        let fd = rfs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | extra,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            what: "opening",
            root: path.display().to_string(),
            path: String::new(),
            source: e.into(),
        })?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    fn io(&self, what: &'static str, rel: &str, e: Errno) -> Error {
        Error::Io {
            what,
            root: self.path.display().to_string(),
            path: rel.trim_start_matches('/').to_string(),
            source: e.into(),
        }
    }

    fn refused(&self, rel: &str, why: &'static str) -> Error {
        Error::Refused {
            root: self.path.display().to_string(),
            path: rel.trim_start_matches('/').to_string(),
            why,
        }
    }

    /// openat2 below the root; the kernel answers EAGAIN when a rename raced with the
    /// walk, which is worth a few retries.
    fn resolve(&self, rel: &str, flags: OFlags) -> std::result::Result<OwnedFd, Errno> {
        let rel = match rel.trim_start_matches('/') {
            "" => ".",
            r => r,
        };
        let mut tries = 0;
        loop {
            match rfs::openat2(
                &self.fd,
                rel,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                r => return r,
            }
        }
    }

    /// `rel` as parent path and a final name that is a plain component.
    fn split<'a>(&self, rel: &'a str) -> Result<(&'a str, &'a str)> {
        let t = rel.trim_start_matches('/').trim_end_matches('/');
        let (parent, name) = t.rsplit_once('/').unwrap_or(("", t));
        if name.is_empty() || name == "." || name == ".." {
            return Err(self.refused(rel, "not a file name"));
        }
        Ok((parent, name))
    }

    /// A directory inside the root, symlinks on the way resolved inside it.
    pub fn open_dir(&self, rel: &str) -> Result<OwnedFd> {
        self.resolve(rel, OFlags::DIRECTORY | OFlags::RDONLY)
            .map_err(|e| self.io("opening", rel, e))
    }

    /// The names in a directory inside the root (not `.` and `..`); `None` when it does not
    /// exist.
    pub fn list_dir(&self, rel: &str) -> Result<Option<Vec<String>>> {
        let fd = match self.resolve(rel, OFlags::DIRECTORY | OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(self.io("opening", rel, e)),
        };
        list_fd(fd.as_fd())
            .map(Some)
            .map_err(|e| self.io("listing", rel, e))
    }

    /// `mkdir -p` inside the root: missing components are created with `mode` and the
    /// owner of the directory they are made in (so a user-namespace shifted tree stays
    /// shifted); existing ones, symlinks included, are resolved inside the root.
    pub fn mkdir_p(&self, rel: &str, mode: u32) -> Result<OwnedFd> {
        let t = rel.trim_start_matches('/').trim_end_matches('/');
        let mut dir = self.open_dir("")?;
        let mut prefix = String::new();
        for comp in t.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            dir = match self.resolve(&prefix, OFlags::DIRECTORY | OFlags::RDONLY) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if comp != ".." => {
                    match rfs::mkdirat(&dir, comp, Mode::from_raw_mode(mode)) {
                        Ok(()) => {
                            let fd = rfs::openat(
                                &dir,
                                comp,
                                OFlags::DIRECTORY
                                    | OFlags::NOFOLLOW
                                    | OFlags::RDONLY
                                    | OFlags::CLOEXEC,
                                Mode::empty(),
                            )
                            .map_err(|e| self.io("opening", &prefix, e))?;
                            inherit_owner(&dir, &fd).map_err(|e| self.io("chown", &prefix, e))?;
                            rfs::fchmod(&fd, Mode::from_raw_mode(mode))
                                .map_err(|e| self.io("chmod", &prefix, e))?;
                            fd
                        }
                        // A dangling symlink: mkdirat does not follow it, and what it
                        // names inside the root does not exist.
                        Err(Errno::EXIST) => {
                            return Err(self.refused(&prefix, "a symlink to nothing"));
                        }
                        Err(e) => return Err(self.io("creating", &prefix, e)),
                    }
                }
                Err(e) => return Err(self.io("opening", &prefix, e)),
            };
        }
        Ok(dir)
    }

    /// `mkdir -p` and chmod of the directory itself (mount points: `/tmp` is 1777 whatever
    /// a tarball said).
    pub fn mkdir_mode(&self, rel: &str, mode: u32) -> Result<()> {
        let fd = self.mkdir_p(rel, mode)?;
        rfs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| self.io("chmod", rel, e))
    }

    /// Writes `bytes` to `rel` atomically: a temporary file in the resolved parent
    /// directory, given `mode` and the parent's owner, renamed over the name. Whatever
    /// was at the name (a symlink to a host file, say) is replaced, never written
    /// through. Missing parent directories are created (0755).
    pub fn write_file(&self, rel: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let (parent, name) = self.split(rel)?;
        let dir = self.mkdir_p(parent, 0o755)?;
        let tmp = format!(".{name}.slot-os-{}", std::process::id());
        let _ = rfs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        let fd = rfs::openat(
            &dir,
            tmp.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| self.io("creating", rel, e))?;
        let written = (|| -> std::result::Result<(), Errno> {
            inherit_owner(&dir, &fd)?;
            rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            let mut f = std::fs::File::from(fd);
            f.write_all(bytes)
                .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            f.sync_all()
                .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            rfs::renameat(&dir, tmp.as_str(), &dir, name)
        })();
        if let Err(e) = written {
            let _ = rfs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
            return Err(self.io("writing", rel, e));
        }
        Ok(())
    }

    /// Makes `rel` a symlink to `target` (a path the slot resolves, never the helper),
    /// replacing whatever is there the way `write_file` does: made under a temporary name
    /// in the resolved parent and renamed over the name.
    pub fn symlink(&self, rel: &str, target: &str) -> Result<()> {
        let (parent, name) = self.split(rel)?;
        let dir = self.mkdir_p(parent, 0o755)?;
        let tmp = format!(".{name}.slot-os-{}", std::process::id());
        let _ = rfs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        rfs::symlinkat(target, &dir, tmp.as_str()).map_err(|e| self.io("linking", rel, e))?;
        if let Err(e) = rfs::renameat(&dir, tmp.as_str(), &dir, name) {
            let _ = rfs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
            return Err(self.io("linking", rel, e));
        }
        Ok(())
    }

    /// The content of a regular file inside the root, at most `max` bytes; None if it
    /// does not exist. FIFOs and devices are refused without being opened for reading
    /// (O_PATH first), so a planted FIFO cannot hang the helper.
    pub fn read_file(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let p = match self.resolve(rel, OFlags::PATH) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.io("opening", rel, e)),
        };
        let st = rfs::fstat(&p).map_err(|e| self.io("stat", rel, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(self.refused(rel, "not a regular file"));
        }
        // Reopening the O_PATH fd through /proc would be a magic link; opening the same
        // path again is fine because a swap between the two opens is caught by the
        // inode comparison.
        let fd = self
            .resolve(rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)
            .map_err(|e| self.io("opening", rel, e))?;
        let st2 = rfs::fstat(&fd).map_err(|e| self.io("stat", rel, e))?;
        if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) {
            return Err(self.refused(rel, "changed while being opened"));
        }
        let mut out = Vec::new();
        std::fs::File::from(fd)
            .take(max)
            .read_to_end(&mut out)
            .map_err(|e| {
                self.io(
                    "reading",
                    rel,
                    Errno::from_io_error(&e).unwrap_or(Errno::IO),
                )
            })?;
        Ok(Some(out))
    }

    /// Removes whatever is at `rel` (a file, a symlink itself, a directory tree, never
    /// following a symlink inside it). False if there was nothing.
    pub fn remove(&self, rel: &str) -> Result<bool> {
        let (parent, name) = self.split(rel)?;
        let dir = match self.resolve(parent, OFlags::DIRECTORY | OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(false),
            Err(e) => return Err(self.io("opening", parent, e)),
        };
        match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(self.io("stat", rel, e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                let c =
                    std::ffi::CString::new(name).map_err(|_| self.refused(rel, "NUL in name"))?;
                remove_tree_at(dir.as_fd(), &c, 0).map_err(|e| self.io("removing", rel, e))?;
                Ok(true)
            }
            Ok(_) => {
                rfs::unlinkat(&dir, name, AtFlags::empty())
                    .map_err(|e| self.io("removing", rel, e))?;
                Ok(true)
            }
        }
    }

    /// Device nodes in the tree other than the harmless character devices of `/dev`
    /// (paths relative to the root); the walk never follows a symlink.
    pub fn devices(&self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let dir = self.open_dir("")?;
        walk_devices(dir.as_fd(), "", 0, &mut found).map_err(|e| self.io("walking", "", e))?;
        Ok(found)
    }
}

/// The names in an open directory (not `.` and `..`).
pub fn list_fd(dir: BorrowedFd) -> std::result::Result<Vec<String>, Errno> {
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// New files and directories belong to whoever owns the directory they are made in.
fn inherit_owner(dir: &impl AsFd, fd: &impl AsFd) -> std::result::Result<(), Errno> {
    let st = rfs::fstat(dir)?;
    rfs::fchown(
        fd,
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
    )
}

fn is_dir_entry(dir: BorrowedFd, name: &std::ffi::CStr, ty: FileType) -> bool {
    match ty {
        FileType::Directory => true,
        FileType::Unknown => rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory),
        _ => false,
    }
}

fn remove_tree_at(
    parent: BorrowedFd,
    name: &std::ffi::CStr,
    depth: usize,
) -> std::result::Result<(), Errno> {
    if depth > MAX_DEPTH {
        return Err(Errno::LOOP);
    }
    let fd = rfs::openat(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(&fd)? {
        let e = e?;
        let n = e.file_name();
        if n == c"." || n == c".." {
            continue;
        }
        names.push((n.to_owned(), is_dir_entry(fd.as_fd(), n, e.file_type())));
    }
    for (n, is_dir) in names {
        if is_dir {
            remove_tree_at(fd.as_fd(), &n, depth + 1)?;
        } else {
            rfs::unlinkat(&fd, n.as_c_str(), AtFlags::empty())?;
        }
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)
}

fn walk_devices(
    dir: BorrowedFd,
    at: &str,
    depth: usize,
    found: &mut Vec<String>,
) -> std::result::Result<(), Errno> {
    if depth > MAX_DEPTH {
        return Err(Errno::LOOP);
    }
    let mut subdirs = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name();
        if n == c"." || n == c".." {
            continue;
        }
        let path = format!("{at}/{}", n.to_string_lossy());
        let ty = match e.file_type() {
            FileType::Unknown => {
                FileType::from_raw_mode(rfs::statat(dir, n, AtFlags::SYMLINK_NOFOLLOW)?.st_mode)
            }
            t => t,
        };
        match ty {
            FileType::Directory => subdirs.push((n.to_owned(), path)),
            FileType::BlockDevice => found.push(path),
            FileType::CharacterDevice => {
                let st = rfs::statat(dir, n, AtFlags::SYMLINK_NOFOLLOW)?;
                let dev = (rfs::major(st.st_rdev), rfs::minor(st.st_rdev));
                if !harmless_char_device(at, dev) {
                    found.push(path);
                }
            }
            _ => {}
        }
    }
    for (n, path) in subdirs {
        let fd = rfs::openat(
            dir,
            n.as_c_str(),
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        walk_devices(fd.as_fd(), &path, depth + 1, found)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    /// A tempdir with `host/` (stands for the host: must never change) and `root/` (the
    /// hostile slot root).
    struct Tree {
        base: PathBuf,
    }

    impl Tree {
        fn new(tag: &str) -> Tree {
            let base =
                std::env::temp_dir().join(format!("slot-os-inroot-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&base);
            fs::create_dir_all(base.join("host/etc")).unwrap();
            fs::create_dir_all(base.join("root/etc")).unwrap();
            fs::write(base.join("host/etc/machine-id"), "host-id\n").unwrap();
            fs::write(base.join("host/etc/shadow"), "host-secret\n").unwrap();
            Tree { base }
        }
        fn host(&self) -> PathBuf {
            self.base.join("host")
        }
        fn root(&self) -> PathBuf {
            self.base.join("root")
        }
        fn open(&self) -> Root {
            Root::open(&self.root()).unwrap()
        }
        fn host_unchanged(&self) {
            assert_eq!(
                fs::read_to_string(self.host().join("etc/machine-id")).unwrap(),
                "host-id\n"
            );
            assert_eq!(
                fs::read_to_string(self.host().join("etc/shadow")).unwrap(),
                "host-secret\n"
            );
            let names: Vec<_> = fs::read_dir(self.host().join("etc"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names.len(), 2, "host/etc gained files: {names:?}");
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.base);
        }
    }

    #[test]
    fn write_replaces_an_absolute_symlink_instead_of_following_it() {
        let t = Tree::new("abs");
        symlink(t.host().join("etc/shadow"), t.root().join("etc/hostname")).unwrap();
        t.open()
            .write_file("etc/hostname", b"slot01\n", 0o644)
            .unwrap();
        t.host_unchanged();
        let p = t.root().join("etc/hostname");
        assert!(p.symlink_metadata().unwrap().is_file());
        assert_eq!(fs::read_to_string(&p).unwrap(), "slot01\n");
        assert_eq!(p.metadata().unwrap().permissions().mode() & 0o7777, 0o644);
    }

    #[test]
    fn a_symlinked_parent_dir_resolves_inside_the_root() {
        let t = Tree::new("parent");
        // The slot's root ran `ln -s /etc /var/lib/dbus`, here with the host's real path.
        fs::create_dir_all(t.root().join("var/lib")).unwrap();
        symlink(t.host().join("etc"), t.root().join("var/lib/dbus")).unwrap();
        let r = t.open();
        // removing machine-id below it must not reach host/etc/machine-id
        assert!(!r.remove("var/lib/dbus/machine-id").unwrap());
        t.host_unchanged();
        // a write through it fails (what it names does not exist inside the root)...
        assert!(r
            .write_file("var/lib/dbus/machine-id", b"x\n", 0o444)
            .is_err());
        t.host_unchanged();
        // ...and once it does, lands there, inside the root
        let inside = t
            .root()
            .join(t.host().join("etc").strip_prefix("/").unwrap());
        fs::create_dir_all(&inside).unwrap();
        r.write_file("var/lib/dbus/machine-id", b"x\n", 0o444)
            .unwrap();
        t.host_unchanged();
        assert_eq!(
            fs::read_to_string(inside.join("machine-id")).unwrap(),
            "x\n"
        );
    }

    #[test]
    fn dotdot_symlinks_and_paths_stay_inside() {
        let t = Tree::new("dotdot");
        symlink("../../../../../../../../..", t.root().join("etc/up")).unwrap();
        let r = t.open();
        let hostrel = t.host().join("etc/shadow");
        let via = format!("etc/up{}", hostrel.display());
        // reading through it reads the root's own (absent) file, not the host's
        assert_eq!(r.read_file(&via, 100).unwrap(), None);
        assert_eq!(
            r.read_file("../../../../../../etc/machine-id", 100)
                .unwrap(),
            None
        );
        r.write_file(&via, b"mine\n", 0o600).unwrap();
        t.host_unchanged();
        r.mkdir_p("etc/up/../../x/y", 0o755).unwrap();
        assert!(t.root().join("x/y").is_dir());
    }

    #[test]
    fn symlink_loops_fail_cleanly() {
        let t = Tree::new("loop");
        symlink("b", t.root().join("etc/a")).unwrap();
        symlink("a", t.root().join("etc/b")).unwrap();
        let r = t.open();
        assert!(r.read_file("etc/a", 10).is_err());
        assert!(r.mkdir_p("etc/a/x", 0o755).is_err());
        assert!(r.write_file("etc/a/x", b"", 0o644).is_err());
        // the loop link itself is replaced by a write of its own name
        r.write_file("etc/a", b"z", 0o644).unwrap();
        assert_eq!(fs::read(t.root().join("etc/a")).unwrap(), b"z");
    }

    #[test]
    fn dangling_symlink_is_not_a_directory_to_make() {
        let t = Tree::new("dangle");
        symlink("/nonexistent-slot-os", t.root().join("etc/ssh")).unwrap();
        let r = t.open();
        assert!(r.mkdir_p("etc/ssh", 0o755).is_err());
        assert!(!Path::new("/nonexistent-slot-os").exists());
    }

    #[test]
    fn remove_tree_does_not_descend_through_symlinks() {
        let t = Tree::new("rm");
        fs::create_dir_all(t.root().join("var/log/a")).unwrap();
        fs::write(t.root().join("var/log/a/f"), "x").unwrap();
        symlink(t.host().join("etc"), t.root().join("var/log/a/hostetc")).unwrap();
        symlink(t.host().join("etc"), t.root().join("var/log/a/hostetc2")).unwrap();
        let r = t.open();
        assert!(r.remove("var/log").unwrap());
        t.host_unchanged();
        assert!(!t.root().join("var/log").exists());
        // a symlink as the thing to remove: the link goes, its target stays
        symlink(t.host().join("etc"), t.root().join("etc/l")).unwrap();
        assert!(r.remove("etc/l").unwrap());
        t.host_unchanged();
    }

    #[test]
    fn read_refuses_fifos_without_blocking() {
        let t = Tree::new("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.root().join("etc/machine-id"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(t.open().read_file("etc/machine-id", 64).is_err());
    }

    #[test]
    fn new_files_and_dirs_get_the_parent_owner() {
        let t = Tree::new("owner");
        fs::create_dir_all(t.root().join("etc")).unwrap();
        rustix::fs::chown(
            t.root().join("etc"),
            Some(rfs::Uid::from_raw(4242)),
            Some(rfs::Gid::from_raw(4343)),
        )
        .unwrap();
        let r = t.open();
        r.write_file("etc/ssh/k", b"key", 0o600).unwrap();
        for p in ["etc/ssh", "etc/ssh/k"] {
            let m = fs::metadata(t.root().join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (4242, 4343), "{p}");
        }
        let m = fs::metadata(t.root().join("etc/ssh/k")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    }

    #[test]
    fn devices_outside_the_harmless_set_are_found() {
        let t = Tree::new("dev");
        fs::create_dir_all(t.root().join("dev")).unwrap();
        let mk = |p: &str, ty, maj, min| {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                t.root().join(p),
                ty,
                Mode::from_raw_mode(0o666),
                rustix::fs::makedev(maj, min),
            )
            .unwrap()
        };
        mk("dev/null", FileType::CharacterDevice, 1, 3);
        mk("dev/mem", FileType::CharacterDevice, 1, 1);
        mk("etc/null", FileType::CharacterDevice, 1, 3);
        mk("etc/sda", FileType::BlockDevice, 8, 0);
        let mut d = t.open().devices().unwrap();
        d.sort();
        assert_eq!(d, ["/dev/mem", "/etc/null", "/etc/sda"]);
    }

    /// `SLOT_OS_WALK=/path/to/a/root cargo test -- --ignored devices_walk_timing`: the
    /// cost the import's device check adds, on a real root.
    #[test]
    #[ignore]
    fn devices_walk_timing() {
        let p = std::env::var("SLOT_OS_WALK").expect("SLOT_OS_WALK");
        let t0 = std::time::Instant::now();
        let found = Root::open(Path::new(&p)).unwrap().devices().unwrap();
        eprintln!("devices walk of {p}: {:?}, found {found:?}", t0.elapsed());
    }

    #[test]
    fn the_root_itself_must_not_be_a_symlink() {
        let t = Tree::new("rootlink");
        symlink(t.host(), t.base.join("link")).unwrap();
        assert!(Root::open(&t.base.join("link")).is_err());
    }
}
