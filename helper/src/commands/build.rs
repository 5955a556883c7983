//! `build N`: slots slot00..slot(N-1), each a TOML file plus its own clone of the base
//! image; slots numbered N and above are removed; `build 0` removes them all.
//! Only slots named slotNN belong to `build`; slots an admin named otherwise stay.

use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use slot_config::names::{default_slot_name, number_from_name, unit_name, MAX_SLOT_NUMBER};
use slot_config::Config;

use super::Ctx;
use crate::config::edit::{new_slot_text, remove_file, write_atomic};
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::provision::{self, NewImage};
use crate::storage::quota;
use crate::sys::lock;

pub fn run(ctx: &Ctx, count: &str, dry_run: bool) -> anyhow::Result<ExitCode> {
    let n: u32 = count
        .parse()
        .ok()
        .filter(|n| *n <= MAX_SLOT_NUMBER + 1)
        .ok_or_else(|| {
            bad_input(format!(
                "{count:?} is not a number of slots; use 0 to {}",
                MAX_SLOT_NUMBER + 1
            ))
        })?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let base = cfg.host.image.clone();
    let machines = ctx.paths.under(&cfg.host.machines_dir);

    let wanted: Vec<String> = (0..n).map(default_slot_name).collect();
    let existing = build_owned_slots(ctx, &cfg);
    let remove: Vec<&String> = existing.iter().filter(|s| !wanted.contains(s)).collect();
    let create_cfg: Vec<&String> = wanted
        .iter()
        .filter(|s| !ctx.paths.config_dir().join(format!("{s}.toml")).exists())
        .collect();
    let clone: Vec<&String> = wanted
        .iter()
        .filter(|s| !machines.join(s.as_str()).exists())
        .collect();

    if !clone.is_empty() && !machines.join(&base).is_dir() {
        return Err(bad_input(format!(
            "base image {base:?} does not exist in {}; run `slot-os make-base-image` first",
            machines.display()
        )));
    }
    if let Some(bad) = cfg.skipped.iter().find(|s| wanted.contains(s)) {
        return Err(bad_input(format!(
            "{bad}.toml has errors (see `slot-os check`); fix it before building"
        )));
    }
    // A disk limit (the slot's own, or [defaults]) that the file system cannot hold:
    // refused before anything is made.
    let new: Vec<(&str, bool)> = wanted
        .iter()
        .filter(|s| clone.contains(s) || create_cfg.contains(s))
        .map(|s| (s.as_str(), clone.contains(&s)))
        .collect();
    let refused = quota::refused_new(&cfg, &machines, &base, &new);
    if !refused.is_empty() {
        return Err(bad_input(refused.join("\n")));
    }
    if remove.is_empty() && create_cfg.is_empty() && clone.is_empty() {
        println!("{n} slot(s) already built; nothing to change");
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        for s in &create_cfg {
            println!(
                "would write {}",
                ctx.paths.config_dir().join(format!("{s}.toml")).display()
            );
        }
        for s in &clone {
            println!("would clone image {base} as {s}");
        }
        for s in &remove {
            println!("would remove slot {s} (stop it, delete its image and config)");
        }
        return Ok(ExitCode::SUCCESS);
    }

    let bus = Bus::system()?;
    let started = Instant::now();
    let mut failed = false;

    if !remove.is_empty() {
        let units: Vec<String> = remove.iter().map(|s| unit_name(s)).collect();
        for (s, r) in remove.iter().zip(bus.stop_units(&units)) {
            if let Err(e) = r {
                println!("{s}: failed to stop: {e:#}");
                failed = true;
            }
        }
        for s in &remove {
            match remove_slot(ctx, &bus, &machines, s) {
                Ok(()) => println!("{s}: removed"),
                Err(e) => {
                    println!("{s}: failed to remove: {e:#}");
                    failed = true;
                }
            }
        }
    }

    let to_clone: Vec<NewImage<'_>> = clone
        .iter()
        .map(|s| NewImage {
            image: s,
            hostname: s,
        })
        .collect();
    let cloned_ok = provision::images(&bus, &machines, &base, &to_clone);
    for s in &wanted {
        let file = ctx.paths.config_dir().join(format!("{s}.toml"));
        let cloned = clone.contains(&s);
        if let Some(Err(e)) = clone.iter().position(|c| c == &s).map(|i| &cloned_ok[i]) {
            println!("{s}: failed: {e:#}");
            failed = true;
            continue;
        }
        if create_cfg.contains(&s) {
            write_atomic(&file, &new_slot_text(s, &base, None, "build"))?;
        }
        if cloned || create_cfg.contains(&s) {
            println!(
                "{s}: built{}",
                if cloned {
                    format!(" (image cloned from {base})")
                } else {
                    String::new()
                }
            );
        }
    }
    // New slots get their disk limit now, from the config just written.
    let after = ctx.load();
    for s in wanted
        .iter()
        .filter(|s| clone.contains(s) || create_cfg.contains(s))
    {
        let Some(slot) = after.slot(s) else { continue };
        if slot.resources.limits.disk_bytes().is_none() {
            continue;
        }
        match quota::apply_slot(&ctx.paths, &machines, slot) {
            Ok(done) => println!("{s}: {}", done.describe()),
            Err(e) => {
                println!("{s}: failed: disk limit not applied: {e:#}");
                failed = true;
            }
        }
    }
    bus.reload_config()?;
    println!(
        "build {n}: done in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// slotNN slots that exist as a config file or an image.
fn build_owned_slots(ctx: &Ctx, cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = cfg
        .slots
        .iter()
        .map(|s| s.name.clone())
        .chain(cfg.skipped.iter().cloned())
        .collect();
    if let Ok(rd) = fs::read_dir(ctx.paths.under(&cfg.host.machines_dir)) {
        names.extend(
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from)),
        );
    }
    names.retain(|n| number_from_name(n).is_some_and(|num| default_slot_name(num) == *n));
    names.sort();
    names.dedup();
    names
}

/// Image first, then config: an interrupted removal leaves a config without an image,
/// which the next `build` (or `build 0`) finishes removing.
fn remove_slot(ctx: &Ctx, bus: &Bus, machines: &Path, name: &str) -> anyhow::Result<()> {
    provision::remove_image(bus, &ctx.paths, machines, name)?;
    remove_file(&ctx.paths.config_dir().join(format!("{name}.toml")))
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "NUMBER")]
    pub count: String,
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self.count, self.dry_run)
    }
}
