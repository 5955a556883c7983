//! Fulcon's network commands: `net-add SLOT IPADDR/MASK NIC_NUMBER`, `net-del SLOT
//! NIC_NUMBER` (`net-info` is `net_info.rs`), and `net-apply NAME`, which the slot's unit runs after
//! every start (ExecStartPost) to bring its extra NICs up with their addresses.
//!
//! Over 400 lines: net-add, net-del, net-apply and zone-ready edit the same `[[nic]]` tables
//! and share how a slot's NICs are applied live.

use std::process::ExitCode;

use anyhow::Context;
use slot_config::names::{bridge_ifname, number_from_name, MAX_NIC_NUMBER, MAX_SLOT_NUMBER};
use slot_config::{BridgeBackend, Cidr, Config, Slot};
use toml_edit::{value, Array, ArrayOfTables, Item, Table};

use super::Ctx;
use crate::config::edit::{read_doc, write_atomic};
use crate::config::targets;
use crate::dbus::running;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::net::netlink::Netlink;
use crate::net::nic;
use crate::net::ovs::{self, Ovs};
use crate::sys::lock;

fn parse_nic_number(s: &str) -> anyhow::Result<u32> {
    s.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_NIC_NUMBER).contains(n))
        .ok_or_else(|| {
            bad_input(format!(
                "{s:?} is not a NIC number; use 1 to {MAX_NIC_NUMBER}"
            ))
        })
}

/// The bridge a new address belongs on: the one whose host address shares its subnet,
/// else the bridge numbered like the NIC (Fulcon's habit: NIC 1 on bridge 1).
fn pick_bridge(cfg: &Config, addr: &Cidr, nic: u32) -> Option<u32> {
    cfg.host
        .bridges
        .iter()
        .find(|b| b.addresses.iter().any(|h| same_subnet(h, addr)))
        .or_else(|| cfg.host.bridges.iter().find(|b| b.number == nic))
        .map(|b| b.number)
}

/// Who already holds `addr` on bridge `bridge`: the host or a slot.
fn address_owner(cfg: &Config, bridge: u32, addr: &Cidr) -> Option<String> {
    if cfg
        .host
        .bridges
        .iter()
        .any(|b| b.number == bridge && b.addresses.iter().any(|a| a.addr == addr.addr))
    {
        return Some(format!("the host ({})", bridge_ifname(bridge)));
    }
    cfg.slots
        .iter()
        .find(|s| {
            s.nics
                .iter()
                .any(|n| n.bridge == bridge && n.addresses.iter().any(|a| a.addr == addr.addr))
        })
        .map(|s| s.name.clone())
}

fn same_subnet(a: &Cidr, b: &Cidr) -> bool {
    use std::net::IpAddr::{V4, V6};
    let p = a.prefix.min(b.prefix);
    match (a.addr, b.addr) {
        (V4(x), V4(y)) => {
            p == 0 || (u32::from(x) >> (32 - u32::from(p))) == (u32::from(y) >> (32 - u32::from(p)))
        }
        (V6(x), V6(y)) => {
            p == 0
                || (u128::from(x) >> (128 - u32::from(p)))
                    == (u128::from(y) >> (128 - u32::from(p)))
        }
        _ => false,
    }
}

fn validated(ctx: &Ctx, slot: &Slot, text: &str) -> anyhow::Result<Config> {
    crate::config::edit::validate_change(ctx, &slot.file, text)
}

