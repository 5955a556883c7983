//! `br-info [--json]`: the configured bridges with what the host has of them (the link,
//! OVSDB's ports) and the slot NICs on each.

use std::process::ExitCode;

use slot_config::host::VxlanPeer;
use slot_config::BridgeBackend;

use super::Ctx;
use crate::net::netlink::Netlink;
use crate::net::ovs::Ovs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        info(ctx, self.json)
    }
}

/// One bridge as `br-info` shows it. The JSON keys are the field names, in the
/// alphabetical order `br-info --json` has always printed.
#[derive(serde::Serialize)]
struct BridgeRow {
    addresses: Vec<String>,
    backend: &'static str,
    devices: Vec<String>,
    exists: bool,
    name: String,
    number: u32,
    /// What OVSDB holds for an OVS bridge (null: not OVS, or ovsdb-server unreachable).
    ovs_ports: Option<Vec<String>>,
    slots: Vec<String>,
    vxlan: Option<VxlanRow>,
}

#[derive(serde::Serialize)]
struct VxlanRow {
    group: Option<String>,
    id: u32,
    local: Option<String>,
    port: u16,
    remote: Option<String>,
}

impl BridgeRow {
    /// The table line: name, backend, up/absent, addresses, devices, VXLAN, slot NICs.
    fn line(&self) -> String {
        let vxlan = self.vxlan.as_ref().map_or_else(String::new, |v| {
            let peer = match (&v.remote, &v.group) {
                (Some(r), _) => format!("remote {r}"),
                (_, Some(g)) => format!("group {g}"),
                _ => String::new(),
            };
            format!("vxlan {} {peer}", v.id)
        });
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.name,
            self.backend,
            if self.exists { "up" } else { "absent" },
            self.addresses.join(","),
            self.devices.join(","),
            vxlan,
            self.slots.join(" "),
        )
    }
}

fn info(ctx: &Ctx, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let live = Netlink::here()?.interfaces()?;
    let mut ovs = if cfg
        .host
        .bridges
        .iter()
        .any(|b| b.backend == BridgeBackend::Ovs)
    {
        Ovs::connect().ok()
    } else {
        None
    };
    let mut rows = Vec::new();
    for b in &cfg.host.bridges {
        let name = b.ifname();
        let ovs_ports = match (&mut ovs, b.backend) {
            (Some(o), BridgeBackend::Ovs) => Some(o.port_names(&name)?),
            _ => None,
        };
        let slots = cfg
            .slots
            .iter()
            .flat_map(|s| {
                s.nics
                    .iter()
                    .filter(|x| x.bridge == b.number)
                    .map(move |x| format!("{}:eth{}", s.name, x.number))
            })
            .collect();
        rows.push(BridgeRow {
            number: b.number,
            backend: b.backend.as_str(),
            ovs_ports,
            addresses: b.addresses.iter().map(|a| a.to_string()).collect(),
            devices: b.devices.clone(),
            vxlan: b.vxlan.as_ref().map(|v| VxlanRow {
                id: v.id,
                remote: match v.peer {
                    VxlanPeer::Remote(a) => Some(a.to_string()),
                    _ => None,
                },
                group: match v.peer {
                    VxlanPeer::Group(a) => Some(a.to_string()),
                    _ => None,
                },
                local: v.local.map(|a| a.to_string()),
                port: v.port,
            }),
            exists: live.iter().any(|(n, _)| *n == name),
            name,
            slots,
        });
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for r in &rows {
            println!("{}", r.line());
        }
    }
    Ok(ExitCode::SUCCESS)
}
