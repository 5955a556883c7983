//! The operating system beneath the helper: entering namespaces and running processes in a
//! slot (`nsexec`, `netns`), paths opened inside a slot's root (`inroot`), the helper lock,
//! sd_notify, the journal, kernel limits, and child processes that die with us.

pub mod inroot;
pub mod journal;
pub mod limits;
pub mod lock;
pub mod netns;
pub mod notify;
pub mod nsexec;

use std::process::Command;

/// A child that dies with us: a helper killed midway must not leave a `tar` or `zstd`
/// still writing into a tree the next command is about to remove or reuse.
pub fn tool(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    c
}
