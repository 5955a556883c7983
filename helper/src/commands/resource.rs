//! `resource [-c CPU%] [-n CPUSET] [-m MEM] [-d DISK] [--tasks-max N] [--io-weight N]
//! [--io-read-max BPS] [--io-write-max BPS] (all | NUMBER...)`: without options, show;
//! with options, validate against the host, persist in the TOML, and apply live (unit
//! properties through SetUnitProperties on a running slot; the disk limit in the file
//! system, running or not).

use std::fs;
use std::process::ExitCode;

use slot_config::load::auto_cpu_quota;
use slot_config::render::render_all;
use slot_config::{Bandwidth, CpuQuota, CpuSet, Disk, Memory, SizeLimit, Slot, TasksMax};
use toml_edit::value;

use super::Ctx;
use crate::config::edit::{read_doc, validate_changes, write_atomic};
use crate::config::targets;
use crate::dbus::{Bus, UnitProp};
use crate::error::bad_input;
use crate::storage::quota;
use crate::sys::journal;
use crate::sys::lock;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// CPU% (100 = one whole CPU), or "auto".
    #[arg(short = 'c', value_name = "CPU%")]
    pub cpu: Option<String>,
    /// CPU set, e.g. 0-1,3, or "all".
    #[arg(short = 'n', value_name = "CPUSET")]
    pub cpus: Option<String>,
    /// Memory, with M or G, e.g. 512M.
    #[arg(short = 'm', value_name = "MEM")]
    pub memory: Option<String>,
    /// Disk limit of the slot's directory, e.g. 10G, or "none" (a project quota on
    /// ext4/xfs, a qgroup on btrfs).
    #[arg(short = 'd', value_name = "DISK")]
    pub disk: Option<String>,
    /// Processes and threads (TasksMax=), or "none".
    #[arg(long, value_name = "N")]
    pub tasks_max: Option<String>,
    /// Share of block IO, 1 to 10000 (IOWeight=; systemd's default is 100).
    #[arg(long, value_name = "N")]
    pub io_weight: Option<String>,
    /// Read bandwidth in bytes per second, e.g. 100M, or "none" (IOReadBandwidthMax= on
    /// the machines directory's device).
    #[arg(long, value_name = "BYTES")]
    pub io_read_max: Option<String>,
    /// Write bandwidth in bytes per second, e.g. 50M, or "none" (IOWriteBandwidthMax=).
    #[arg(long, value_name = "BYTES")]
    pub io_write_max: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[arg(required = true, value_name = "all | NUMBER | NAME")]
    pub targets: Vec<String>,
}

/// What the options asked for, parsed; whether this host can give it is the model's to say
/// (see `run`: the edit is validated like every other config edit).
struct Change {
    cpu: Option<CpuQuota>,
    /// `Some(None)` = all CPUs.
    cpus: Option<Option<CpuSet>>,
    memory: Option<Memory>,
    disk: Option<Disk>,
    tasks_max: Option<TasksMax>,
    io_weight: Option<u32>,
    io_read: Option<Bandwidth>,
    io_write: Option<Bandwidth>,
}

impl Change {
    /// Whether anything but the disk changes (the rest are the unit's properties).
    fn has_unit_props(&self) -> bool {
        self.cpu.is_some()
            || self.cpus.is_some()
            || self.memory.is_some()
            || self.tasks_max.is_some()
            || self.io_weight.is_some()
            || self.io_read.is_some()
            || self.io_write.is_some()
    }

    fn is_empty(&self) -> bool {
        !self.has_unit_props() && self.disk.is_none()
    }
}

/// An option's value parsed by the model's own parser (the messages a config file gets).
fn opt<T: std::str::FromStr<Err = String>>(
    v: Option<&str>,
    flag: &str,
) -> anyhow::Result<Option<T>> {
    v.map(|s| {
        s.parse()
            .map_err(|e: String| bad_input(format!("{flag}: {e}")))
    })
    .transpose()
}

