//! Fulcon's bridge commands: `br-add N (IPADDR/MASK | NET_DEVICE)`, `br-del N` (`br-info`
//! is `br_info.rs`), and `net-nic-add DEV` / `net-nic-del DEV` (a host NIC joins a bridge so that outside
//! hosts reach the slots). Bridges are networkd files written by the generator from
//! slot-os.toml; networkd is asked to reload over D-Bus.

use std::process::ExitCode;
use std::time::Duration;

use slot_config::host::check_ifname;
use slot_config::names::{bridge_ifname, vxlan_ifname, MAX_BRIDGE_NUMBER};
use slot_config::{BridgeBackend, Cidr, Config, HOST_FILE};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

use super::Ctx;
use crate::config::edit::{read_doc, write_atomic};
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::net::netlink::{self, Netlink};
use crate::net::nic;
use crate::net::ovs::{self, Ovs};
use crate::sys::lock;

fn parse_bridge_number(s: &str) -> anyhow::Result<u32> {
    s.parse::<u32>()
        .ok()
        .filter(|n| *n <= MAX_BRIDGE_NUMBER)
        .ok_or_else(|| {
            bad_input(format!(
                "{s:?} is not a bridge number; use 0 to {MAX_BRIDGE_NUMBER}"
            ))
        })
}

fn host_file(ctx: &Ctx) -> std::path::PathBuf {
    ctx.paths.config_dir().join(HOST_FILE)
}

/// The `[[bridge]]` table numbered `n`, created if missing.
fn bridge_table(doc: &mut DocumentMut, n: u32) -> anyhow::Result<&mut Table> {
    doc.entry("bridge")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    let aot = doc["bridge"]
        .as_array_of_tables_mut()
        .ok_or_else(|| bad_input(format!("{HOST_FILE}: `bridge` is not an array of tables")))?;
    let pos = aot
        .iter()
        .position(|t| t.get("number").and_then(Item::as_integer) == Some(i64::from(n)));
    let i = match pos {
        Some(i) => i,
        None => {
            let mut t = Table::new();
            t["number"] = value(i64::from(n));
            aot.push(t);
            aot.len() - 1
        }
    };
    aot.get_mut(i)
        .ok_or_else(|| bad_input("bridge table vanished"))
}

/// Appends `v` to the string-or-array key `k` unless it is there already.
fn add_to_list(t: &mut Table, k: &str, v: &str) {
    let mut arr = Array::new();
    match t.get(k) {
        Some(Item::Value(toml_edit::Value::String(s))) => arr.push(s.value().clone()),
        Some(Item::Value(toml_edit::Value::Array(a))) => {
            for x in a.iter().filter_map(|x| x.as_str()) {
                arr.push(x);
            }
        }
        _ => {}
    }
    if !arr.iter().any(|x| x.as_str() == Some(v)) {
        arr.push(v);
    }
    t[k] = value(arr);
}

fn validated(ctx: &Ctx, text: &str) -> anyhow::Result<Config> {
    crate::config::edit::validate_change(ctx, &host_file(ctx), text)
}

fn commit(ctx: &Ctx, text: &str, wait_for: Option<&str>) -> anyhow::Result<()> {
    write_atomic(&host_file(ctx), text)?;
    let bus = Bus::system()?;
    bus.daemon_reload()?;
    bus.network_reload()?;
    // networkd creates the bridge asynchronously after the reload.
    if let Some(name) = wait_for {
        wait_for_link(name)?;
    }
    Ok(())
}

fn wait_for_link(name: &str) -> anyhow::Result<()> {
    wait_for_link_by(name, "networkd", "systemd-networkd")
}

fn wait_for_link_by(name: &str, who: &str, daemon: &str) -> anyhow::Result<()> {
    if !netlink::wait_for_link(name, &[], Duration::from_secs(10))? {
        anyhow::bail!("{who} did not create {name} within 10 s (is {daemon} running?)");
    }
    Ok(())
}

/// networkd adds a bridge's addresses some time after the link appears: br-add returns only
/// once the kernel has all of them, so the next command (net-add, a ping) can rely on them.
fn wait_for_addresses(name: &str, want: &[Cidr], who: &str) -> anyhow::Result<()> {
    if !netlink::wait_for_link(name, want, Duration::from_secs(10))? {
        let want: Vec<String> = want.iter().map(Cidr::to_string).collect();
        anyhow::bail!(
            "{who} did not put {} on {name} within 10 s (see journalctl -u systemd-networkd)",
            want.join(", ")
        );
    }
    Ok(())
}