fn apply_live(bus: &Bus, cfg: &Config, slot: &Slot) -> anyhow::Result<bool> {
    let Some(leader) = running::leaders(bus, &[slot])?.pop().flatten() else {
        return Ok(false);
    };
    let mut ovs: Option<Ovs> = None;
    let mut host = Netlink::here()?;
    for n in &slot.nics {
        let host_if = slot.nic_host_ifname(n.number);
        let what = || format!("{} NIC {}", slot.name, n.number);
        match cfg.host.bridge(n.bridge) {
            Some(b) if b.backend == BridgeBackend::Ovs => {
                let o = match &mut ovs {
                    Some(o) => o,
                    None => ovs.insert(Ovs::connect().with_context(what)?),
                };
                // Idempotent; it also brings back a bridge someone removed from OVSDB.
                let dp = o
                    .ensure_bridge(b, ovs::datapath_type())
                    .with_context(what)?;
                nic::apply_nic(
                    &mut host,
                    leader,
                    &host_if,
                    &n.slot_ifname(),
                    nic::Attach::Ovs {
                        tx_csum_off: dp == "netdev",
                    },
                    &n.addresses,
                )
                .with_context(what)?;
                o.ensure_port(&b.ifname(), &host_if, &slot.name)
                    .with_context(what)?;
            }
            _ => nic::apply_nic(
                &mut host,
                leader,
                &host_if,
                &n.slot_ifname(),
                nic::Attach::Bridge(bridge_ifname(n.bridge)),
                &n.addresses,
            )
            .with_context(what)?,
        }
    }
    if let Some(o) = &mut ovs {
        ovs::prune_ports(o, cfg)?;
    }
    Ok(true)
}

