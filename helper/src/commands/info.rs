//! `info NAME [--json]` (OverC's `cube-ctl info`): state, leader PID, addresses, CPU
//! time, memory, traffic, image, running since.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use super::{disk_text, human, Ctx};
use crate::config::targets;
use crate::dbus::running;
use crate::dbus::Bus;
use crate::storage::image;
use crate::storage::layout;
use crate::storage::quota;

#[derive(Debug, Default, serde::Serialize)]
struct Usage {
    processes: u32,
    cpu_time_ns: u64,
    memory_rss_bytes: u64,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// The PIDs of the slot's processes: those in its unit's `payload` cgroup, or (no such
/// cgroup found) every process in the leader's PID namespace, found by looking at all of
/// /proc (which costs a look at each of the host's processes: ~1400 with 200 slots).
fn slot_pids(leader: u32, unit: &str) -> Vec<String> {
    if let Some(pids) = crate::sys::cgroup::payload_pids(leader, unit) {
        return pids.iter().map(u32::to_string).collect();
    }
    let Ok(ns) = fs::metadata(format!("/proc/{leader}/ns/pid")) else {
        return Vec::new();
    };
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/pid"))
                .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
        })
        .collect()
}

/// CPU time and memory of every process of the slot, and the traffic of its interfaces
/// (except lo). Read from /proc so it works whatever the cgroup setup (systemd's own
/// counters need controllers a cgroup-v1 host does not delegate).
fn usage(leader: u32, unit: &str) -> Usage {
    let mut u = Usage::default();
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    for pid in slot_pids(leader, unit) {
        u.processes += 1;
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name, which may itself contain spaces.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
                    + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
                u.cpu_time_ns += ticks * 1_000_000_000 / tick;
            }
        }
        if let Ok(statm) = fs::read_to_string(format!("/proc/{pid}/statm")) {
            u.memory_rss_bytes += statm
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
                * page;
        }
    }
    if let Ok(dev) = fs::read_to_string(format!("/proc/{leader}/net/dev")) {
        for line in dev.lines().skip(2) {
            let Some((ifname, rest)) = line.split_once(':') else {
                continue;
            };
            if ifname.trim() == "lo" {
                continue;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            u.rx_bytes += f.first().copied().unwrap_or(0);
            u.tx_bytes += f.get(8).copied().unwrap_or(0);
        }
    }
    u
}

