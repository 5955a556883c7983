//! What a move keeps on disk so that, interrupted at any point, one whole slot survives
//! (`/var/lib/slot-os/moves/`, root only):
//! - on the source, `out-SLOT.json`: the move's phase, and from the handover on the slot's
//!   TOML parked beside it (`out-SLOT.toml`), so neither autostart nor a start by name
//!   can run the source's copy while the target may own the slot;
//! - on the target, `in-SLOT.json`: the staging directory and the phase, and `in-SLOT.lock`,
//!   flocked by the receiving process while it lives.
//!
//! Markers are written atomically (write, fsync, rename). The phases and what a later run
//! does with each are in the commands (`move_slot.rs`, `move_receive.rs`) and in
//! docs/notes/move.md.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use slot_config::Paths;

/// The source's phases, in order.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum OutPhase {
    /// The slot runs here (or is stopped and locked); its copy is on the way.
    Copying,
    /// Frozen here; its changes are on the way.
    Frozen,
    /// Being stopped here, its TOML being parked; the target has all of it but no slot.
    Stopping,
    /// The target was told to make it its own: only the target knows whether it did.
    HandedOver,
    /// The target has it: what is left here is removed.
    Finishing,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    pub slot: String,
    pub host: String,
    /// The command that reaches the target's `slot-os move-receive`.
    pub peer: Vec<String>,
    pub phase: OutPhase,
    pub was_running: bool,
    /// The slot's TOML in /etc/slot-os.
    pub config: PathBuf,
    /// Its image, removed once the target has the slot.
    pub image: PathBuf,
}

/// The target's phases, in order.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum InPhase {
    /// The root arrives in the staging directory; no slot here yet.
    Receiving,
    /// The staging directory is being renamed into place; the TOML is not written yet.
    Committing,
    /// The TOML is written: the slot is this host's (being started).
    Committed,
    /// Started (or moved stopped): kept until the source says it is done.
    Done,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Incoming {
    pub id: String,
    pub slot: String,
    pub source: String,
    pub phase: InPhase,
    pub staging: PathBuf,
    pub image: PathBuf,
    pub config: PathBuf,
    /// Start it once it is here.
    pub start: bool,
}

pub fn dir(paths: &Paths) -> PathBuf {
    paths.state_dir().join("moves")
}

pub fn out_marker(paths: &Paths, slot: &str) -> PathBuf {
    dir(paths).join(format!("out-{slot}.json"))
}

pub fn parked(paths: &Paths, slot: &str) -> PathBuf {
    dir(paths).join(format!("out-{slot}.toml"))
}

pub fn in_marker(paths: &Paths, slot: &str) -> PathBuf {
    dir(paths).join(format!("in-{slot}.json"))
}

fn in_lock(paths: &Paths, slot: &str) -> PathBuf {
    dir(paths).join(format!("in-{slot}.lock"))
}

/// Whether any move left something to settle here (a readdir: cheap for every command).
pub fn any(paths: &Paths) -> bool {
    fs::read_dir(dir(paths)).is_ok_and(|mut d| d.next().is_some())
}

fn ensure_dir(paths: &Paths) -> anyhow::Result<PathBuf> {
    let d = dir(paths);
    // A slot's TOML may hold secrets (environment): root only.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
        .with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

fn write(paths: &Paths, path: &Path, text: &str) -> anyhow::Result<()> {
    ensure_dir(paths)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    crate::sys::replace_file(path, &tmp, text, Some(0o600))
}

pub fn save<T: Serialize>(paths: &Paths, path: &Path, marker: &T) -> anyhow::Result<()> {
    write(paths, path, &serde_json::to_string_pretty(marker)?)
}

pub fn load<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Every marker of one side (`out-` or `in-`), with its path; unreadable ones are named.
fn list<T: DeserializeOwned>(paths: &Paths, prefix: &str) -> Vec<(PathBuf, Option<T>)> {
    let mut v: Vec<(PathBuf, Option<T>)> = fs::read_dir(dir(paths))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(prefix) && n.ends_with(".json")
        })
        .map(|e| (e.path(), load(&e.path())))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub fn outgoing(paths: &Paths) -> Vec<(PathBuf, Option<Outgoing>)> {
    list(paths, "out-")
}

pub fn incoming(paths: &Paths) -> Vec<(PathBuf, Option<Incoming>)> {
    list(paths, "in-")
}

