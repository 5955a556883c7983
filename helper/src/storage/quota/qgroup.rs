//! btrfs qgroups: the slot's subvolume has its own qgroup `0/ID`, whose referenced-bytes
//! limit is the slot's disk limit (what `btrfs qgroup limit SIZE PATH` and `machinectl
//! set-limit` set). Quotas are a per-file-system switch (`btrfs quota enable`), turned on
//! the first time a limit is set. Usage and limits are read from sysfs
//! (`/sys/fs/btrfs/FSID/qgroups/0_ID/`), which the kernel keeps since 5.9.
//!
//! Referenced, not exclusive: a slot snapshotted from the base image shares the base's
//! extents, and `disk` counts everything the slot can see, as on a copied slot, so the
//! limit means the same on every file system and does not jump when the base image is
//! removed or a shared file is rewritten.
//!
//! Every ioctl here goes to a directory whose file system was checked to be btrfs first:
//! btrfs's ioctl numbers are reused by device drivers (systemd's btrfs-util.c warns of it).

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `struct btrfs_ioctl_fs_info_args` of linux/btrfs.h (1024 bytes); only the fsid is read.
#[repr(C)]
struct FsInfo {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 992],
}

/// `struct btrfs_ioctl_ino_lookup_args` (4096 bytes).
#[repr(C)]
struct InoLookup {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtl {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args`.
#[repr(C)]
struct QgroupLimit {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

nix::ioctl_read!(btrfs_fs_info, 0x94, 31, FsInfo);
nix::ioctl_readwrite!(btrfs_ino_lookup, 0x94, 18, InoLookup);
nix::ioctl_readwrite!(btrfs_quota_ctl, 0x94, 40, QuotaCtl);
nix::ioctl_none!(btrfs_quota_rescan_wait, 0x94, 46);
// The kernel declares it _IOR although it only reads the arguments.
nix::ioctl_read!(btrfs_qgroup_limit, 0x94, 43, QgroupLimit);
nix::ioctl_write_ptr!(btrfs_qgroup_create, 0x94, 42, QgroupCreate);

/// `struct btrfs_ioctl_qgroup_create_args`.
#[repr(C)]
struct QgroupCreate {
    create: u64,
    qgroupid: u64,
}

const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
/// The kernel's CLEAR_VALUE: with the flag set, lifts the limit.
const CLEAR_VALUE: u64 = u64::MAX;

fn open(dir: &Path) -> io::Result<File> {
    File::open(dir)
}

/// The file system's UUID, as its /sys/fs/btrfs directory is named.
fn fsid(f: &File) -> io::Result<String> {
    let mut a = FsInfo {
        max_id: 0,
        num_devices: 0,
        fsid: [0; 16],
        rest: [0; 992],
    };
    // SAFETY: a btrfs directory's fd and a properly laid out fs_info struct.
    unsafe { btrfs_fs_info(f.as_raw_fd(), &mut a) }.map_err(io::Error::from)?;
    let h: Vec<String> = a.fsid.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// The ID of the subvolume at `dir`.
pub fn subvolume_id_of(dir: &Path) -> io::Result<u64> {
    subvolume_id(&open(dir)?)
}

/// Destroys qgroup `0/id` of the file system of `dir` (a subvolume's, once the subvolume
/// is deleted: newer kernels do it themselves, 6.1 leaves it behind as systemd's
/// BTRFS_REMOVE_QUOTA knows). An error (quotas off, no such qgroup) is left unsaid.
pub fn destroy(dir: &Path, id: u64) {
    let Ok(f) = open(dir) else { return };
    let a = QgroupCreate {
        create: 0,
        qgroupid: id,
    };
    // SAFETY: as for btrfs_fs_info; the caller checked `dir` is on btrfs.
    let _ = unsafe { btrfs_qgroup_create(f.as_raw_fd(), &a) };
}

/// The ID of the subvolume `f` is in.
fn subvolume_id(f: &File) -> io::Result<u64> {
    let mut a = InoLookup {
        treeid: 0,
        objectid: BTRFS_FIRST_FREE_OBJECTID,
        name: [0; 4080],
    };
    // SAFETY: as for btrfs_fs_info.
    unsafe { btrfs_ino_lookup(f.as_raw_fd(), &mut a) }.map_err(io::Error::from)?;
    Ok(a.treeid)
}

fn sysfs_dir(f: &File) -> io::Result<PathBuf> {
    Ok(Path::new("/sys/fs/btrfs").join(fsid(f)?))
}

/// Whether quotas are on for the file system of `dir`.
pub fn enabled(dir: &Path) -> io::Result<bool> {
    let f = open(dir)?;
    Ok(sysfs_dir(&f)?.join("qgroups").is_dir())
}

/// `btrfs quota enable`, then waits for the scan that fills in the usage of what is
/// already there (long on a large file system; once per file system).
pub fn enable(dir: &Path) -> io::Result<()> {
    let f = open(dir)?;
    let mut a = QuotaCtl {
        cmd: BTRFS_QUOTA_CTL_ENABLE,
        status: 0,
    };
    // SAFETY: as for btrfs_fs_info.
    unsafe { btrfs_quota_ctl(f.as_raw_fd(), &mut a) }.map_err(io::Error::from)?;
    // SAFETY: a btrfs directory's fd; the ioctl takes no argument.
    match unsafe { btrfs_quota_rescan_wait(f.as_raw_fd()) } {
        Ok(_) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sets (or with `None` lifts) the referenced-bytes limit of the subvolume at `dir`.
pub fn set_limit(dir: &Path, bytes: Option<u64>) -> io::Result<()> {
    let f = open(dir)?;
    let mut a = QgroupLimit {
        // 0: the qgroup of the subvolume the fd is in.
        qgroupid: 0,
        flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
        max_rfer: bytes.unwrap_or(CLEAR_VALUE),
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: as for btrfs_fs_info.
    unsafe { btrfs_qgroup_limit(f.as_raw_fd(), &mut a) }.map_err(io::Error::from)?;
    Ok(())
}

/// Referenced bytes and the referenced limit (`None`: no limit) of the subvolume at `dir`;
/// `Ok(None)` when quotas are off or the subvolume has no qgroup.
pub fn usage(dir: &Path) -> io::Result<Option<(u64, Option<u64>)>> {
    let f = open(dir)?;
    let q = sysfs_dir(&f)?
        .join("qgroups")
        .join(format!("0_{}", subvolume_id(&f)?));
    let read = |name: &str| -> io::Result<Option<u64>> {
        match fs::read_to_string(q.join(name)) {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let Some(used) = read("referenced")? else {
        return Ok(None);
    };
    // The kernel keeps 0 for "no limit".
    let limit = read("max_referenced")?.filter(|m| *m > 0);
    Ok(Some((used, limit)))
}
