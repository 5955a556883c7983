//! How a slot's root is kept on disk (`[storage] backend` of the host, `storage` of a slot)
//! and the user-namespace range an overlay slot is given.

use std::fmt;
use std::str::FromStr;

/// What `build` made a slot's root with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Storage {
    /// A btrfs snapshot of the base image (machined's CloneImage on btrfs).
    Btrfs,
    /// An overlayfs root: a read-only version of the base image below the slot's own upper
    /// directory, mounted by `slot-os-root@NAME.service` before the slot starts.
    Overlay,
    /// A full copy of the base image (machined's CloneImage elsewhere: reflinks where the
    /// file system has them).
    Copy,
}

impl Storage {
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Btrfs => "btrfs",
            Storage::Overlay => "overlay",
            Storage::Copy => "copy",
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Storage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "btrfs" => Ok(Storage::Btrfs),
            "overlay" => Ok(Storage::Overlay),
            "copy" => Ok(Storage::Copy),
            _ => Err(format!(
                "{s:?} is not a storage backend; use \"btrfs\", \"overlay\" or \"copy\""
            )),
        }
    }
}

/// The host's `[storage] backend`: one backend, or `auto` (`None`).
pub fn parse_backend(s: &str) -> Result<Option<Storage>, String> {
    match s {
        "auto" => Ok(None),
        _ => s.parse().map(Some).map_err(|_| {
            format!(
                "{s:?} is not a storage backend; use \"auto\", \"btrfs\", \"overlay\" or \"copy\""
            )
        }),
    }
}

/// First host UID of overlay slot 0's user namespace. Above nspawn's own `pick` range
/// (0x00080000-0x6FFF0000), below systemd's foreign UID range (0x7FFE0000) and the 2^31
/// boundary some tools treat as negative.
pub const UID_BASE_START: u32 = 0x7000_0000;
/// Each slot's range: 65536 IDs, as nspawn gives.
pub const UID_RANGE: u32 = 0x10000;
/// systemd's foreign UID range starts here; no slot range may reach it.
pub const FOREIGN_UID_BASE: u32 = 0x7FFE_0000;
/// Highest slot number an unprivileged overlay slot may have: its range must end below
/// the foreign range.
pub const MAX_OVERLAY_NUMBER: u32 = (FOREIGN_UID_BASE - UID_BASE_START) / UID_RANGE - 1;

/// The first host UID of an overlay slot's user namespace: fixed by its number, so the
/// layers can be idmapped before nspawn starts, and disjoint from every other slot's.
pub fn uid_base(number: u32) -> Option<u32> {
    (number <= MAX_OVERLAY_NUMBER).then(|| UID_BASE_START + number * UID_RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_between_pick_and_foreign() {
        assert_eq!(MAX_OVERLAY_NUMBER, 4093);
        assert_eq!(uid_base(0), Some(0x7000_0000));
        let last = uid_base(MAX_OVERLAY_NUMBER).unwrap();
        assert!(last + UID_RANGE <= FOREIGN_UID_BASE);
        assert_eq!(uid_base(MAX_OVERLAY_NUMBER + 1), None);
        // nspawn's pick range ends at 0x6FFF0000 + 0x10000.
        assert!(uid_base(0).unwrap() >= 0x6FFF_0000 + UID_RANGE);
        assert_eq!(uid_base(1).unwrap() - uid_base(0).unwrap(), UID_RANGE);
    }

    #[test]
    fn names() {
        for s in [Storage::Btrfs, Storage::Overlay, Storage::Copy] {
            assert_eq!(s.as_str().parse::<Storage>().unwrap(), s);
        }
        assert_eq!(parse_backend("auto").unwrap(), None);
        assert!(parse_backend("zfs").is_err());
        assert!("auto".parse::<Storage>().is_err());
    }
}