pub fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Parks a slot's TOML: copied beside the marker (fsynced), then removed from
/// /etc/slot-os, so the slot no longer exists here for the generator or a start by name.
pub fn park(paths: &Paths, slot: &str, config: &Path) -> anyhow::Result<()> {
    let text =
        fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    write(paths, &parked(paths, slot), &text)?;
    remove(config)?;
    if let Some(d) = config.parent() {
        File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Puts a parked TOML back (if it is parked and the slot's file is not there); true if it
/// did. The parked copy goes last.
pub fn unpark(paths: &Paths, slot: &str, config: &Path) -> anyhow::Result<bool> {
    let p = parked(paths, slot);
    let Ok(text) = fs::read_to_string(&p) else {
        return Ok(false);
    };
    let back = config.symlink_metadata().is_err();
    if back {
        let name = config
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::sys::replace_file(
            config,
            &config.with_file_name(format!(".{name}.tmp")),
            &text,
            None,
        )?;
    }
    remove(&p)?;
    Ok(back)
}

/// Held by a receiving target while it lives (the kernel drops it when the process dies),
/// so a later run can tell a receiver at work from a dead one's leftovers.
pub struct Alive {
    _lock: Flock<File>,
}

fn open_lock(paths: &Paths, slot: &str) -> anyhow::Result<File> {
    ensure_dir(paths)?;
    let p = in_lock(paths, slot);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))
}

/// Takes the slot's receiver lock; `None` if another receiver holds it.
pub fn alive(paths: &Paths, slot: &str) -> anyhow::Result<Option<Alive>> {
    match Flock::lock(open_lock(paths, slot)?, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(Alive { _lock: l })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).context("locking the receiver lock"),
    }
}

/// Waits up to `limit` for the slot's receiver (if any) to end; false if it still runs.
pub fn wait_receiver(paths: &Paths, slot: &str, limit: Duration) -> anyhow::Result<bool> {
    let f = open_lock(paths, slot)?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Released before the answer: the caller takes the lock next, at once.
        let free = Flock::lock(f, FlockArg::LockExclusive).map(drop).is_ok();
        let _ = tx.send(free);
    });
    Ok(rx.recv_timeout(limit).unwrap_or(false))
}

/// Removes the receiver lock file of a settled move (only while holding it).
pub fn forget_lock(paths: &Paths, slot: &str, held: Alive) {
    let _ = fs::remove_file(in_lock(paths, slot));
    drop(held);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> (tempfile::TempDir, Paths) {
        let t = tempfile::tempdir().unwrap();
        let p = Paths::with_root(t.path());
        (t, p)
    }

    #[test]
    fn markers_round_trip_and_are_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let (_t, p) = paths();
        let m = Outgoing {
            id: "abc".into(),
            slot: "slot00".into(),
            host: "web2".into(),
            peer: vec!["ssh".into(), "web2".into()],
            phase: OutPhase::Frozen,
            was_running: true,
            config: p.config_dir().join("slot00.toml"),
            image: p.under("/var/lib/machines/slot00"),
        };
        let path = out_marker(&p, "slot00");
        save(&p, &path, &m).unwrap();
        let back: Outgoing = load(&path).unwrap();
        assert_eq!((back.phase, back.id.as_str()), (OutPhase::Frozen, "abc"));
        assert!(any(&p));
        assert_eq!(outgoing(&p).len(), 1);
        assert!(incoming(&p).is_empty());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir(&p)), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert!(OutPhase::Stopping < OutPhase::HandedOver);
        fs::write(dir(&p).join("out-bad.json"), "{").unwrap();
        assert!(
            outgoing(&p).iter().any(|(_, m)| m.is_none()),
            "unreadable markers are listed"
        );
    }

    #[test]
    fn a_parked_toml_goes_back_only_where_nothing_took_its_place() {
        let (_t, p) = paths();
        let cfg = p.config_dir().join("slot00.toml");
        fs::create_dir_all(p.config_dir()).unwrap();
        fs::write(&cfg, "memory = \"1G\"\n").unwrap();
        park(&p, "slot00", &cfg).unwrap();
        assert!(!cfg.exists());
        assert_eq!(
            fs::read_to_string(parked(&p, "slot00")).unwrap(),
            "memory = \"1G\"\n"
        );
        assert!(unpark(&p, "slot00", &cfg).unwrap());
        assert_eq!(fs::read_to_string(&cfg).unwrap(), "memory = \"1G\"\n");
        assert!(!parked(&p, "slot00").exists());
        assert!(!unpark(&p, "slot00", &cfg).unwrap(), "nothing parked");
        park(&p, "slot00", &cfg).unwrap();
        fs::write(&cfg, "other\n").unwrap();
        assert!(!unpark(&p, "slot00", &cfg).unwrap());
        assert_eq!(
            fs::read_to_string(&cfg).unwrap(),
            "other\n",
            "never overwritten"
        );
    }

    #[test]
    fn a_live_receiver_is_told_from_a_dead_one() {
        let (_t, p) = paths();
        let held = alive(&p, "slot00").unwrap().expect("free");
        assert!(alive(&p, "slot00").unwrap().is_none(), "taken");
        drop(held);
        assert!(wait_receiver(&p, "slot00", Duration::from_secs(30)).unwrap());
        let again = alive(&p, "slot00").unwrap().expect("free again");
        forget_lock(&p, "slot00", again);
        assert!(!in_lock(&p, "slot00").exists());
    }

    #[test]
    fn waiting_for_a_live_receiver_gives_up() {
        let (_t, p) = paths();
        let _held = alive(&p, "slot00").unwrap().expect("free");
        assert!(!wait_receiver(&p, "slot00", Duration::from_millis(100)).unwrap());
    }
}
