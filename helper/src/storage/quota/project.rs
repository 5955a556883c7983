//! ext4 and xfs project quotas: a project ID on every inode of a slot's directory, the
//! directories marked to pass it on (`FS_XFLAG_PROJINHERIT`), and a block limit for the ID
//! (`quotactl_fd(Q_SETQUOTA, PRJQUOTA)`).
//!
//! Project IDs: slot number N gets [`FIRST_ID`] + N; a slot without a number, or whose
//! preferred ID is taken, gets the lowest free ID from [`FIRST_ID`] + 10000 up to
//! [`LAST_ID`]. An ID is free when no inode on the file system carries it and it has no
//! limit (the quota's own usage counters say so) and /etc/projid does not name it. Once
//! given, the ID stays with the directory (read back from it): a renamed slot keeps it.
//!
//! The slot's root user may have made any entry a symlink to a host file. The walk never
//! follows one: every entry is opened relative to its directory's fd with O_NOFOLLOW, only
//! regular files and directories on the directory's own file system are touched, and a
//! device node is never opened (a user-namespaced root cannot make one; for a race with a
//! privileged slot, O_NONBLOCK|O_NOCTTY keep an open harmless and fstat refuses it).
//! Symlinks, FIFOs and sockets that were already there keep project 0: they cannot be
//! opened for the ioctl, hold no data blocks beyond a long symlink's one, and anything the
//! slot creates after the walk inherits the ID from its directory.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Slot number N's project ID is FIRST_ID + N.
pub const FIRST_ID: u32 = 2_000_000_000;
/// IDs handed out by number end below this; the rest of the range is first come.
const BY_NUMBER: u32 = 10_000;
pub const LAST_ID: u32 = FIRST_ID + 999_999;

pub fn is_ours(id: u32) -> bool {
    (FIRST_ID..=LAST_ID).contains(&id)
}

/// `struct fsxattr` of linux/fs.h.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

nix::ioctl_read!(fs_getxattr, b'X', 31, FsXattr);
nix::ioctl_write_ptr!(fs_setxattr, b'X', 32, FsXattr);
const FS_XFLAG_PROJINHERIT: u32 = 0x200;

fn get_attr(fd: BorrowedFd) -> io::Result<FsXattr> {
    let mut a = FsXattr::default();
    // SAFETY: a valid fd and a properly laid out struct fsxattr that outlives the call.
    unsafe { fs_getxattr(fd.as_raw_fd(), &mut a) }.map_err(io::Error::from)?;
    Ok(a)
}

/// Puts the inode into project `id` (and, for a directory, marks it to pass the ID on when
/// `inherit`); `Ok(false)` when it already was.
fn set_project(fd: BorrowedFd, id: u32, inherit: bool) -> io::Result<bool> {
    let mut a = get_attr(fd)?;
    let flags = if inherit {
        a.xflags | FS_XFLAG_PROJINHERIT
    } else {
        a.xflags
    };
    if a.projid == id && a.xflags == flags {
        return Ok(false);
    }
    a.projid = id;
    a.xflags = flags;
    // SAFETY: as for fs_getxattr; the other fields are the inode's own, read just above.
    unsafe { fs_setxattr(fd.as_raw_fd(), &a) }.map_err(io::Error::from)?;
    Ok(true)
}

/// Puts the directory alone into project `id`, without passing it on: how a walk claims
/// its ID before it starts.
pub fn tag_root_only(dir: BorrowedFd, id: u32) -> io::Result<bool> {
    set_project(dir, id, false)
}

/// The directory's project ID, and whether it passes it on.
pub fn dir_project(dir: BorrowedFd) -> io::Result<(u32, bool)> {
    let a = get_attr(dir)?;
    Ok((a.projid, a.xflags & FS_XFLAG_PROJINHERIT != 0))
}

// ------------------------------------------------------------------ quotactl

const PRJQUOTA: u32 = 2;
/// `XQM_CMD(8)`: the xfs-style quota state, which ext4 answers too.
const Q_XGETQSTATV: u32 = (b'X' as u32) << 8 | 8;
const FS_QSTATV_VERSION1: i8 = 1;
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
/// `QIF_BLIMITS`: only the block limits of the `if_dqblk` are set.
const QIF_BLIMITS: u32 = 1;

