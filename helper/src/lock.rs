//! One helper at a time changes config and images: an exclusive flock on
//! /run/slot-os/lock, held for the whole command (released by the kernel if we die).

use std::fs::{self, File, OpenOptions};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use slot_config::Paths;

pub struct Lock {
    _flock: Flock<File>,
}

pub fn exclusive(paths: &Paths) -> anyhow::Result<Lock> {
    let dir = paths.run_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let flock = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(Lock { _flock: flock })
}
