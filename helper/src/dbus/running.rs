//! Finding the running instance (machined's leader PID) of configured slots.

use slot_config::Slot;

use crate::dbus::Bus;
use crate::sys::nsexec::Leader;

/// Leader PID per slot, `None` for slots that are not running. Only the machines asked
/// about are looked up (one call each, besides the one ListMachines).
pub fn leaders(bus: &Bus, slots: &[&Slot]) -> anyhow::Result<Vec<Option<u32>>> {
    let names: Vec<String> = slots.iter().map(|s| s.name.clone()).collect();
    let machines = bus.machines_named(&names)?;
    Ok(slots
        .iter()
        .map(|s| {
            machines
                .iter()
                .find(|m| m.name == s.name)
                .map(|m| m.leader)
                .filter(|l| *l > 0)
        })
        .collect())
}

pub fn leader(bus: &Bus, slot: &Slot) -> anyhow::Result<u32> {
    leaders(bus, &[slot])?.pop().flatten().ok_or_else(|| {
        crate::error::bad_input(format!(
            "slot {} is not running; start it first (slot-os start {})",
            slot.name,
            slot.arg()
        ))
    })
}

/// The slot's leader pinned by a pidfd (see nsexec): machined must name the same PID
/// after the pidfd is open. Bad input if the slot is not running.
pub fn pinned_leader(bus: &Bus, slot: &Slot) -> anyhow::Result<Leader> {
    let pid = leader(bus, slot)?;
    Leader::pin(pid, || {
        Ok(leaders(bus, &[slot])?.pop().flatten() == Some(pid))
    })
}

/// Fulcon's state words from systemd's ActiveState and FreezerState.
pub fn state_name(active_state: &str, freezer_state: &str) -> &'static str {
    match (active_state, freezer_state) {
        ("active" | "reloading", "frozen" | "freezing") => "SUSPENDED",
        ("active" | "reloading", _) => "RUNNING",
        ("activating", _) => "STARTING",
        ("deactivating", _) => "STOPPING",
        ("failed", _) => "FAILED",
        _ => "STOPPED",
    }
}

/// Bad input unless the slot's unit is stopped (inactive or failed): for commands that
/// replace or move its root. `before` completes "stop it …", e.g. "before restoring".
pub fn require_stopped(bus: &Bus, slot: &Slot, before: &str) -> anyhow::Result<()> {
    let st = bus.unit_status(&slot.unit())?;
    if st.active_state != "inactive" && st.active_state != "failed" {
        return Err(crate::error::bad_input(format!(
            "{} is {}; stop it {before} (slot-os stop {})",
            slot.name,
            st.active_state,
            slot.arg()
        )));
    }
    Ok(())
}
