//! Pure renderers: config in, file text out. No I/O here, so every output is golden-tested.

mod network;
mod nspawn;
mod unit;

pub use network::{
    render_bridge_device_network, render_bridge_netdev, render_bridge_network,
    render_nat_zone_network, render_nic_network, render_vxlan_netdev, render_vxlan_network,
};
pub use nspawn::render_nspawn;
pub use unit::{
    render_dropin, DROPIN_NAME, MACHINES_TARGET, NETWORKD_UNIT, NETWORKD_UNIT_PATH,
    NSPAWN_TEMPLATE_UNIT, OVS_UNIT, OVS_UNIT_PATH,
};

use std::path::PathBuf;

use crate::{Config, GENERATED_HEADER};

/// Where a generated file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutDir {
    /// `/run/systemd/nspawn`
    Nspawn,
    /// `/run/systemd/network`
    Network,
    /// The generator's normal output directory (`/run/systemd/generator`).
    Units,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// A symlink pointing at this target (unit `.wants/` links).
    Link(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub dir: OutDir,
    /// Path relative to `dir`.
    pub path: PathBuf,
    pub content: Content,
}

fn header(source: &str) -> String {
    format!(
        "{GENERATED_HEADER} from {source}\n# Edit that file instead: this one is rewritten at every boot and daemon-reload.\n"
    )
}

pub(crate) fn slot_source(name: &str) -> String {
    format!("/etc/slot-os/{name}.toml")
}

const HOST_SOURCE: &str = "/etc/slot-os/slot-os.toml";

/// Everything the generator writes for this config, sorted by directory and path:
/// [`render_host`] and [`render_slot`] of every slot.
pub fn render_all(cfg: &Config) -> Vec<Output> {
    let mut out = render_host(cfg);
    for slot in &cfg.slots {
        out.extend(render_slot(cfg, slot));
    }
    out.sort_by(|a, b| (a.dir, &a.path).cmp(&(b.dir, &b.path)));
    out
}

fn text(dir: OutDir, path: String, s: String) -> Output {
    Output {
        dir,
        path: path.into(),
        content: Content::Text(s),
    }
}

/// What one slot of this config gets: its `.nspawn`, its unit drop-in, its autostart link
/// and its NICs' `.network` files. Each slot's files are its own (the generator writes
/// slots on several threads).
pub fn render_slot(cfg: &Config, slot: &crate::Slot) -> Vec<Output> {
    let mut out = vec![
        text(
            OutDir::Nspawn,
            format!("{}.nspawn", slot.name),
            render_nspawn(slot, &cfg.host.network),
        ),
        text(
            OutDir::Units,
            format!("{}.d/{DROPIN_NAME}", slot.unit()),
            render_dropin(slot, &cfg.host),
        ),
    ];
    if slot.autostart {
        out.push(Output {
            dir: OutDir::Units,
            path: format!("machines.target.wants/{}", slot.unit()).into(),
            content: Content::Link(NSPAWN_TEMPLATE_UNIT.into()),
        });
    }
    // An OVS bridge's ports are OVSDB rows the helper adds, not networkd's `Bridge=`.
    for nic in slot.nics.iter().filter(|n| !cfg.host.is_ovs(n.bridge)) {
        let ifname = slot.nic_host_ifname(nic.number);
        out.push(text(
            OutDir::Network,
            format!("60-slot-os-{ifname}.network"),
            render_nic_network(slot, nic),
        ));
    }
    out
}

/// What the config as a whole gets: the bridges' networkd files, the NAT zone's, and the
/// `.wants` links that pull machines.target, networkd and OVS in at boot.
pub fn render_host(cfg: &Config) -> Vec<Output> {
    let mut out = Vec::new();
    // machines.target is what pulls autostart slots in at boot; make sure it is itself
    // wanted even on hosts where nobody ran `systemctl enable machines.target`.
    if cfg.slots.iter().any(|s| s.autostart) {
        out.push(Output {
            dir: OutDir::Units,
            path: "multi-user.target.wants/machines.target".into(),
            content: Content::Link(MACHINES_TARGET.into()),
        });
    }
    if let (crate::DefaultNetwork::Nat { address }, false) =
        (&cfg.host.network, cfg.slots.is_empty())
    {
        out.push(text(
            OutDir::Network,
            "50-slot-os-zone.network".into(),
            render_nat_zone_network(address),
        ));
    }
    if cfg
        .host
        .bridges
        .iter()
        .any(|b| b.backend == crate::BridgeBackend::Ovs)
    {
        // Makes OVSDB match the config at boot, before the slots start (units/).
        out.push(Output {
            dir: OutDir::Units,
            path: format!("multi-user.target.wants/{OVS_UNIT}").into(),
            content: Content::Link(OVS_UNIT_PATH.into()),
        });
    }
    if !cfg.host.bridges.is_empty() {
        // Bridges exist from boot on, with or without slots: networkd makes and addresses
        // them. A generated link, not `systemctl enable`, so that removing the last bridge
        // (or the package) leaves the host's networkd as the admin had it.
        out.push(Output {
            dir: OutDir::Units,
            path: format!("multi-user.target.wants/{NETWORKD_UNIT}").into(),
            content: Content::Link(NETWORKD_UNIT_PATH.into()),
        });
    }
    for b in &cfg.host.bridges {
        let n = b.ifname();
        // ovs-vswitchd makes an OVS bridge's internal interface; networkd only addresses it.
        if b.backend == crate::BridgeBackend::Networkd {
            out.push(text(
                OutDir::Network,
                format!("50-slot-os-{n}.netdev"),
                render_bridge_netdev(b),
            ));
        }
        out.push(text(
            OutDir::Network,
            format!("50-slot-os-{n}.network"),
            render_bridge_network(b),
        ));
        if let Some(v) = &b.vxlan {
            let vx = b.vxlan_ifname();
            out.push(text(
                OutDir::Network,
                format!("50-slot-os-{vx}.netdev"),
                render_vxlan_netdev(b, v),
            ));
            out.push(text(
                OutDir::Network,
                format!("50-slot-os-{vx}.network"),
                render_vxlan_network(b),
            ));
        }
        for dev in &b.devices {
            out.push(text(
                OutDir::Network,
                format!("50-slot-os-{n}-{dev}.network"),
                render_bridge_device_network(b, dev),
            ));
        }
    }
    out
}
