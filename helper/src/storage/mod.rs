//! Slot roots on disk: images (btrfs subvolumes or directories, identity, swaps), making a
//! copied root boot clean (`image_prep`), SSH host keys, tar+zstd archives, and freezing a
//! running slot while its root is captured.

pub mod archive;
pub mod backups;
pub mod capture;
pub mod freeze;
pub mod holes;
pub mod hostkeys;
pub mod image;
pub mod image_prep;
pub mod layout;
pub mod restic;
pub mod stream;
pub mod tarcheck;
pub mod unpack;
