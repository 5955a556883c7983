//! What `top` and `metrics` show about each slot, gathered in one go as `list` gathers its
//! rows (see `overview`): systemd's state of the units and machined's leaders side by side,
//! then counters read without a process or a D-Bus call per slot: CPU, memory and I/O from
//! each unit's cgroup (`sys::cgroup`), traffic from the host ends of each slot's links (one
//! rtnetlink dump, `net::netlink::host_links_of`).

use slot_config::Slot;

use super::{running, Bus};
use crate::net::netlink::{self, LinkCounters};
use crate::sys::cgroup;

/// One slot's state and counters.
#[derive(Debug, Clone)]
pub struct SlotUsage {
    pub name: String,
    /// Fulcon's state word (`RUNNING`, `SUSPENDED`, `STOPPED`, …).
    pub state: &'static str,
    pub leader: Option<u32>,
    pub counters: cgroup::Usage,
    /// The host ends of the slot's links (its `host0` veth or zone port, extra NICs), as
    /// the host counts them: what the host end transmits, the slot receives.
    pub links: Vec<LinkCounters>,
}

impl SlotUsage {
    /// Bytes the slot received (the host ends' transmitted bytes), if it has links.
    pub fn rx_bytes(&self) -> Option<u64> {
        (!self.links.is_empty()).then(|| self.links.iter().map(|l| l.tx_bytes).sum())
    }

    /// Bytes the slot sent.
    pub fn tx_bytes(&self) -> Option<u64> {
        (!self.links.is_empty()).then(|| self.links.iter().map(|l| l.rx_bytes).sum())
    }
}

impl Bus {
    /// [`Bus::slots_usage`] of these slots, in this order.
    pub fn usage_of(&self, slots: &[&Slot]) -> anyhow::Result<Vec<SlotUsage>> {
        let units: Vec<String> = slots.iter().map(|s| s.unit()).collect();
        let names: Vec<String> = slots.iter().map(|s| s.name.clone()).collect();
        self.slots_usage(&units, &names)
    }

    /// `units[i]` and `names[i]` are the unit and the machine name of one slot.
    pub fn slots_usage(
        &self,
        units: &[String],
        names: &[String],
    ) -> anyhow::Result<Vec<SlotUsage>> {
        let (states, machines) = self.states_and_machines(units, names)?;
        let leaders: Vec<Option<u32>> = machines
            .iter()
            .map(|m| m.as_ref().map(|m| m.leader))
            .collect();
        let up: Vec<u32> = leaders.iter().flatten().copied().collect();
        // Traffic is a nice-to-have beside the state: a netlink failure shows as no links.
        let mut links = netlink::host_links_of(&up)
            .unwrap_or_else(|_| vec![Vec::new(); up.len()])
            .into_iter();
        Ok(names
            .iter()
            .zip(units)
            .zip(states)
            .zip(leaders)
            .map(|(((name, unit), st), leader)| {
                let state = match &st {
                    Ok(st) => running::state_name(&st.active_state, &st.freezer_state),
                    Err(_) => "UNKNOWN",
                };
                SlotUsage {
                    name: name.clone(),
                    state,
                    leader,
                    counters: leader
                        .map(|l| cgroup::usage_of(l, unit))
                        .unwrap_or_default(),
                    links: leader.and_then(|_| links.next()).unwrap_or_default(),
                }
            })
            .collect())
    }
}