fn parse_change(a: &Args) -> anyhow::Result<Change> {
    let cpu = a
        .cpu
        .as_deref()
        .map(|s| s.parse().map_err(|e: String| bad_input(format!("-c: {e}"))))
        .transpose()?;
    let cpus = match a.cpus.as_deref() {
        None => None,
        Some("all") => Some(None),
        Some(s) => Some(Some(
            s.parse()
                .map_err(|e: String| bad_input(format!("-n: {e}")))?,
        )),
    };
    let memory = a
        .memory
        .as_deref()
        .map(|s| s.parse().map_err(|e: String| bad_input(format!("-m: {e}"))))
        .transpose()?;
    let io_weight = match a.io_weight.as_deref() {
        None => None,
        Some(w) => Some(
            w.trim()
                .parse::<u32>()
                .ok()
                .filter(|w| {
                    (slot_config::values::MIN_IO_WEIGHT..=slot_config::values::MAX_IO_WEIGHT)
                        .contains(w)
                })
                .ok_or_else(|| {
                    bad_input(format!(
                        "--io-weight: {w:?} is out of range; use 1 to 10000"
                    ))
                })?,
        ),
    };
    Ok(Change {
        cpu,
        cpus,
        memory,
        disk: opt(a.disk.as_deref(), "-d")?,
        tasks_max: opt(a.tasks_max.as_deref(), "--tasks-max")?,
        io_weight,
        io_read: opt(a.io_read_max.as_deref(), "--io-read-max")?,
        io_write: opt(a.io_write_max.as_deref(), "--io-write-max")?,
    })
}

/// The limits after the change, for the line each slot reports: only what is set.
fn limits_text(s: &Slot) -> String {
    let l = &s.resources.limits;
    let mut out = String::new();
    if let Some(t) = l.tasks_max {
        out.push_str(&format!(", tasks {t}"));
    }
    if let Some(w) = l.io_weight {
        out.push_str(&format!(", IO weight {w}"));
    }
    for (what, bw) in [
        ("read", l.io_read_bandwidth_max),
        ("write", l.io_write_bandwidth_max),
    ] {
        match bw {
            Some(b @ Bandwidth(SizeLimit::Bytes(_))) => out.push_str(&format!(", {what} {b}/s")),
            Some(_) => out.push_str(&format!(", {what} none")),
            None => {}
        }
    }
    if let Some(d) = l.disk {
        out.push_str(&format!(", disk {d}"));
    }
    out
}

