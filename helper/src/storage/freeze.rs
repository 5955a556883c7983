//! Freezing a running slot while its root is captured (backup, export), so the copy is
//! crash-consistent, and making sure it is always thawed:
//! - on return or error, by [`Frozen`]'s drop;
//! - on SIGINT, SIGTERM or SIGHUP (Ctrl-C, `systemctl stop`, the unit's timeout), by a
//!   signal thread that thaws, then exits non-zero;
//! - after SIGKILL, from a marker in /run/slot-os/frozen: markers are only written under
//!   the helper lock, so one found by the next lock holder belongs to a dead helper, and its
//!   slot is thawed. The backup unit's ExecStopPost (`thaw-leftovers`) is such a holder,
//!   and so is every later capture.
//!
//! A slot frozen by `suspend` has no marker and stays frozen.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Mutex, Once};

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use slot_config::Paths;

use crate::config::Ctx;
use crate::dbus::Bus;

fn marker_dir(paths: &Paths) -> PathBuf {
    paths.run_dir().join("frozen")
}

/// Thaws every slot a killed helper left frozen. Call with the helper lock held.
pub fn thaw_orphans(bus: &Bus, paths: &Paths) {
    for e in fs::read_dir(marker_dir(paths))
        .into_iter()
        .flatten()
        .flatten()
    {
        let unit = e.file_name().to_string_lossy().into_owned();
        match bus.thaw_units(std::slice::from_ref(&unit)).pop() {
            Some(Err(err)) => eprintln!(
                "slot-os: warning: thawing {unit} left frozen by an interrupted run: {err:#}"
            ),
            _ => eprintln!("slot-os: thawed {unit}, left frozen by an interrupted run"),
        }
        let _ = fs::remove_file(e.path());
    }
}

/// `thaw-leftovers`: [`thaw_orphans`] under the helper lock (waiting for it: the holder is
/// a live helper whose own freeze, if any, it thaws itself).
pub fn thaw_leftovers(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let _lock = crate::sys::lock::exclusive(&ctx.paths)?;
    if fs::read_dir(marker_dir(&ctx.paths)).is_ok_and(|mut d| d.next().is_some()) {
        thaw_orphans(&Bus::system()?, &ctx.paths);
    }
    Ok(ExitCode::SUCCESS)
}

/// Freezes the slot for capturing it (`what`: "backup", "export") if it is running, after
/// thawing what a killed helper left frozen. Call with the helper lock held.
pub fn for_capture<'b>(
    bus: &'b Bus,
    paths: &Paths,
    slot: &slot_config::Slot,
    what: &str,
) -> anyhow::Result<Option<Frozen<'b>>> {
    thaw_orphans(bus, paths);
    if bus.unit_status(&slot.unit())?.active_state != "active" {
        return Ok(None);
    }
    Frozen::new(bus, paths, &slot.unit()).map(Some).map_err(|e| {
        e.context(format!(
            "{} is running and cannot be frozen for a consistent {what}; stop it and run {what} again",
            slot.name
        ))
    })
}

/// The unit frozen now and its marker, for the signal thread.
static FROZEN_NOW: Mutex<Option<(String, PathBuf)>> = Mutex::new(None);

