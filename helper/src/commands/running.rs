//! Finding the running instance (machined's leader PID) of configured slots.

use slot_config::Slot;

use crate::dbus::Bus;

/// Leader PID per slot, `None` for slots that are not running.
pub fn leaders(bus: &Bus, slots: &[&Slot]) -> anyhow::Result<Vec<Option<u32>>> {
    let machines = bus.list_machines()?;
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
            slot.name, slot.number
        ))
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
