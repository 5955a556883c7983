//! Where a slot's root and its own data are on disk, by storage backend. One place answers
//! "what does a capture of this slot read" and "what does a restore replace", so backups,
//! quotas and exports ask here instead of assuming the image directory.
//!
//! ```text
//! MACHINES/NAME                        the root nspawn boots: a plain image (btrfs, copy),
//!                                      or an overlay slot's mount point (empty when stopped)
//! MACHINES/.slot-os/                   hidden from machined (a leading '.'), root only
//!   lower/IMAGE@N/root                 version N of base image IMAGE, never changed
//!   lower/IMAGE@N/version.json         its fingerprint and when it was made
//!   slot/NAME/upper                    an overlay slot's own files (0:0 on disk)
//!   slot/NAME/work                     overlayfs's work directory
//!   slot/NAME/base                     the version it is pinned to ("IMAGE@N")
//! ```
//! Everything sits inside the machines directory, so it is one file system: quotas and `df`
//! see one place, and versions are made and swapped by rename.

use std::path::{Path, PathBuf};

use slot_config::{HostConfig, Paths, Slot, Storage};

/// The hidden directory of slot-os's own layers, inside the machines directory.
pub const HIDDEN: &str = ".slot-os";
/// In an overlay slot's layer directory: its upper, work directory and pin.
pub const UPPER: &str = "upper";
pub const WORK: &str = "work";
pub const PIN: &str = "base";

/// The machines directory as the helper reaches it (under `SLOT_OS_ROOT` in tests).
pub fn machines_dir(paths: &Paths, host: &HostConfig) -> PathBuf {
    paths.under(&host.machines_dir)
}

/// `MACHINES/.slot-os/lower`: versions of base images.
pub fn lowers_dir(machines: &Path) -> PathBuf {
    machines.join(HIDDEN).join("lower")
}

/// `MACHINES/.slot-os/slot`: overlay slots' own layers.
pub fn layers_dir(machines: &Path) -> PathBuf {
    machines.join(HIDDEN).join("slot")
}

/// Where the helper's private mount namespaces stage overlay layers (see `sys::overlay`).
pub fn stage_dir(paths: &Paths) -> PathBuf {
    paths.run_dir().join("stage")
}

/// A slot's places on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The name of its image (and of its layer directory).
    pub image_name: String,
    /// `MACHINES/IMAGE`: the root nspawn boots; an overlay slot's mount point.
    pub image: PathBuf,
    /// An overlay slot's own layer (`MACHINES/.slot-os/slot/IMAGE`).
    pub layer: Option<PathBuf>,
}

impl Layout {
    pub fn of(machines: &Path, slot: &Slot) -> Layout {
        Layout::named(machines, slot.image_name(), slot.storage)
    }

    pub fn named(machines: &Path, image: &str, storage: Option<Storage>) -> Layout {
        Layout {
            image_name: image.to_string(),
            image: machines.join(image),
            layer: (storage == Some(Storage::Overlay)).then(|| layers_dir(machines).join(image)),
        }
    }

    pub fn is_overlay(&self) -> bool {
        self.layer.is_some()
    }

    /// What is the slot's own, as files on disk: what a backup captures and a disk quota
    /// limits. A plain image: the whole image. An overlay slot: its upper directory (the
    /// base version below it is shared and recorded by its pin), where deleted base files
    /// are whiteouts (character devices 0/0) and replaced directories carry
    /// `trusted.overlay.opaque`: a capture must keep both.
    pub fn capture_dir(&self) -> PathBuf {
        match &self.layer {
            Some(l) => l.join(UPPER),
            None => self.image.clone(),
        }
    }

    /// What a restore builds anew beside itself and exchanges in one rename: the image
    /// directory, or an overlay slot's whole layer directory (upper, work and pin together,
    /// since a backup may need another base version than the slot has now).
    pub fn restore_target(&self) -> &Path {
        self.layer.as_deref().unwrap_or(&self.image)
    }

    /// Whether the slot's data exists (an overlay slot's mount point alone is not its data).
    pub fn exists(&self) -> bool {
        self.restore_target().is_dir()
    }

    /// [`Layout::of`] a slot whose data must exist (what reads it: export, move).
    pub fn existing(machines: &Path, slot: &Slot) -> Result<Layout, NoImage> {
        let lay = Layout::of(machines, slot);
        match lay.exists() {
            true => Ok(lay),
            false => Err(NoImage {
                slot: slot.name.clone(),
                path: lay.restore_target().to_path_buf(),
            }),
        }
    }
}

/// A slot whose data is not where its layout says (never built, or removed by hand).
#[derive(Debug, thiserror::Error)]
#[error("{slot} has no image at {}", path.display())]
pub struct NoImage {
    pub slot: String,
    pub path: PathBuf,
}

/// The directory that holds the slot's own data, what a disk quota limits: the root of a
/// copied or snapshotted slot; an overlay slot's layer directory, its upper and overlayfs's
/// work directory together (the base version below is shared, so it counts for no slot).
/// Not the upper alone: overlayfs copies a file up by making it in the work directory and
/// renaming it into the upper, and ext4 refuses (EXDEV) a rename into a directory of
/// another project, so both must be in the slot's project.
pub fn own_data_dir(machines: &Path, slot: &Slot) -> PathBuf {
    Layout::of(machines, slot).restore_target().to_path_buf()
}

/// What `list` and `info` say about a slot's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The backend: as recorded in the slot's file, or for a slot made before it was
    /// recorded, as the image directory is (a subvolume: btrfs, a directory: copy).
    pub storage: Option<Storage>,
    /// Whether that came from the slot's file.
    pub recorded: bool,
    /// An overlay slot's base version (`IMAGE@N`), when its pin can be read.
    pub base_version: Option<String>,
}

impl Described {
    /// `overlay`, `btrfs`, `copy`, or `-` when there is no image at all.
    pub fn text(&self) -> &'static str {
        self.storage.map_or("-", Storage::as_str)
    }
}

pub fn describe(machines: &Path, slot: &Slot) -> Described {
    let lay = Layout::of(machines, slot);
    let storage = slot.storage.or_else(|| {
        if crate::storage::image::is_subvolume(&lay.image) {
            Some(Storage::Btrfs)
        } else if lay.image.is_dir() {
            Some(Storage::Copy)
        } else {
            None
        }
    });
    Described {
        storage,
        recorded: slot.storage.is_some(),
        base_version: lay
            .layer
            .as_deref()
            .and_then(|l| crate::storage::layer::pin(l).ok())
            .map(|v| v.id()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_and_restores_by_backend() {
        let m = Path::new("/var/lib/machines");
        let plain = Layout::named(m, "slot00", Some(Storage::Copy));
        assert_eq!(plain.capture_dir(), m.join("slot00"));
        assert_eq!(plain.restore_target(), m.join("slot00"));
        assert_eq!(Layout::named(m, "slot00", None), plain);
        let ov = Layout::named(m, "slot00", Some(Storage::Overlay));
        assert_eq!(
            ov.capture_dir(),
            m.join(".slot-os/slot/slot00/upper"),
            "only the upper is the slot's own"
        );
        assert_eq!(ov.restore_target(), m.join(".slot-os/slot/slot00"));
        assert_eq!(ov.image, m.join("slot00"));
    }
}
