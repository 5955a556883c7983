//! Copying one entry of an untrusted tree into the stage, by directory descriptors only:
//! every source name is opened with `O_NOFOLLOW` relative to a directory already opened
//! the same way, so a symlink the slot planted is copied as a symlink and never followed;
//! every stage name is created with `O_EXCL|O_NOFOLLOW` after the old entry was unlinked.
//! Kept: owner, mode, times, xattrs of every namespace (ACLs, `trusted.*`,
//! `security.capability`, set after the owner, since chown clears capabilities), holes of
//! sparse files, hard links (by the caller), device nodes and FIFOs. Sockets are skipped:
//! nothing can be restored from one.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, ResolveFlags, SeekFrom, Stat, Timespec, Timestamps,
};

use super::tree::Meta;

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

pub fn stat_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
}

pub fn open_dir_at(dir: BorrowedFd, name: &OsStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

/// A directory of the stage, made if missing (a non-directory there is replaced).
pub fn stage_dir_at(dir: BorrowedFd, name: &OsStr) -> io::Result<OwnedFd> {
    match stat_at(dir, name) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
        Ok(_) => {
            remove_at(dir, name)?;
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(errno)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(errno)?;
        }
        Err(e) => return Err(e),
    }
    open_dir_at(dir, name)
}

/// The names in a directory, without `.` and `..`.
pub fn list(dir: BorrowedFd) -> io::Result<Vec<OsString>> {
    let mut d = rustix::fs::Dir::read_from(dir).map_err(errno)?;
    let mut out = Vec::new();
    while let Some(e) = d.read() {
        let e = e.map_err(errno)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsString::from_vec(n.to_vec()));
        }
    }
    Ok(out)
}

/// Removes `name` in `dir` and, for a directory, everything below it, never descending
/// through a symlink. A missing entry is not an error.
pub fn remove_at(dir: BorrowedFd, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) => {}
        Err(e) => return Err(errno(e)),
    }
    let sub = open_dir_at(dir, name)?;
    for n in list(sub.as_fd())? {
        remove_at(sub.as_fd(), &n)?;
    }
    drop(sub);
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// What copying one entry found.
pub struct Copied {
    /// The source's metadata as read from the open file (`None`: the entry changed type
    /// or vanished between the stat and the open; the caller checks it again).
    pub meta: Option<Meta>,
    pub stage_ctime: (i64, u32),
    pub bytes: u64,
    pub sparse: bool,
}

fn ts(s: i64, ns: impl TryInto<i64>) -> Timespec {
    Timespec {
        tv_sec: s,
        tv_nsec: ns.try_into().unwrap_or(0) as _,
    }
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: ts(st.st_atime, st.st_atime_nsec),
        last_modification: ts(st.st_mtime, st.st_mtime_nsec),
    }
}

fn ctime(st: &Stat) -> (i64, u32) {
    (st.st_ctime, st.st_ctime_nsec as u32)
}

/// Copies a non-directory entry `name` of `src` (whose stat was `st`) to the same name in
/// `dst`, replacing what is there.
pub fn copy_leaf(
    src: BorrowedFd,
    dst: BorrowedFd,
    name: &OsStr,
    st: &Stat,
) -> io::Result<Option<Copied>> {
    let kind = st.st_mode & libc::S_IFMT;
    match kind {
        libc::S_IFREG => copy_file(src, dst, name).map(Some),
        libc::S_IFSOCK => {
            remove_at(dst, name)?;
            Ok(None)
        }
        _ => copy_special(src, dst, name, st).map(Some),
    }
}

fn open_source(src: BorrowedFd, name: &OsStr) -> io::Result<OwnedFd> {
    // O_NONBLOCK: the entry may have been swapped for a FIFO since it was stat'ed.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::openat(src, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => {
            rustix::fs::openat(src, name, flags, Mode::empty()).map_err(errno)
        }
        r => r.map_err(errno),
    }
}

