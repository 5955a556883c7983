//! `resource [-c CPU%] [-n CPUSET] [-m MEM] (all | NUMBER...)`: without options, show;
//! with options, validate against the host, persist in the TOML, and apply live.

use std::fs;
use std::process::ExitCode;

use slot_config::load::auto_cpu_quota;
use slot_config::{CpuQuota, CpuSet, Memory, Slot};
use toml_edit::value;

use super::Ctx;
use crate::config::edit::{read_doc, validate_changes, write_atomic};
use crate::config::targets;
use crate::dbus::{Bus, UnitProp};
use crate::error::bad_input;
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
    Ok(Change { cpu, cpus, memory })
}

fn report(s: &Slot, ok: bool, line: String) {
    journal::record("resource", &s.name, ok, &line);
    println!("{}: {line}", s.name);
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let change = parse_change(&a)?;
    if change.cpu.is_none() && change.cpus.is_none() && change.memory.is_none() {
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
        edits.push((s.file.clone(), doc.to_string()));
    }
    // The new values as the generator will see them ("auto" resolved, defaults applied),
    // or bad input with nothing written.
    let after = validate_changes(ctx, &edits)?;
    let bus = Bus::system()?;
    let units: Vec<String> = slots.iter().map(|s| s.unit()).collect();
    let statuses = bus.unit_statuses(&units);
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
        let running = st
            .as_ref()
            .is_ok_and(|st| st.active_state == "active" || st.active_state == "reloading");
        if running {
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
                "CPU {}%, CPUs {}, memory {}{}",
                new.resources.cpu_quota,
                cpus_text(ctx, &new.resources.cpus),
                new.resources.memory,
                if running {
                    " (applied live and persisted)"
                } else {
                    " (persisted)"
                }
            ),
        );
    }
    bus.reload_config()?;
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
    for prop in ["CPUQuota", "AllowedCPUs", "MemoryMax"] {
        let _ = fs::remove_file(dir.join(format!("50-{prop}.conf")));
    }
    let _ = fs::remove_dir(&dir);
}

fn cpus_text(ctx: &Ctx, cpus: &Option<CpuSet>) -> String {
    cpus.as_ref().unwrap_or(&ctx.facts.cpus).to_string()
}

fn show(ctx: &Ctx, slots: &[&Slot], json: bool) {
    let cfg = ctx.load();
    if json {
        let arr: Vec<serde_json::Value> = slots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "number": s.number,
                    "cpu_quota": s.resources.cpu_quota,
                    "cpu_quota_setting": s.cpu_quota.unwrap_or(cfg.host.cpu_quota).to_string(),
                    "cpus": cpus_text(ctx, &s.resources.cpus),
                    "memory": s.resources.memory.0,
                    "memory_text": s.resources.memory.to_string(),
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
        "{:>4}  {:<12} {:>6}  {:<10} {:>8}",
        "NUM", "NAME", "CPU%", "CPUS", "MEMORY"
    );
    for s in slots {
        let q = s.cpu_quota.unwrap_or(cfg.host.cpu_quota);
        let note = if q == CpuQuota::Auto {
            format!(" (auto: {auto})")
        } else {
            String::new()
        };
        println!(
            "{:>4}  {:<12} {:>5}%  {:<10} {:>8}{note}",
            s.number_text(),
            s.name,
            s.resources.cpu_quota,
            cpus_text(ctx, &s.resources.cpus),
            s.resources.memory.to_string()
        );
    }
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, self)
    }
}
