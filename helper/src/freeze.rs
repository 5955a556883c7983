//! Freezing a running slot while its root is captured (backup, export), so the copy is
//! crash-consistent, with a marker in /run/slot-os/frozen that outlives a killed helper:
//! markers are only written under the helper lock, so one found by the next lock holder
//! belongs to a dead helper, and its slot is thawed. A slot frozen by `suspend` has no
//! marker and stays frozen.

use std::fs;
use std::path::PathBuf;

use anyhow::Context;
use slot_config::Paths;

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

/// A unit frozen for a capture; thawed when dropped.
pub struct Frozen<'b> {
    bus: &'b Bus,
    unit: String,
    marker: PathBuf,
}

impl<'b> Frozen<'b> {
    pub fn new(bus: &'b Bus, paths: &Paths, unit: &str) -> anyhow::Result<Self> {
        let dir = marker_dir(paths);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let marker = dir.join(unit);
        // The marker goes first: a helper killed right after freezing must leave one.
        fs::write(&marker, std::process::id().to_string())
            .with_context(|| format!("writing {}", marker.display()))?;
        if let Some(Err(e)) = bus.freeze_units(&[unit.to_string()]).pop() {
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
                let _ = fs::remove_file(&self.marker);
            }
        }
    }
}