fn copy_file(src: BorrowedFd, dst: BorrowedFd, name: &OsStr) -> io::Result<Copied> {
    let from = match open_source(src, name) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ELOOP | libc::ENOENT | libc::ENXIO)
            ) =>
        {
            return Ok(Copied {
                meta: None,
                stage_ctime: (0, 0),
                bytes: 0,
                sparse: false,
            })
        }
        Err(e) => return Err(e),
    };
    let st = rustix::fs::fstat(&from).map_err(errno)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(Copied {
            meta: None,
            stage_ctime: (0, 0),
            bytes: 0,
            sparse: false,
        });
    }
    remove_at(dst, name)?;
    let to = rustix::fs::openat(
        dst,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(errno)?;
    let size = st.st_size as u64;
    let bytes = copy_data(&from, &to, size)?;
    if bytes > 1 << 20 {
        // Start writing it out now: a copy that piles up dirty pages makes the kernel
        // throttle every writer on the host, the running slot's included.
        // SAFETY: sync_file_range on a file descriptor we own; it only schedules writeback.
        unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(&to),
                0,
                0,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }
    rustix::fs::ftruncate(&to, size).map_err(errno)?;
    set_owner_mode_fd(&to, &st)?;
    copy_xattrs_fd(&from, &to)?;
    rustix::fs::futimens(&to, &times(&st)).map_err(errno)?;
    let after = rustix::fs::fstat(&to).map_err(errno)?;
    Ok(Copied {
        meta: Some(Meta::of(&st)),
        stage_ctime: ctime(&after),
        bytes,
        sparse: (st.st_blocks as u64) * 512 < size,
    })
}

/// Copies the data ranges of `from` (SEEK_DATA/SEEK_HOLE; holes stay holes) up to `size`.
fn copy_data(from: &OwnedFd, to: &OwnedFd, size: u64) -> io::Result<u64> {
    let mut copied = 0;
    let mut off = 0u64;
    while off < size {
        let data = match rustix::fs::seek(from, SeekFrom::Data(off)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => off,
            Err(e) => return Err(errno(e)),
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(from, SeekFrom::Hole(data))
            .unwrap_or(size)
            .min(size);
        let done = copy_range(from, to, data, hole - data)?;
        copied += done;
        if done < hole - data {
            break; // the file shrank meanwhile: the caller sees its new size and copies again
        }
        off = hole;
    }
    Ok(copied)
}

fn copy_range(from: &OwnedFd, to: &OwnedFd, start: u64, len: u64) -> io::Result<u64> {
    let mut done = 0u64;
    while done < len {
        let (mut i, mut o) = (start + done, start + done);
        let want = (len - done).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(from, Some(&mut i), to, Some(&mut o), want) {
            Ok(0) => return Ok(done),
            Ok(n) => done += n as u64,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP,
            ) => return Ok(done + copy_range_rw(from, to, start + done, len - done)?),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(done)
}

fn copy_range_rw(from: &OwnedFd, to: &OwnedFd, start: u64, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = rustix::io::pread(from, &mut buf[..want], start + done).map_err(errno)?;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            w += rustix::io::pwrite(to, &buf[w..n], start + done + w as u64).map_err(errno)?;
        }
        done += n as u64;
    }
    Ok(done)
}

fn set_owner_mode_fd(fd: &OwnedFd, st: &Stat) -> io::Result<()> {
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(st.st_uid),
        rustix::fs::Gid::from_raw(st.st_gid),
    );
    rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(errno)?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(errno)
}

/// Names of a list as the kernel returns it (NUL-separated).
fn split_names(list: &[u8]) -> Vec<&[u8]> {
    list.split(|b| *b == 0).filter(|n| !n.is_empty()).collect()
}

