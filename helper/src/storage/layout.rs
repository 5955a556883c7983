//! Where a slot's data is on disk.

use std::path::{Path, PathBuf};

use slot_config::Slot;

/// The directory a capture (backup, export, move) of `slot` reads: the slot's own data.
/// Today that is its whole image; a slot whose root is an overlay of a base image keeps
/// its own data in the upper directory, and only that is captured.
pub fn capture_dir(machines_dir: &Path, slot: &Slot) -> PathBuf {
    machines_dir.join(slot.image_name())
}