pub fn run(ctx: &Ctx, slot: &str, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?;
    let bus = Bus::system()?;
    let st = bus.unit_status(&s.unit())?;
    let machine = bus
        .machines_named(std::slice::from_ref(&s.name))?
        .into_iter()
        .find(|m| m.name == s.name);
    let leader = machine.as_ref().map(|m| m.leader).filter(|l| *l > 0);
    let addresses: Vec<String> = match leader {
        Some(_) => bus
            .machine_addresses(&s.name)
            .unwrap_or_default()
            .iter()
            .map(|a| a.to_string())
            .collect(),
        None => Vec::new(),
    };
    let u = leader.map(|l| usage(l, &s.unit())).unwrap_or_default();
    let state = running::state_name(&st.active_state, &st.freezer_state);
    let since_usec = machine
        .as_ref()
        .map(|m| m.timestamp_usec)
        .filter(|t| *t > 0);
    let image = s.image_name().to_string();
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let storage = layout::describe(&machines, s);
    let lay = layout::Layout::of(&machines, s);
    let disk = quota::usage(&quota::slot_dir(&machines, s));
    let l = &s.resources.limits;
    // An overlay slot's mark is on its layer directory, where a restore exchanges it.
    let restored = image::restored_from(lay.restore_target());
    if json {
        let v = serde_json::json!({
            "name": s.name,
            "number": s.number,
            "state": state,
            "active_state": st.active_state,
            "sub_state": st.sub_state,
            "freezer_state": st.freezer_state,
            "unit": s.unit(),
            "leader": leader,
            "addresses": addresses,
            "image": image,
            "base_image": s.base_image,
            "storage": storage.storage.map(|x| x.as_str()),
            "storage_recorded": storage.recorded,
            "base_version": storage.base_version,
            "upper": lay.layer.as_ref().map(|_| lay.capture_dir()),
            "uid_base": s.uid_base(),
            "since_usec": since_usec,
            "cpu_quota": s.resources.cpu_quota,
            "cpus": s.resources.cpus.as_ref().unwrap_or(&ctx.facts.cpus).to_string(),
            "memory_max": s.resources.memory.0,
            "tasks_max": l.tasks_max.map(|t| t.to_string()),
            "io_weight": l.io_weight,
            "io_read_bandwidth_max": l.io_read_bandwidth_max.and_then(|b| b.0.bytes()),
            "io_write_bandwidth_max": l.io_write_bandwidth_max.and_then(|b| b.0.bytes()),
            "disk_limit": l.disk_bytes(),
            "disk_usage": disk,
            "usage": u,
            "restored_from": restored,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let since = since_usec.map(|t| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        format!("{} s ago", now.saturating_sub(t) / 1_000_000)
    });
    println!("       Name: {} (number {})", s.name, s.number_text());
    println!(
        "      State: {state} ({}/{}{})",
        st.active_state,
        st.sub_state,
        if st.freezer_state.is_empty() {
            String::new()
        } else {
            format!(", {}", st.freezer_state)
        }
    );
    println!("       Unit: {}", s.unit());
    println!(
        "     Leader: {}",
        leader.map_or("-".into(), |l| l.to_string())
    );
    println!("      Since: {}", since.unwrap_or_else(|| "-".into()));
    println!(
        "      Image: {image}{}",
        s.base_image
            .as_ref()
            .map(|b| format!(" (from {b})"))
            .unwrap_or_default()
    );
    let detail = match (&storage.base_version, s.uid_base()) {
        (Some(v), Some(b)) => format!(
            " on {v}, upper {}, user namespace {b}..{}",
            lay.capture_dir().display(),
            b + slot_config::storage::UID_RANGE - 1
        ),
        (Some(v), None) => format!(" on {v}, upper {}", lay.capture_dir().display()),
        _ => String::new(),
    };
    println!(
        "    Storage: {}{detail}{}",
        storage.text(),
        if storage.recorded || storage.storage.is_none() {
            ""
        } else {
            " (as found on disk)"
        }
    );
    println!(
        "  Addresses: {}",
        if addresses.is_empty() {
            "-".into()
        } else {
            addresses.join(", ")
        }
    );
    println!(
        "  Resources: CPU {}%, CPUs {}, memory max {}",
        s.resources.cpu_quota,
        s.resources.cpus.as_ref().unwrap_or(&ctx.facts.cpus),
        s.resources.memory
    );
    let mut more = Vec::new();
    if let Some(t) = l.tasks_max {
        more.push(format!("tasks max {t}"));
    }
    if let Some(w) = l.io_weight {
        more.push(format!("IO weight {w}"));
    }
    if let Some(b) = l.io_read_bandwidth_max {
        more.push(format!("read {b}/s"));
    }
    if let Some(b) = l.io_write_bandwidth_max {
        more.push(format!("write {b}/s"));
    }
    if !more.is_empty() {
        println!("             {}", more.join(", "));
    }
    println!(
        "       Disk: {} (used/limit){}",
        disk_text(disk),
        match (l.disk, disk) {
            (Some(d), None) if d.0.bytes().is_some() => {
                format!("; configured {d}, not applied yet")
            }
            _ => String::new(),
        }
    );
    if let Some(r) = &restored {
        println!("   Restored: from {}", r.backup);
    }
    if leader.is_some() {
        println!(
            "      Usage: {} processes, CPU time {:.2} s, memory {}",
            u.processes,
            u.cpu_time_ns as f64 / 1e9,
            human(u.memory_rss_bytes)
        );
        println!(
            "    Traffic: RX {}, TX {}",
            human(u.rx_bytes),
            human(u.tx_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "NAME | NUMBER")]
    pub slot: String,
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self.slot, self.json)
    }
}
