//! Everything `list` shows, gathered in one go: systemd's view of the slots' units and
//! machined's list of running machines are asked side by side (two services, each working
//! while the other does), every call in flight at once on the one connection; then the
//! running slots' addresses, read from their network namespaces (see `net::netlink`), or from
//! machined's GetMachineAddresses where that cannot be done.

use std::net::IpAddr;

use super::{Bus, MachineInfo, UnitStatus};
use crate::net::netlink;

/// What systemd and machined say about a set of slots.
pub struct SlotsOverview {
    /// Per unit, as [`Bus::unit_states`].
    pub states: Vec<anyhow::Result<UnitStatus>>,
    /// Per machine name asked for: machined's machine, if it is registered.
    pub machines: Vec<Option<MachineInfo>>,
    /// Per machine name asked for: its addresses (empty when not running).
    pub addresses: Vec<Vec<IpAddr>>,
}

impl Bus {
    /// `units[i]` and `names[i]` are the unit and the machine name of one slot.
    pub fn slots_overview(
        &self,
        units: &[String],
        names: &[String],
    ) -> anyhow::Result<SlotsOverview> {
        let (states, all) = zbus::block_on(async {
            futures_util::join!(
                self.unit_states_async(units),
                self.list_machines_async(Some(names))
            )
        });
        let all = anyhow::Context::context(all, "machine1 ListMachines")?;
        let machines: Vec<Option<MachineInfo>> = names
            .iter()
            .map(|n| all.iter().find(|m| &m.name == n && m.leader > 0).cloned())
            .collect();
        // Addresses from each running slot's netns (fast); machined for any it cannot read.
        let leaders: Vec<u32> = machines.iter().flatten().map(|m| m.leader).collect();
        let mut read = netlink::machine_addresses_of(&leaders);
        let ask: Vec<String> = machines
            .iter()
            .flatten()
            .zip(&read)
            .filter(|(_, r)| r.is_none())
            .map(|(m, _)| m.name.clone())
            .collect();
        let mut asked = zbus::block_on(self.machines_addresses_async(&ask)).into_iter();
        for r in read.iter_mut().filter(|r| r.is_none()) {
            *r = Some(asked.next().unwrap_or_default());
        }
        let mut read = read.into_iter();
        let addresses = machines
            .iter()
            .map(|m| match m {
                Some(_) => read.next().flatten().unwrap_or_default(),
                None => Vec::new(),
            })
            .collect();
        Ok(SlotsOverview {
            states,
            machines,
            addresses,
        })
    }
}
