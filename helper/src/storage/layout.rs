//! Where a slot's data lives on disk. One function says which directory holds the slot's
//! own data, so that what acts on "the slot's files" (quotas today) follows it when a
//! backend keeps them elsewhere.

use std::path::{Path, PathBuf};

use slot_config::Slot;

/// The directory that holds the slot's own data: the root of a copied or snapshotted
/// slot, `MACHINES/IMAGE`. (An overlay slot's own data is its upper directory; that
/// backend answers here when it lands.)
pub fn own_data_dir(machines: &Path, slot: &Slot) -> PathBuf {
    machines.join(slot.image_name())
}
