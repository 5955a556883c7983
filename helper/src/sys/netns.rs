//! Doing something inside another process's network namespace: `setns` moves only the
//! calling thread, so a short-lived thread enters the namespace, runs the opener there
//! (a socket stays in the namespace it was made in), and ends with it. The rest of the
//! process never changes namespace.

use std::fs::File;
use std::io;

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("entering the network namespace: {0}")]
    Enter(#[source] io::Error),
    #[error("{0}")]
    Run(#[source] io::Error),
}

impl Error {
    pub fn into_io(self) -> io::Error {
        match self {
            Error::Enter(e) | Error::Run(e) => e,
        }
    }
}

fn enter(pid: u32) -> Result<(), Error> {
    let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(Error::Enter)?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Enter(e.into()))
}

/// `open` run inside the network namespace of `pid`.
pub fn in_netns_of<T: Send>(
    pid: u32,
    open: impl FnOnce() -> io::Result<T> + Send,
) -> Result<T, Error> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(pid)?;
            open().map_err(Error::Run)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Run(io::Error::other("namespace thread panicked"))))
    })
}

/// `open` run inside the network namespace of each of `pids`, by one thread that enters
/// them in turn.
pub fn in_each_netns_of<T: Send>(
    pids: &[u32],
    open: impl Fn() -> io::Result<T> + Sync,
) -> Vec<Result<T, Error>> {
    if pids.is_empty() {
        return Vec::new();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            pids.iter()
                .map(|&pid| {
                    enter(pid)?;
                    open().map_err(Error::Run)
                })
                .collect()
        })
        .join()
        .unwrap_or_else(|_| {
            pids.iter()
                .map(|_| Err(Error::Run(io::Error::other("namespace thread panicked"))))
                .collect()
        })
    })
}