pub fn add(
    ctx: &Ctx,
    number: &str,
    what: Option<&str>,
    vx: &VxlanArgs,
    backend: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let n = parse_bridge_number(number)?;
    let backend = backend
        .map(|b| b.parse::<BridgeBackend>().map_err(bad_input))
        .transpose()?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let existing = cfg.host.bridge(n).map(|b| b.backend);
    let backend = match (existing, backend) {
        (Some(have), Some(want)) if have != want => {
            return Err(bad_input(format!(
                "bridge {n} has backend \"{}\"; br-del it first to change its backend; nothing was changed",
                have.as_str()
            )))
        }
        (Some(have), _) => have,
        (None, want) => want.unwrap_or_default(),
    };
    // Refused before anything is written: an OVS bridge needs a running ovsdb-server.
    let mut ovs = match backend {
        BridgeBackend::Ovs => {
            Some(Ovs::connect().map_err(|e| anyhow::anyhow!("{e:#}; nothing was changed"))?)
        }
        BridgeBackend::Networkd => None,
    };
    let mut doc = read_doc(&host_file(ctx))?;
    let t = bridge_table(&mut doc, n)?;
    if existing.is_none() && backend == BridgeBackend::Ovs {
        t["backend"] = value(backend.as_str());
    }
    let mut device = None;
    if let Some(what) = what {
        let is_address = what.contains('/') || what.parse::<std::net::IpAddr>().is_ok();
        if is_address {
            let c: Cidr = what.parse().map_err(|e: String| bad_input(e))?;
            add_to_list(t, "address", &c.to_string());
        } else {
            check_ifname(what).map_err(bad_input)?;
            if !Netlink::here()?.link_exists(what)? {
                return Err(bad_input(format!(
                    "there is no host device {what:?}; nothing was changed"
                )));
            }
            add_to_list(t, "device", what);
            device = Some(what);
        }
    }
    if let Some(id) = vx.vxlan {
        for k in ["vxlan_remote", "vxlan_group", "vxlan_local", "vxlan_port"] {
            t.remove(k);
        }
        t["vxlan_id"] = value(i64::from(id));
        for (k, v) in [
            ("vxlan_remote", &vx.remote),
            ("vxlan_group", &vx.group),
            ("vxlan_local", &vx.local),
        ] {
            if let Some(v) = v {
                t[k] = value(v.as_str());
            }
        }
        if let Some(p) = vx.port {
            t["vxlan_port"] = value(i64::from(p));
        }
    }
    let text = doc.to_string();
    let after = validated(ctx, &text)?;
    let vxlan = vxlan_ifname(n);
    if vx.vxlan.is_some() {
        // networkd (252) does not apply a changed .netdev to an existing device:
        // remove it so the reload creates it anew.
        Netlink::here()?.delete_link(&vxlan)?;
    }
    match &mut ovs {
        None => commit(ctx, &text, Some(&bridge_ifname(n)))?,
        Some(o) => {
            commit(ctx, &text, None)?;
            let b = after
                .host
                .bridge(n)
                .ok_or_else(|| anyhow::anyhow!("bridge {n} vanished from the config"))?;
            o.ensure_bridge(b, ovs::datapath_type())?;
            // networkd addresses the internal interface once ovs-vswitchd has made it.
            wait_for_link_by(&bridge_ifname(n), "ovs-vswitchd", "ovs-vswitchd")?;
        }
    }
    if let Some(b) = after.host.bridge(n) {
        wait_for_addresses(&bridge_ifname(n), &b.addresses, "networkd")?;
    }
    if vx.vxlan.is_some() {
        wait_for_link(&vxlan)?;
    }
    if let Some(dev) = device {
        nic::attach_port(&mut Netlink::here()?, dev, &bridge_ifname(n))?;
    }
    let mut added: Vec<String> = what.iter().map(|w| w.to_string()).collect();
    if let Some(id) = vx.vxlan {
        added.push(format!("VXLAN {id} ({vxlan})"));
    }
    println!(
        "bridge {n} ({}): {} added",
        bridge_ifname(n),
        added.join(" and ")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn del(ctx: &Ctx, number: &str) -> anyhow::Result<ExitCode> {
    let n = parse_bridge_number(number)?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    if !cfg.host.bridges.iter().any(|b| b.number == n) {
        return Err(bad_input(format!("there is no bridge {n}")));
    }
    let users: Vec<String> = cfg
        .slots
        .iter()
        .filter(|s| s.nics.iter().any(|x| x.bridge == n))
        .map(|s| s.name.clone())
        .collect();
    if !users.is_empty() {
        return Err(bad_input(format!(
            "bridge {n} is used by {}; net-del their NICs first",
            users.join(", ")
        )));
    }
    let mut doc = read_doc(&host_file(ctx))?;
    if let Some(aot) = doc.get_mut("bridge").and_then(Item::as_array_of_tables_mut) {
        aot.retain(|t| t.get("number").and_then(Item::as_integer) != Some(i64::from(n)));
        if aot.is_empty() {
            doc.remove("bridge");
        }
    }
    let text = doc.to_string();
    validated(ctx, &text)?;
    let mut ovs = if cfg.host.is_ovs(n) {
        Some(Ovs::connect().map_err(|e| anyhow::anyhow!("{e:#}; nothing was changed"))?)
    } else {
        None
    };
    commit(ctx, &text, None)?;
    if let Some(o) = &mut ovs {
        o.delete_bridge(&bridge_ifname(n))?;
    }
    // networkd (252) leaves a device in place when its .netdev goes (ovs-vswitchd has
    // removed an OVS bridge's internal interface already).
    let mut nl = Netlink::here()?;
    nl.delete_link(&vxlan_ifname(n))?;
    nl.delete_link(&bridge_ifname(n))?;
    println!("bridge {n} removed");
    Ok(ExitCode::SUCCESS)
}

pub fn nic_add(ctx: &Ctx, device: &str, bridge: u32) -> anyhow::Result<ExitCode> {
    add(
        ctx,
        &bridge.to_string(),
        Some(device),
        &VxlanArgs::default(),
        None,
    )
}

pub fn nic_del(ctx: &Ctx, device: &str) -> anyhow::Result<ExitCode> {
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let Some(b) = cfg
        .host
        .bridges
        .iter()
        .find(|b| b.devices.iter().any(|d| d == device))
    else {
        return Err(bad_input(format!("{device} is not shared with any bridge")));
    };
    let n = b.number;
    let mut doc = read_doc(&host_file(ctx))?;
    let t = bridge_table(&mut doc, n)?;
    let rest: Vec<String> = b.devices.iter().filter(|d| *d != device).cloned().collect();
    if rest.is_empty() {
        t.remove("device");
    } else {
        let mut arr = Array::new();
        for d in rest {
            arr.push(d);
        }
        t["device"] = value(arr);
    }
    let text = doc.to_string();
    validated(ctx, &text)?;
    commit(ctx, &text, None)?;
    nic::release_port(&mut Netlink::here()?, device)?;
    println!("{device} no longer shared on bridge {n}");
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct VxlanArgs {
    /// VXLAN network identifier (1 to 16777215), the same on every host.
    #[arg(long, value_name = "VNI")]
    pub vxlan: Option<u32>,
    /// The other host's address (point to point).
    #[arg(long, value_name = "IP", requires = "vxlan", conflicts_with = "group")]
    pub remote: Option<String>,
    /// A multicast group joining any number of hosts.
    #[arg(long, value_name = "IP", requires = "vxlan")]
    pub group: Option<String>,
    /// This host's source address for the tunnel (default: chosen by routing).
    #[arg(long, value_name = "IP", requires = "vxlan")]
    pub local: Option<String>,
    /// UDP port (default 4789).
    #[arg(long, requires = "vxlan")]
    pub port: Option<u16>,
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    pub number: String,
    /// IPADDR/MASK: the host's address on the bridge; NET_DEVICE: a host NIC to enslave.
    #[arg(required_unless_present = "vxlan")]
    pub address_or_device: Option<String>,
    #[command(flatten)]
    pub vxlan: VxlanArgs,
    /// Who makes the bridge: "networkd" (a Linux bridge, the default) or "ovs" (Open
    /// vSwitch, through OVSDB). Only for a new bridge.
    #[arg(long, value_name = "networkd | ovs")]
    pub backend: Option<String>,
}

impl AddArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        add(
            ctx,
            &self.number,
            self.address_or_device.as_deref(),
            &self.vxlan,
            self.backend.as_deref(),
        )
    }
}

#[derive(clap::Args, Debug)]
pub struct DelArgs {
    pub number: String,
}

impl DelArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        del(ctx, &self.number)
    }
}

#[derive(clap::Args, Debug)]
pub struct NicAddArgs {
    pub device: String,
    #[arg(long, default_value_t = 1)]
    pub bridge: u32,
}

impl NicAddArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        nic_add(ctx, &self.device, self.bridge)
    }
}

#[derive(clap::Args, Debug)]
pub struct NicDelArgs {
    pub device: String,
}

impl NicDelArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        nic_del(ctx, &self.device)
    }
}