fn quotactl(fd: BorrowedFd, cmd: u32, id: u32, addr: *mut libc::c_void) -> io::Result<()> {
    let qcmd = (cmd << 8) | PRJQUOTA;
    // SAFETY: quotactl_fd(2) with an open fd and `addr` pointing at the structure `cmd`
    // reads or fills, which the caller keeps alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fd.as_raw_fd(),
            qcmd as libc::c_uint,
            id as libc::c_uint,
            addr,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[repr(C)]
#[derive(Default)]
struct QFileStatV {
    ino: u64,
    nblks: u64,
    nextents: u32,
    pad: u32,
}

/// `struct fs_quota_statv` of linux/dqblk_xfs.h.
#[repr(C)]
#[derive(Default)]
struct QuotaStatV {
    version: i8,
    pad1: u8,
    flags: u16,
    incoredqs: u32,
    uquota: QFileStatV,
    gquota: QFileStatV,
    pquota: QFileStatV,
    btimelimit: i32,
    itimelimit: i32,
    rtbtimelimit: i32,
    bwarnlimit: u16,
    iwarnlimit: u16,
    rtbwarnlimit: u16,
    pad3: u16,
    pad4: u32,
    pad2: [u64; 7],
}

/// Whether the file system of `fd` tracks project quotas, and whether it enforces them.
/// A file system without quota support at all answers as tracking nothing.
pub fn state(fd: BorrowedFd) -> io::Result<(bool, bool)> {
    let mut st = QuotaStatV {
        version: FS_QSTATV_VERSION1,
        ..Default::default()
    };
    match quotactl(fd, Q_XGETQSTATV, 0, (&mut st as *mut QuotaStatV).cast()) {
        Ok(()) => Ok((
            st.flags & FS_QUOTA_PDQ_ACCT != 0,
            st.flags & FS_QUOTA_PDQ_ENFD != 0,
        )),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::ESRCH)) => {
            Ok((false, false))
        }
        Err(e) => Err(e),
    }
}

/// What the quota files say about one project ID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub used_bytes: u64,
    pub inodes: u64,
    /// `None` = no block limit.
    pub limit_bytes: Option<u64>,
    pub inode_limit: u64,
}

/// Q_GETQUOTA; a project xfs has never seen (ENOENT) is all zeroes.
pub fn get(fd: BorrowedFd, id: u32) -> io::Result<Quota> {
    // SAFETY: a zeroed if_dqblk is valid input; the kernel fills it.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    match quotactl(
        fd,
        libc::Q_GETQUOTA as u32,
        id,
        (&mut q as *mut libc::dqblk).cast(),
    ) {
        Ok(()) => Ok(Quota {
            used_bytes: q.dqb_curspace,
            inodes: q.dqb_curinodes,
            limit_bytes: (q.dqb_bhardlimit > 0).then(|| q.dqb_bhardlimit.saturating_mul(1024)),
            inode_limit: q.dqb_ihardlimit,
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Quota::default()),
        Err(e) => Err(e),
    }
}

/// Q_SETQUOTA: the hard block limit of project `id` (`None` lifts it), in the quota's 1 KiB
/// blocks, rounded up. No soft limit: a slot is either within its disk or out of it.
pub fn set_limit(fd: BorrowedFd, id: u32, bytes: Option<u64>) -> io::Result<()> {
    // SAFETY: a zeroed if_dqblk is a valid request once dqb_valid says what to set.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    q.dqb_bhardlimit = bytes.map_or(0, |b| b.div_ceil(1024));
    q.dqb_bsoftlimit = 0;
    q.dqb_valid = QIF_BLIMITS;
    quotactl(
        fd,
        libc::Q_SETQUOTA as u32,
        id,
        (&mut q as *mut libc::dqblk).cast(),
    )
}

// ------------------------------------------------------------------ choosing an ID

/// IDs that /etc/projid (the admin's names for projects, read by xfs_quota and
/// repquota) gives to projects; slot-os never hands those out.
pub fn reserved_ids(projid_file: &str) -> BTreeSet<u32> {
    projid_file
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split(':').nth(1))
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

/// The ID a slot with this number would like, when it has one.
pub fn preferred_id(number: Option<u32>) -> Option<u32> {
    number.filter(|n| *n < BY_NUMBER).map(|n| FIRST_ID + n)
}