type Handler = Box<dyn Fn(&'static str) + Send>;

/// A command that undoes its own work when interrupted, see [`take_over_signals`].
static TAKEN_OVER: Mutex<Option<Handler>> = Mutex::new(None);

/// For a command that undoes its own work when interrupted (a move): the first SIGINT,
/// SIGTERM or SIGHUP calls `f` (with the signal's name) instead of ending the helper; the
/// command then thaws what it froze (through [`Frozen`]'s drop) on its way out. A second
/// signal ends the helper as usual, thawing first.
pub fn take_over_signals(f: impl Fn(&'static str) + Send + 'static) -> anyhow::Result<()> {
    *TAKEN_OVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    guard_signals()
}

fn set_frozen_now(v: Option<(String, PathBuf)>) {
    *FROZEN_NOW.lock().unwrap_or_else(|e| e.into_inner()) = v;
}

/// From the first freeze on, SIGINT, SIGTERM and SIGHUP end the helper through a thread
/// that first thaws what is frozen. Outside a freeze it only exits (as the default action
/// would, with 128 + the signal): tar and zstd die with us (PR_SET_PDEATHSIG), and what a
/// capture left half-written is swept by the next one.
fn guard_signals() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut err = None;
    ONCE.call_once(|| {
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(s) => s,
            Err(e) => {
                err = Some(e);
                return;
            }
        };
        std::thread::spawn(move || {
            for sig in signals.forever() {
                let name = match sig {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                if let Some(f) = TAKEN_OVER.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    f(name);
                    continue;
                }
                let held = FROZEN_NOW.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some((unit, marker)) = held {
                    let thawed = Bus::system().and_then(|b| {
                        b.thaw_units(std::slice::from_ref(&unit))
                            .pop()
                            .unwrap_or(Ok(()))
                    });
                    match thawed {
                        Ok(()) => {
                            let _ = fs::remove_file(&marker);
                            eprintln!("slot-os: interrupted ({name}) while {unit} was frozen for a capture; thawed it, nothing was kept");
                        }
                        Err(e) => eprintln!(
                            "slot-os: interrupted ({name}) while {unit} was frozen; thawing failed ({e:#}); `slot-os thaw-leftovers` or the next backup thaws it"
                        ),
                    }
                } else {
                    eprintln!("slot-os: interrupted ({name})");
                }
                std::process::exit(128 + sig);
            }
        });
    });
    match err {
        Some(e) => {
            Err(e).context("installing the signal handlers that thaw an interrupted capture")
        }
        None => Ok(()),
    }
}

/// A unit frozen for a capture; thawed when dropped.
pub struct Frozen<'b> {
    bus: &'b Bus,
    unit: String,
    marker: PathBuf,
}

impl<'b> Frozen<'b> {
    pub fn new(bus: &'b Bus, paths: &Paths, unit: &str) -> anyhow::Result<Self> {
        guard_signals()?;
        let dir = marker_dir(paths);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let marker = dir.join(unit);
        // The marker goes first: a helper killed right after freezing must leave one.
        fs::write(&marker, std::process::id().to_string())
            .with_context(|| format!("writing {}", marker.display()))?;
        set_frozen_now(Some((unit.to_string(), marker.clone())));
        if let Some(Err(e)) = bus.freeze_units(&[unit.to_string()]).pop() {
            set_frozen_now(None);
            let _ = fs::remove_file(&marker);
            return Err(e);
        }
        Ok(Frozen {
            bus,
            unit: unit.to_string(),
            marker,
        })
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        match self.bus.thaw_units(std::slice::from_ref(&self.unit)).pop() {
            Some(Err(e)) => eprintln!("slot-os: warning: thawing {}: {e:#}", self.unit),
            _ => {
                set_frozen_now(None);
                let _ = fs::remove_file(&self.marker);
            }
        }
    }
}

/// The capture's freezer for one slot ([`crate::storage::capture::Freezer`]): freezes it
/// through systemd if it runs, and lists the files its processes map shared and writable.
pub struct SlotFreezer<'b> {
    pub bus: &'b Bus,
    pub paths: &'b Paths,
    pub slot: &'b slot_config::Slot,
    pub what: &'static str,
    /// Looked up before freezing: nothing but the walk belongs in the frozen window.
    pub leader: Option<u32>,
}

impl<'b> crate::storage::capture::Freezer for SlotFreezer<'b> {
    type Guard = Frozen<'b>;
    fn freeze(&mut self) -> anyhow::Result<Option<Frozen<'b>>> {
        self.leader = crate::dbus::running::leaders(self.bus, &[self.slot])?
            .pop()
            .flatten();
        for_capture(self.bus, self.paths, self.slot, self.what)
    }
    fn mapped(&mut self) -> std::collections::HashSet<(u64, u64)> {
        use crate::storage::capture::mapped;
        match self.leader {
            Some(leader) => mapped::shared_writable(&mapped::slot_pids(leader)),
            None => Default::default(),
        }
    }
}
