//! Slot roots on disk: images (btrfs subvolumes or directories, identity, swaps), a slot's
//! own image made from the base (`provision`), making a copied root boot clean
//! (`image_prep`), SSH host keys, tar+zstd archives, and freezing a running slot while its
//! root is captured.

pub mod archive;
pub mod freeze;
pub mod hostkeys;
pub mod image;
pub mod image_prep;
pub mod provision;
pub mod stream;
pub mod tarcheck;
pub mod unpack;
