//! btrfs qgroups: the slot's subvolume has its own qgroup `0/ID`, whose referenced-bytes
//! limit is the slot's disk limit (what `btrfs qgroup limit SIZE PATH` and `machinectl
//! set-limit` set). Quotas are a per-file-system switch (`btrfs quota enable`), turned on
//! the first time a limit is set. Usage and limits are read from the quota tree itself
//! (BTRFS_IOC_TREE_SEARCH, as systemd's btrfs-util.c does): /sys/fs/btrfs, which has them
//! too, is not there in a container.
//!
//! Referenced, not exclusive: a slot snapshotted from the base image shares the base's
//! extents, and `disk` counts everything the slot can see, as on a copied slot, so the
//! limit means the same on every file system and does not jump when the base image is
//! removed or a shared file is rewritten.
//!
//! Every ioctl here goes to a directory whose file system was checked to be btrfs first:
//! btrfs's ioctl numbers are reused by device drivers (systemd's btrfs-util.c warns of it).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

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

nix::ioctl_readwrite!(btrfs_tree_search, 0x94, 17, SearchArgs);
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

/// `struct btrfs_ioctl_search_key`.
#[repr(C)]
#[derive(Default)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

/// `struct btrfs_ioctl_search_args` (4096 bytes): the key, then the items found, each a
/// 32-byte `btrfs_ioctl_search_header` and its item.
#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; 4096 - 104],
}

const BTRFS_QUOTA_TREE_OBJECTID: u64 = 8;
const BTRFS_QGROUP_INFO_KEY: u32 = 242;
const BTRFS_QGROUP_LIMIT_KEY: u32 = 244;
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
/// The kernel's CLEAR_VALUE: with the flag set, lifts the limit.
const CLEAR_VALUE: u64 = u64::MAX;

fn open(dir: &Path) -> io::Result<File> {
    File::open(dir)
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

/// The quota tree's item of type `ty` for qgroup `0/id` (key: objectid 0, that type,
/// offset the qgroup ID; the search range is one key, since the kernel compares keys as a
/// whole). `Ok(None)` when quotas are off (there is no quota tree then), `Ok(Some(None))`
/// when there is no such item.
fn qgroup_item(f: &File, id: u64, ty: u32) -> io::Result<Option<Option<Vec<u8>>>> {
    let mut a = SearchArgs {
        key: SearchKey {
            tree_id: BTRFS_QUOTA_TREE_OBJECTID,
            min_offset: id,
            max_offset: id,
            max_transid: u64::MAX,
            min_type: ty,
            max_type: ty,
            nr_items: 1,
            ..Default::default()
        },
        buf: [0; 4096 - 104],
    };
    // SAFETY: a btrfs directory's fd and a properly laid out search_args.
    match unsafe { btrfs_tree_search(f.as_raw_fd(), &mut a) } {
        Ok(_) => {}
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    if a.key.nr_items == 0 {
        return Ok(Some(None));
    }
    // btrfs_ioctl_search_header: transid, objectid, offset, type, len; then the item.
    let len = u32::from_ne_bytes(a.buf[28..32].try_into().unwrap_or([0; 4])) as usize;
    Ok(Some(a.buf.get(32..32 + len).map(<[u8]>::to_vec)))
}

/// The little-endian u64 at word `i` of an on-disk item.
fn le64(item: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        item.get(i * 8..i * 8 + 8)?.try_into().ok()?,
    ))
}

/// Whether quotas are on for the file system of `dir`.
pub fn enabled(dir: &Path) -> io::Result<bool> {
    Ok(qgroup_item(&open(dir)?, 0, BTRFS_QGROUP_INFO_KEY)?.is_some())
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
    let id = subvolume_id(&f)?;
    // btrfs_qgroup_info_item: generation, rfer, ...; btrfs_qgroup_limit_item: flags,
    // max_rfer, ...
    let Some(Some(info)) = qgroup_item(&f, id, BTRFS_QGROUP_INFO_KEY)? else {
        return Ok(None);
    };
    let Some(used) = le64(&info, 1) else {
        return Ok(None);
    };
    let limit = qgroup_item(&f, id, BTRFS_QGROUP_LIMIT_KEY)?
        .flatten()
        .filter(|l| le64(l, 0).is_some_and(|flags| flags & BTRFS_QGROUP_LIMIT_MAX_RFER != 0))
        .and_then(|l| le64(&l, 1));
    Ok(Some((used, limit)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn search_args_are_one_page() {
        assert_eq!(std::mem::size_of::<super::SearchKey>(), 104);
        assert_eq!(std::mem::size_of::<super::SearchArgs>(), 4096);
        assert_eq!(std::mem::size_of::<super::InoLookup>(), 4096);
        assert_eq!(std::mem::size_of::<super::QgroupLimit>(), 48);
    }
}