fn xattr_list_fd(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    loop {
        let n = match rustix::fs::flistxattr_query(fd) {
            Ok(n) => n,
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(errno(e)),
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Ok(m) => {
                buf.truncate(m);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

fn xattr_get_fd(fd: &OwnedFd, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    loop {
        let n = match rustix::fs::fgetxattr_query(fd, name) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(errno(e)),
        };
        let mut buf = vec![0u8; n];
        match rustix::fs::fgetxattr(fd, name, &mut buf[..]) {
            Ok(m) => {
                buf.truncate(m);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Every xattr of `from` onto `to`, and those `to` has beyond them removed.
fn copy_xattrs_fd(from: &OwnedFd, to: &OwnedFd) -> io::Result<()> {
    let want = xattr_list_fd(from)?;
    let want_names = split_names(&want);
    for n in split_names(&xattr_list_fd(to)?) {
        if !want_names.contains(&n) {
            let _ = rustix::fs::fremovexattr(to, OsStr::from_bytes(n));
        }
    }
    for n in want_names {
        if let Some(v) = xattr_get_fd(from, n)? {
            rustix::fs::fsetxattr(
                to,
                OsStr::from_bytes(n),
                &v,
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(errno)?;
        }
    }
    Ok(())
}

/// `/proc/self/fd/DIR/NAME`: a path to an entry that cannot be opened without effects
/// (a symlink, a device, a FIFO), for the `l*xattr` calls, which do not follow its last
/// component. DIR is a descriptor we opened, NAME a single component.
fn proc_path(dir: BorrowedFd, name: &OsStr) -> OsString {
    use std::os::fd::AsRawFd;
    let mut p = OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd()));
    p.push(name);
    p
}

fn copy_xattrs_path(src: &OsStr, dst: &OsStr) -> io::Result<()> {
    let n = match rustix::fs::llistxattr_query(src) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(errno(e)),
    };
    if n == 0 {
        return Ok(());
    }
    let mut list = vec![0u8; n];
    let n = rustix::fs::llistxattr(src, &mut list[..]).map_err(errno)?;
    list.truncate(n);
    for name in split_names(&list) {
        let name = OsStr::from_bytes(name);
        let len = match rustix::fs::lgetxattr_query(src, name) {
            Ok(l) => l,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(errno(e)),
        };
        let mut v = vec![0u8; len];
        let len = rustix::fs::lgetxattr(src, name, &mut v[..]).map_err(errno)?;
        v.truncate(len);
        rustix::fs::lsetxattr(dst, name, &v, rustix::fs::XattrFlags::empty()).map_err(errno)?;
    }
    Ok(())
}

fn copy_special(src: BorrowedFd, dst: BorrowedFd, name: &OsStr, st: &Stat) -> io::Result<Copied> {
    let kind = st.st_mode & libc::S_IFMT;
    remove_at(dst, name)?;
    match kind {
        libc::S_IFLNK => {
            let target = match rustix::fs::readlinkat(src, name, Vec::new()) {
                Ok(t) => t,
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => {
                    return Ok(Copied {
                        meta: None,
                        stage_ctime: (0, 0),
                        bytes: 0,
                        sparse: false,
                    })
                }
                Err(e) => return Err(errno(e)),
            };
            rustix::fs::symlinkat(target.as_c_str(), dst, name).map_err(errno)?;
        }
        libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK => {
            rustix::fs::mknodat(
                dst,
                name,
                FileType::from_raw_mode(kind),
                Mode::from_raw_mode(0o600),
                st.st_rdev,
            )
            .map_err(errno)?;
        }
        _ => {
            return Ok(Copied {
                meta: None,
                stage_ctime: (0, 0),
                bytes: 0,
                sparse: false,
            })
        }
    }
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(st.st_uid),
        rustix::fs::Gid::from_raw(st.st_gid),
    );
    rustix::fs::chownat(dst, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno)?;
    if kind != libc::S_IFLNK {
        rustix::fs::chmodat(
            dst,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(errno)?;
    }
    copy_xattrs_path(&proc_path(src, name), &proc_path(dst, name))?;
    rustix::fs::utimensat(dst, name, &times(st), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
    // The source may have changed between its stat and now: read it again, after.
    let again = stat_at(src, name).ok();
    let same = again.as_ref().is_some_and(|a| Meta::of(a) == Meta::of(st));
    let staged = stat_at(dst, name)?;
    Ok(Copied {
        meta: same.then(|| Meta::of(st)),
        stage_ctime: ctime(&staged),
        bytes: 0,
        sparse: false,
    })
}

/// A hard link at `dst/name` to the stage file `first` (a path below `stage_root` made by
/// this capture), replacing what is at `dst/name`.
pub fn link_leaf(
    stage_root: BorrowedFd,
    first: &[u8],
    dst: BorrowedFd,
    name: &OsStr,
) -> io::Result<(i64, u32)> {
    let p = std::path::Path::new(OsStr::from_bytes(first));
    let parent = p.parent().map(|p| p.as_os_str()).unwrap_or(OsStr::new(""));
    let base = p.file_name().unwrap_or(OsStr::new(""));
    // The stage holds the slot's own symlinks: resolve nothing but real directories.
    let dir = rustix::fs::openat2(
        stage_root,
        if parent.is_empty() {
            OsStr::new(".")
        } else {
            parent
        },
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(errno)?;
    remove_at(dst, name)?;
    rustix::fs::linkat(&dir, base, dst, name, AtFlags::empty()).map_err(errno)?;
    Ok(ctime(&stat_at(dst, name)?))
}

/// A stage directory's owner, mode, xattrs and times made the source's (`src_dir` is the
/// source directory itself, opened; times last, after its entries were written).
pub fn apply_dir_meta(src_dir: &OwnedFd, dst_dir: &OwnedFd, st: &Stat) -> io::Result<()> {
    set_owner_mode_fd(dst_dir, st)?;
    copy_xattrs_fd(src_dir, dst_dir)?;
    rustix::fs::futimens(dst_dir, &times(st)).map_err(errno)
}

/// Only the times again (after entries below changed the stage directory's mtime).
pub fn apply_dir_times(dst_dir: &OwnedFd, st: &Stat) -> io::Result<()> {
    rustix::fs::futimens(dst_dir, &times(st)).map_err(errno)
}
