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

/// Per slot: systemd's state of its unit, and machined's machine if it runs.
pub(crate) type StatesAndMachines = (Vec<anyhow::Result<UnitStatus>>, Vec<Option<MachineInfo>>);

impl Bus {
    /// Per slot (`units[i]` and `names[i]` are the unit and the machine name of one slot):
    /// systemd's state of its unit and machined's running machine, asked side by side.
    pub(crate) fn states_and_machines(
        &self,
        units: &[String],
        names: &[String],
    ) -> anyhow::Result<StatesAndMachines> {
        let (states, all) = zbus::block_on(async {
            futures_util::join!(
                self.unit_states_async(units),
                self.list_machines_async(Some(names))
            )
        });
        let mut by_name: std::collections::HashMap<String, MachineInfo> =
            anyhow::Context::context(all, "machine1 ListMachines")?
                .into_iter()
                .filter(|m| m.leader > 0)
                .map(|m| (m.name.clone(), m))
                .collect();
        let machines = names.iter().map(|n| by_name.remove(n)).collect();
        Ok((states, machines))
    }

    /// `units[i]` and `names[i]` are the unit and the machine name of one slot.
    pub fn slots_overview(
        &self,
        units: &[String],
        names: &[String],
    ) -> anyhow::Result<SlotsOverview> {
        let (states, machines) = self.states_and_machines(units, names)?;
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