/// The preferred ID if free, else the lowest free one of the first-come range; `Ok(None)`
/// when the whole range is taken.
pub fn choose_id(
    fd: BorrowedFd,
    preferred: Option<u32>,
    reserved: &BTreeSet<u32>,
) -> io::Result<Option<u32>> {
    let free = |id: u32| -> io::Result<bool> {
        if reserved.contains(&id) {
            return Ok(false);
        }
        let q = get(fd, id)?;
        Ok(q.inodes == 0 && q.used_bytes == 0 && q.limit_bytes.is_none() && q.inode_limit == 0)
    };
    for id in preferred.into_iter().chain(FIRST_ID + BY_NUMBER..=LAST_ID) {
        if free(id)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

// ------------------------------------------------------------------ the walk

/// How deep the walk descends; deeper trees are refused rather than risking the stack.
const MAX_DEPTH: usize = 512;

/// What a walk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tagged {
    /// Regular files and directories seen.
    pub inodes: u64,
    /// Of those, how many changed project.
    pub changed: u64,
    /// Symlinks, FIFOs, sockets and device nodes left as they were.
    pub skipped: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WalkError {
    pub path: String,
    pub source: io::Error,
}

fn werr(path: &str, e: impl Into<io::Error>) -> WalkError {
    WalkError {
        path: path.to_string(),
        source: e.into(),
    }
}

/// Opens a directory of the tree; `None` if the entry is gone or is no longer a
/// directory (a running slot changes its tree during the walk).
fn open_dir_at(dir: BorrowedFd, name: &CStr) -> Result<Option<OwnedFd>, Errno> {
    match rfs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens a regular file of the tree for the ioctl, never following a symlink and never
/// opening anything but a regular file for good; `None` if it is gone or not one.
fn open_file_at(dir: BorrowedFd, name: &CStr) -> Result<Option<OwnedFd>, Errno> {
    let fd = match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP | Errno::NXIO) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = rfs::fstat(&fd)?;
    Ok((FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then_some(fd))
}

/// What the walk does to each regular file and directory (`true` for a directory):
/// returns whether it changed anything.
type Visit<'f> = dyn FnMut(BorrowedFd, bool) -> io::Result<bool> + 'f;

struct Walk<'v> {
    dev: u64,
    visit: &'v mut Visit<'v>,
    /// Leave out a subdirectory already in `skip` that passes it on: what
    /// [`tag_tree`]'s second pass needs (such a directory was finished by the first).
    skip: Option<u32>,
    done: Tagged,
}

impl Walk<'_> {
    fn tag(&mut self, fd: BorrowedFd, is_dir: bool, path: &str) -> Result<(), WalkError> {
        self.done.inodes += 1;
        if (self.visit)(fd, is_dir).map_err(|e| werr(path, e))? {
            self.done.changed += 1;
        }
        Ok(())
    }

    /// Tags every entry of `dir` (already tagged itself), depth first. A subdirectory is
    /// tagged before it is listed, so what a running slot creates in it meanwhile inherits
    /// the ID.
    fn entries(&mut self, dir: BorrowedFd, at: &str, depth: usize) -> Result<(), WalkError> {
        if depth > MAX_DEPTH {
            return Err(werr(at, Errno::LOOP));
        }
        for e in rfs::Dir::read_from(dir).map_err(|e| werr(at, e))? {
            let e = e.map_err(|e| werr(at, e))?;
            let name = e.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let path = format!("{at}/{}", name.to_string_lossy());
            let ty = match e.file_type() {
                FileType::Unknown => match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(Errno::NOENT) => continue,
                    Err(err) => return Err(werr(&path, err)),
                },
                t => t,
            };
            match ty {
                FileType::Directory => {
                    let Some(fd) = open_dir_at(dir, name).map_err(|e| werr(&path, e))? else {
                        continue;
                    };
                    // Another file system mounted below the slot's directory is not the
                    // slot's to account.
                    if rfs::fstat(&fd).map_err(|e| werr(&path, e))?.st_dev as u64 != self.dev {
                        self.done.skipped += 1;
                        continue;
                    }
                    if let Some(id) = self.skip {
                        if dir_project(fd.as_fd()).map_err(|e| werr(&path, e))? == (id, true) {
                            continue;
                        }
                    }
                    self.tag(fd.as_fd(), true, &path)?;
                    self.entries(fd.as_fd(), &path, depth + 1)?;
                }
                FileType::RegularFile => {
                    if let Some(fd) = open_file_at(dir, name).map_err(|e| werr(&path, e))? {
                        self.tag(fd.as_fd(), false, &path)?;
                    }
                }
                _ => self.done.skipped += 1,
            }
        }
        Ok(())
    }
}

