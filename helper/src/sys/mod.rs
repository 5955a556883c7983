//! The operating system beneath the helper: entering namespaces and running processes in a
//! slot (`nsexec`, `netns`), paths opened inside a slot's root (`inroot`), the helper lock,
//! sd_notify, the journal, kernel limits, a slot's cgroup counters, child processes that
//! die with us, and bounded worker threads (`workers`).

pub mod cgroup;
pub mod inroot;
pub mod journal;
pub mod limits;
pub mod lock;
pub mod netns;
pub mod notify;
pub mod nsexec;
pub mod overlay;
pub mod priority;
pub mod workers;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// This host's name as the kernel has it (what `hostname` prints), for messages that name
/// the host: a move's two ends say where a slot went or came from.
pub fn hostname() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

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

/// Writes `path` atomically: `text` goes to the temporary file `tmp` (beside it, created
/// with `mode`, or the umask's default when `None`), is fsynced, and renamed over `path`,
/// so readers see the old file or the new one, never a mix, even if we are killed halfway.
pub fn replace_file(path: &Path, tmp: &Path, text: &str, mode: Option<u32>) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .context("a file to replace has no directory")?;
    let _ = fs::remove_file(tmp);
    let r = (|| -> std::io::Result<()> {
        let mut o = fs::OpenOptions::new();
        o.write(true).create_new(true);
        if let Some(m) = mode {
            o.mode(m);
        }
        let mut f = o.open(tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = fs::remove_file(tmp);
    }
    r.with_context(|| format!("writing {}", path.display()))
}