pub fn add(
    ctx: &Ctx,
    slot: &str,
    address: &str,
    nic: &str,
    bridge: Option<&str>,
    replace: bool,
) -> anyhow::Result<ExitCode> {
    let cidr: Cidr = address.parse().map_err(|e: String| bad_input(e))?;
    let number = parse_nic_number(nic)?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?.clone();
    let old = s.nics.iter().find(|n| n.number == number);
    if let (Some(n), false) = (old, replace) {
        let a: Vec<String> = n.addresses.iter().map(|a| a.to_string()).collect();
        return Err(bad_input(format!(
            "NIC {number} of {} is in use ({}); net-del it first, or give --replace",
            s.name,
            a.join(", ")
        )));
    }
    let bridge = match bridge {
        Some(b) => b.parse::<u32>().map_err(|_| bad_input(format!("{b:?} is not a bridge number")))?,
        None => pick_bridge(&cfg, &cidr, number).ok_or_else(|| {
            bad_input(format!("no bridge for {cidr}: declare one first (slot-os br-add {number} ADDRESS/MASK), or name it with --bridge"))
        })?,
    };
    // The NIC being replaced may keep its own address.
    let own = |n: &slot_config::Nic| {
        n.bridge == bridge && n.addresses.iter().any(|a| a.addr == cidr.addr)
    };
    if let Some(owner) = address_owner(&cfg, bridge, &cidr).filter(|_| !old.is_some_and(own)) {
        return Err(bad_input(format!(
            "{} is already used on bridge {bridge} by {owner}; nothing was changed",
            cidr.addr
        )));
    }
    if let Some(n) = old {
        if cfg.host.is_ovs(n.bridge) != cfg.host.is_ovs(bridge) {
            return Err(bad_input(format!(
                "NIC {number} of {} would move between an Open vSwitch and a Linux bridge; net-del it first; nothing was changed",
                s.name
            )));
        }
    }
    let mut doc = read_doc(&s.file)?;
    // --replace: the NIC's table gives way to the new one, in the same validated edit, so a
    // refused replacement leaves the old NIC as it was.
    if let (Some(_), Some(aot)) = (
        old,
        doc.get_mut("nic").and_then(Item::as_array_of_tables_mut),
    ) {
        aot.retain(|t| t.get("number").and_then(Item::as_integer) != Some(i64::from(number)));
    }
    // A slot without a number gets one now: its NICs' host names carry it.
    let assigned = match s.number {
        Some(_) => None,
        None => {
            let n = free_slot_number(&cfg).ok_or_else(|| {
                bad_input(format!(
                    "no free slot number (0 to {MAX_SLOT_NUMBER}) for {}",
                    s.name
                ))
            })?;
            doc["number"] = value(i64::from(n));
            Some(n)
        }
    };
    let mut t = Table::new();
    t["number"] = value(i64::from(number));
    t["bridge"] = value(i64::from(bridge));
    let mut arr = Array::new();
    arr.push(cidr.to_string());
    t["address"] = value(arr);
    doc.entry("nic")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    doc["nic"]
        .as_array_of_tables_mut()
        .ok_or_else(|| {
            bad_input(format!(
                "{}: `nic` is not an array of tables",
                s.file.display()
            ))
        })?
        .push(t);
    let text = doc.to_string();
    let after = validated(ctx, &s, &text)?;
    write_atomic(&s.file, &text)?;
    let bus = Bus::system()?;
    let file = s.file.clone();
    let new = after.slot(&s.name).cloned().unwrap_or(s);
    // The NIC is made in the running slot directly, so it need not wait for systemd and
    // networkd to re-read the files (those matter for the next start and boot).
    let (reloaded, live) = std::thread::scope(|sc| {
        let r = sc.spawn(|| bus.daemon_reload().and_then(|()| bus.network_reload()));
        let live = apply_live(&bus, &after, &new);
        (
            r.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("reload thread panicked"))),
            live,
        )
    });
    reloaded?;
    let live = live?;
    if let Some(n) = assigned {
        println!(
            "{}: slot number {n} assigned (persisted in {})",
            new.name,
            file.display()
        );
    }
    println!(
        "{}: eth{number} {cidr} on {}{}",
        new.name,
        bridge_ifname(bridge),
        if live {
            " (live and persisted)"
        } else {
            " (persisted; applied at the next start)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `zone-ready`: the NAT zone bridge (`vz-slots`) configured by networkd before a slot's
/// nspawn joins it. Without this, the first slot started made the bridge itself (nspawn
/// creates a missing zone bridge), networkd only then configured it, and the slot's first
/// DHCP discovers went unanswered: its DHCP client backs off, so the lease came >10 s late.
pub fn zone_ready() -> anyhow::Result<ExitCode> {
    let zone = format!("vz-{}", slot_config::host::NAT_ZONE);
    let bus = Bus::system()?;
    bus.start_networkd()?;
    bus.wait_for_network1()?;
    Netlink::here()?.ensure_bridge(&zone)?;
    let t0 = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(10);
    let st = bus.wait_link_admin_state(&zone, limit, |st| {
        matches!(st, Some("configured" | "failed" | "unmanaged" | "linger"))
    })?;
    if st.as_deref() == Some("configured") {
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::bail!(
        "networkd has not configured {zone} after {:.1} s (state: {}); slots get their NAT address once it has: networkctl status {zone}",
        t0.elapsed().as_secs_f64(),
        st.as_deref().unwrap_or("unknown to networkd")
    )
}

/// The lowest slot number no configured slot has, also counting the numbers that the names
/// of slot files with errors imply (so fixing such a file later cannot collide).
fn free_slot_number(cfg: &Config) -> Option<u32> {
    let used: std::collections::BTreeSet<u32> = cfg
        .slots
        .iter()
        .filter_map(|s| s.number)
        .chain(cfg.skipped.iter().filter_map(|n| number_from_name(n)))
        .collect();
    (0..=MAX_SLOT_NUMBER).find(|n| !used.contains(n))
}

pub fn del(ctx: &Ctx, slot: &str, nic: &str) -> anyhow::Result<ExitCode> {
    let number = parse_nic_number(nic)?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?.clone();
    if !s.nics.iter().any(|n| n.number == number) {
        return Err(bad_input(format!("{} has no NIC {number}", s.name)));
    }
    let mut doc = read_doc(&s.file)?;
    if let Some(aot) = doc.get_mut("nic").and_then(Item::as_array_of_tables_mut) {
        aot.retain(|t| t.get("number").and_then(Item::as_integer) != Some(i64::from(number)));
        if aot.is_empty() {
            doc.remove("nic");
        }
    }
    let text = doc.to_string();
    validated(ctx, &s, &text)?;
    write_atomic(&s.file, &text)?;
    let bus = Bus::system()?;
    bus.daemon_reload()?;
    bus.network_reload()?;
    let host_if = s.nic_host_ifname(number);
    if s.nics
        .iter()
        .any(|n| n.number == number && cfg.host.is_ovs(n.bridge))
    {
        Ovs::connect()?.delete_ports(|p| Ok(p.name == host_if))?;
    }
    // Deleting the host end removes the pair, and with it the NIC inside the slot.
    Netlink::here()?.delete_link(&host_if)?;
    println!("{}: NIC {number} removed", s.name);
    Ok(ExitCode::SUCCESS)
}

pub fn apply(ctx: &Ctx, slot: &str) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    if slot == "host" {
        return apply_host(&cfg);
    }
    let s = targets::resolve_one(&cfg, slot)?;
    let bus = Bus::system()?;
    if !apply_live(&bus, &cfg, s)? {
        return Err(bad_input(format!("{} is not running", s.name)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `net-apply host` (slot-os-ovs.service, at boot): OVSDB made to match the config's
/// OVS bridges: missing ones created, slot-os's bridges no longer configured removed, ports
/// of veths that are gone removed.
fn apply_host(cfg: &Config) -> anyhow::Result<ExitCode> {
    let wanted: Vec<&slot_config::Bridge> = cfg
        .host
        .bridges
        .iter()
        .filter(|b| b.backend == BridgeBackend::Ovs)
        .collect();
    let mut o = match Ovs::connect() {
        Ok(o) => o,
        // Without OVS bridges there is nothing to do, and OVS need not be installed.
        Err(_) if wanted.is_empty() => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e),
    };
    let dp = ovs::datapath_type();
    for b in &wanted {
        o.ensure_bridge(b, dp)?;
    }
    for b in o.bridges()? {
        if b.number.is_some() && !wanted.iter().any(|w| w.ifname() == b.name) {
            o.delete_bridge(&b.name)?;
            eprintln!("removed OVS bridge {} (not in the config)", b.name);
        }
    }
    ovs::prune_ports(&mut o, cfg)?;
    Ok(ExitCode::SUCCESS)
}

/// `net-release SLOT` (the slot unit's ExecStopPost): its OVS ports go with its veths.
pub fn release(slot: &str) -> anyhow::Result<ExitCode> {
    let gone = Ovs::connect()?.delete_ports(|p| Ok(p.owner.as_deref() == Some(slot)))?;
    if !gone.is_empty() {
        eprintln!("{slot}: removed OVS ports {}", gone.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    pub slot: String,
    pub address: String,
    pub nic: String,
    /// The bridge (default: the one whose subnet holds the address, else bridge NIC_NUMBER).
    #[arg(long)]
    pub bridge: Option<String>,
    /// Replace the NIC's address and bridge if the slot has this NIC already (live on a
    /// running slot); without it, a NIC in use is refused.
    #[arg(long)]
    pub replace: bool,
}

impl AddArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        add(
            ctx,
            &self.slot,
            &self.address,
            &self.nic,
            self.bridge.as_deref(),
            self.replace,
        )
    }
}

#[derive(clap::Args, Debug)]
pub struct DelArgs {
    pub slot: String,
    pub nic: String,
}

impl DelArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        del(ctx, &self.slot, &self.nic)
    }
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    pub slot: String,
}

impl ApplyArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        apply(ctx, &self.slot)
    }
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    pub slot: String,
}

impl ReleaseArgs {
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        release(&self.slot)
    }
}

#[derive(clap::Args, Debug)]
pub struct ZoneReadyArgs {}

impl ZoneReadyArgs {
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        zone_ready()
    }
}