/// Puts every file and directory of the tree at `root` into project `id`.
///
/// The root directory gets the ID first without passing it on (it claims the ID: its
/// inode makes the ID's usage non-zero, so no other slot chooses it), and the mark to pass
/// it on last, once everything below is tagged: a root that passes on one of our IDs is a
/// finished walk. What a running slot created directly in the root during the walk is
/// tagged by a second pass over the root's entries, which does not descend into the
/// directories the first pass finished (each was marked before it was listed, so what was
/// made in it since inherited the ID).
pub fn tag_tree(root: BorrowedFd, path: &Path, id: u32) -> Result<Tagged, WalkError> {
    let at = path.display().to_string();
    set_project(root, id, false).map_err(|e| werr(&at, e))?;
    let mut visit = move |fd: BorrowedFd, is_dir: bool| set_project(fd, id, is_dir);
    let mut done = walk(root, &at, &mut visit, None)?;
    set_project(root, id, true).map_err(|e| werr(&at, e))?;
    done.inodes += 1;
    let again = walk(root, &at, &mut visit, Some(id))?;
    done.changed += again.changed;
    Ok(done)
}

/// Visits every regular file and directory below `root` (not `root` itself) on `root`'s
/// file system, without following a symlink.
fn walk(
    root: BorrowedFd,
    at: &str,
    visit: &mut Visit<'_>,
    skip: Option<u32>,
) -> Result<Tagged, WalkError> {
    let dev = rfs::fstat(root).map_err(|e| werr(at, e))?.st_dev as u64;
    let mut w = Walk {
        dev,
        visit,
        skip,
        done: Tagged::default(),
    };
    w.entries(root, at, 0)?;
    Ok(w.done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_by_number_then_first_come() {
        assert_eq!(preferred_id(Some(0)), Some(2_000_000_000));
        assert_eq!(preferred_id(Some(9999)), Some(2_000_009_999));
        assert_eq!(preferred_id(None), None);
        assert!(is_ours(FIRST_ID) && is_ours(LAST_ID));
        assert!(!is_ours(FIRST_ID - 1) && !is_ours(LAST_ID + 1) && !is_ours(0));
    }

    #[test]
    fn projid_names_reserve_ids() {
        let r = reserved_ids("# name:id\nlogs:10\nslots:2000000003\nbad line\nx: 7 \n");
        assert_eq!(
            r.into_iter().collect::<Vec<_>>(),
            vec![7, 10, 2_000_000_003]
        );
    }

    #[test]
    fn kernel_structures_have_the_kernel_sizes() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<QuotaStatV>(), 160);
        assert_eq!(Q_XGETQSTATV, 0x5808);
    }

    /// The walk reaches every regular file and directory of the tree and nothing behind
    /// its symlinks (the host's files a hostile root points at).
    #[test]
    fn walk_never_follows_symlinks_out_of_the_tree() {
        use std::os::unix::fs::{symlink, MetadataExt};
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("host");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "x").unwrap();
        let root = base.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "y").unwrap();
        std::fs::write(root.join("top"), "z").unwrap();
        symlink(&outside, root.join("a/to-host")).unwrap();
        symlink(outside.join("secret"), root.join("secret")).unwrap();
        let fd = rfs::open(&root, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        let mut seen = Vec::new();
        let mut visit = |fd: BorrowedFd, is_dir: bool| {
            seen.push((rfs::fstat(fd)?.st_ino, is_dir));
            Ok(true)
        };
        let t = walk(fd.as_fd(), "root", &mut visit, None).unwrap();
        assert_eq!(
            (t.inodes, t.changed, t.skipped),
            (4, 4, 2),
            "a, a/b, a/b/f, top; two symlinks"
        );
        let ino = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino();
        let mut want = vec![
            (ino(&root.join("a")), true),
            (ino(&root.join("a/b")), true),
            (ino(&root.join("a/b/f")), false),
            (ino(&root.join("top")), false),
        ];
        want.sort();
        seen.sort();
        assert_eq!(seen, want);
        assert!(!seen
            .iter()
            .any(|(i, _)| *i == ino(&outside) || *i == ino(&outside.join("secret"))));
    }

    /// Not a test: the walk's cost, for tests/bench/quota.sh. Tags the tree at
    /// $SLOT_OS_BENCH_TREE (on a file system that takes project IDs) with
    /// $SLOT_OS_BENCH_ID and prints "walk MICROSECONDS INODES CHANGED".
    #[test]
    #[ignore]
    fn bench_tag_tree() {
        let (Ok(tree), Ok(id)) = (
            std::env::var("SLOT_OS_BENCH_TREE"),
            std::env::var("SLOT_OS_BENCH_ID"),
        ) else {
            return;
        };
        let id: u32 = id.parse().unwrap();
        let fd = rfs::open(
            tree.as_str(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        let t0 = std::time::Instant::now();
        let t = tag_tree(fd.as_fd(), Path::new(&tree), id).unwrap();
        println!(
            "walk {} {} {}",
            t0.elapsed().as_micros(),
            t.inodes,
            t.changed
        );
    }
}