fn report(s: &Slot, ok: bool, line: String) {
    journal::record("resource", &s.name, ok, &line);
    println!("{}: {line}", s.name);
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let change = parse_change(&a)?;
    if change.is_empty() {
        let cfg = ctx.load();
        let slots = targets::resolve(&cfg, &a.targets)?;
        show(ctx, &slots, a.json);
        return Ok(ExitCode::SUCCESS);
    }

    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let slots = targets::resolve(&cfg, &a.targets)?;
    let mut edits = Vec::new();
    for s in &slots {
        let mut doc = read_doc(&s.file)?;
        if let Some(q) = change.cpu {
            doc["cpu_quota"] = value(q.to_string());
        }
        match &change.cpus {
            Some(Some(set)) => doc["cpus"] = value(set.to_string()),
            Some(None) => doc["cpus"] = value("all"),
            None => {}
        }
        if let Some(m) = change.memory {
            doc["memory"] = value(m.to_string());
        }
        if let Some(d) = change.disk {
            doc["disk"] = value(d.to_string());
        }
        match change.tasks_max {
            Some(TasksMax::Count(n)) => doc["tasks_max"] = value(n as i64),
            Some(TasksMax::None) => doc["tasks_max"] = value("none"),
            None => {}
        }
        if let Some(w) = change.io_weight {
            doc["io_weight"] = value(i64::from(w));
        }
        if let Some(b) = change.io_read {
            doc["io_read_bandwidth_max"] = value(b.to_string());
        }
        if let Some(b) = change.io_write {
            doc["io_write_bandwidth_max"] = value(b.to_string());
        }
        edits.push((s.file.clone(), doc.to_string()));
    }
    // The new values as the generator will see them ("auto" resolved, defaults applied),
    // or bad input with nothing written.
    let after = validate_changes(ctx, &edits)?;
    let machines = ctx.paths.under(&after.host.machines_dir);
    if change.disk.is_some() {
        // A limit the file system cannot hold is refused before anything is written.
        let mut refused = Vec::new();
        for s in &slots {
            if let Some(new) = after.slot(&s.name) {
                if let Err(e) = quota::check_slot(&machines, new) {
                    refused.push(format!("{}: {e}", s.name));
                }
            }
        }
        if !refused.is_empty() {
            return Err(bad_input(refused.join("\n")));
        }
    }
    // Only the unit's properties need systemd: a disk limit alone is the file system's.
    let bus = if change.has_unit_props() {
        Some(Bus::system()?)
    } else {
        None
    };
    let units: Vec<String> = slots.iter().map(|s| s.unit()).collect();
    let statuses: Vec<Option<bool>> = match &bus {
        Some(b) => {
            b.unit_statuses(&units)
                .into_iter()
                .map(|st| {
                    Some(st.is_ok_and(|st| {
                        st.active_state == "active" || st.active_state == "reloading"
                    }))
                })
                .collect()
        }
        None => vec![None; units.len()],
    };
    for (path, text) in &edits {
        write_atomic(path, text)?;
    }
    let mut failed = false;
    for (s, st) in slots.iter().zip(&statuses) {
        let Some(new) = after.slot(&s.name) else {
            report(
                s,
                false,
                "failed: its file no longer validates; run `slot-os check`".into(),
            );
            failed = true;
            continue;
        };
        let running = *st == Some(true);
        // The disk limit is the file system's: set whether the slot runs or not.
        let mut disk_note = String::new();
        if change.disk.is_some() {
            match quota::apply_slot(&ctx.paths, &machines, new) {
                Ok(done) => {
                    if let quota::Applied::Tagged { .. } | quota::Applied::QuotasEnabled(_) = done {
                        disk_note = format!(" [{}]", done.describe());
                    }
                }
                Err(e) => {
                    report(
                        s,
                        false,
                        format!("persisted, but the disk limit was not applied: {e:#}"),
                    );
                    failed = true;
                    continue;
                }
            }
        }
        if let (true, Some(bus)) = (running, &bus) {
            let mut props = Vec::new();
            if change.cpu.is_some() {
                props.push(UnitProp::CpuQuotaPercent(new.resources.cpu_quota));
            }
            if change.cpus.is_some() {
                props.push(UnitProp::AllowedCpus(new.resources.cpus.clone()));
            }
            if change.memory.is_some() {
                props.push(UnitProp::MemoryMax(new.resources.memory.0));
            }
            let l = &new.resources.limits;
            if change.tasks_max.is_some() {
                props.push(UnitProp::TasksMax(match l.tasks_max {
                    Some(TasksMax::Count(n)) => n,
                    _ => u64::MAX,
                }));
            }
            if change.io_weight.is_some() {
                props.push(UnitProp::IoWeight(l.io_weight.map_or(u64::MAX, u64::from)));
            }
            let on_machines = |b: Option<Bandwidth>| {
                b.and_then(|b| b.0.bytes())
                    .map(|bytes| (after.host.machines_dir.clone(), bytes))
            };
            if change.io_read.is_some() {
                props.push(UnitProp::IoReadBandwidthMax(on_machines(
                    l.io_read_bandwidth_max,
                )));
            }
            if change.io_write.is_some() {
                props.push(UnitProp::IoWriteBandwidthMax(on_machines(
                    l.io_write_bandwidth_max,
                )));
            }
            if let Err(e) = bus.set_unit_properties(&new.unit(), true, &props) {
                report(s, false, format!("persisted, but not applied live: {e:#}"));
                failed = true;
                continue;
            }
            drop_runtime_overrides(ctx, &new.unit());
        }
        report(
            s,
            true,
            format!(
                "CPU {}%, CPUs {}, memory {}{}{}{disk_note}",
                new.resources.cpu_quota,
                cpus_text(ctx, &new.resources.cpus),
                new.resources.memory,
                limits_text(new),
                match (running, change.disk.is_some()) {
                    (true, _) => " (applied live and persisted)",
                    (false, true) => " (persisted; disk limit applied)",
                    (false, false) => " (persisted)",
                }
            ),
        );
    }
    // systemd re-reads the generator's files only if they change: a new disk size, say,
    // changes none of them, and a daemon-reload is most of such a command's time.
    if render_all(&cfg) != render_all(&after) {
        match &bus {
            Some(b) => b.reload_config()?,
            None => Bus::system()?.reload_config()?,
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// SetUnitProperties(runtime) leaves drop-ins in /run/systemd/system.control that
/// outrank the generator's; once the TOML holds the same values they would only
/// shadow later edits of the TOML, so they go (the reload that follows forgets them).
fn drop_runtime_overrides(ctx: &Ctx, unit: &str) {
    let dir = ctx
        .paths
        .under("/run/systemd/system.control")
        .join(format!("{unit}.d"));
    for prop in [
        "CPUQuota",
        "AllowedCPUs",
        "MemoryMax",
        "TasksMax",
        "IOWeight",
        "IOReadBandwidthMax",
        "IOWriteBandwidthMax",
    ] {
        let _ = fs::remove_file(dir.join(format!("50-{prop}.conf")));
    }
    let _ = fs::remove_dir(&dir);
}

fn cpus_text(ctx: &Ctx, cpus: &Option<CpuSet>) -> String {
    cpus.as_ref().unwrap_or(&ctx.facts.cpus).to_string()
}

fn show(ctx: &Ctx, slots: &[&Slot], json: bool) {
    let cfg = ctx.load();
    let machines = ctx.paths.under(&cfg.host.machines_dir);
    let disk = |s: &Slot| quota::usage(&quota::slot_dir(&machines, s));
    if json {
        let arr: Vec<serde_json::Value> = slots
            .iter()
            .map(|s| {
                let l = &s.resources.limits;
                serde_json::json!({
                    "name": s.name,
                    "number": s.number,
                    "cpu_quota": s.resources.cpu_quota,
                    "cpu_quota_setting": s.cpu_quota.unwrap_or(cfg.host.cpu_quota).to_string(),
                    "cpus": cpus_text(ctx, &s.resources.cpus),
                    "memory": s.resources.memory.0,
                    "memory_text": s.resources.memory.to_string(),
                    // null: not set (systemd's default); "none": no limit
                    "tasks_max": l.tasks_max.map(|t| t.to_string()),
                    "io_weight": l.io_weight,
                    "io_read_bandwidth_max": l.io_read_bandwidth_max.and_then(|b| b.0.bytes()),
                    "io_write_bandwidth_max": l.io_write_bandwidth_max.and_then(|b| b.0.bytes()),
                    "disk_limit": l.disk_bytes(),
                    // what the file system's quota says: {used, limit}, null if untracked
                    "disk_usage": disk(s),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return;
    }
    let auto = auto_cpu_quota(
        &ctx.facts,
        cfg.slots.len() as u32 + cfg.skipped.len() as u32,
    );
    println!(
        "{:>4}  {:<12} {:>6}  {:<10} {:>8}  {:>6}  {:>5}  {:>7}  {:>7}  {:<15}",
        "NUM", "NAME", "CPU%", "CPUS", "MEMORY", "TASKS", "IOW", "READ/S", "WRITE/S", "DISK"
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for s in slots {
        let l = &s.resources.limits;
        let q = s.cpu_quota.unwrap_or(cfg.host.cpu_quota);
        let note = if q == CpuQuota::Auto {
            format!(" (auto: {auto})")
        } else {
            String::new()
        };
        println!(
            "{:>4}  {:<12} {:>5}%  {:<10} {:>8}  {:>6}  {:>5}  {:>7}  {:>7}  {:<15}{note}",
            s.number_text(),
            s.name,
            s.resources.cpu_quota,
            cpus_text(ctx, &s.resources.cpus),
            s.resources.memory.to_string(),
            or_dash(l.tasks_max.map(|t| t.to_string())),
            or_dash(l.io_weight.map(|w| w.to_string())),
            or_dash(l.io_read_bandwidth_max.map(|b| b.to_string())),
            or_dash(l.io_write_bandwidth_max.map(|b| b.to_string())),
            super::disk_text(disk(s)),
        );
    }
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, self)
    }
}
