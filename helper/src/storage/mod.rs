//! Slot roots on disk: images (btrfs subvolumes or directories, identity, swaps), a slot's
//! own image made from the base (`provision`), making a copied root boot clean
//! (`image_prep`), SSH host keys, tar+zstd archives, and freezing a running slot while its
//! root is captured; where a slot's own data is (`layout`) and its disk quota (`quota`); a
//! move's dumps, wire and markers (`dump`, `wire`, `moves`).

pub mod archive;
pub mod backend;
pub mod backups;
pub mod capture;
pub mod dump;
pub mod freeze;
pub mod holes;
pub mod hostkeys;
pub mod image;
pub mod image_prep;
pub mod layer;
pub mod layout;
pub mod lower;
pub mod moves;
pub mod provision;
pub mod quota;
pub mod restic;
pub mod stream;
pub mod tarcheck;
pub mod unpack;
pub mod wire;
