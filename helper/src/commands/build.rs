//! `build N`: slots slot00..slot(N-1), each a TOML file plus its own clone of the base
//! image; slots numbered N and above are removed; `build 0` removes them all.
//! Only slots named slotNN belong to `build`; slots an admin named otherwise stay.

use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use slot_config::names::{default_slot_name, number_from_name, unit_name, MAX_SLOT_NUMBER};
use slot_config::Config;

use super::Ctx;
use crate::config::edit::write_atomic;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::hostkeys::HostKeys;
use crate::storage::image;
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
    let limit_of = |s: &str| {
        cfg.slot(s).map_or(cfg.host.limits.disk_bytes(), |x| {
            x.resources.limits.disk_bytes()
        })
    };
    let mut refused = Vec::new();
    for s in wanted
        .iter()
        .filter(|s| clone.contains(s) || create_cfg.contains(s))
    {
        if limit_of(s).is_none() {
            continue;
        }
        // A clone is made on the base image's file system (on btrfs, a snapshot of it).
        let dir = if clone.contains(&s) {
            machines.join(&base)
        } else {
            machines.join(s)
        };
        if let Err(e) = quota::check(&dir) {
            refused.push(format!("{s}: {e}"));
        }
    }
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

    let to_clone: Vec<String> = clone.iter().map(|s| s.to_string()).collect();
    let cloned_ok: Vec<anyhow::Result<()>> = bus
        .clone_images(&base, &to_clone)
        .into_iter()
        .zip(&to_clone)
        .map(|(r, s)| r.and_then(|()| give_identity(&bus, &machines, s)))
        .collect();
    for s in &wanted {
        let file = ctx.paths.config_dir().join(format!("{s}.toml"));
        let cloned = clone.contains(&s);
        if let Some(Err(e)) = to_clone.iter().position(|c| c == s).map(|i| &cloned_ok[i]) {
            println!("{s}: failed: cloning image {base}: {e:#}");
            failed = true;
            continue;
        }
        if create_cfg.contains(&s) {
            let text = format!(
                "# Slot {s}, made by `slot-os build`. Keys and defaults: slot-os.toml(5).\n\
                 # Resources not set here follow [defaults] in slot-os.toml.\n\
                 base_image = \"{base}\"\n"
            );
            write_atomic(&file, &text)?;
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

/// A fresh clone gets its own machine-id and hostname; if that fails it is removed.
fn give_identity(bus: &Bus, machines: &Path, name: &str) -> anyhow::Result<()> {
    let id = image::new_machine_id()?;
    if let Err(e) = image::set_identity(&machines.join(name), name, Some(&id), HostKeys::New) {
        let _ = bus.remove_image(name);
        return Err(e);
    }
    Ok(())
}

/// Image first, then config: an interrupted removal leaves a config without an image,
/// which the next `build` (or `build 0`) finishes removing.
fn remove_slot(ctx: &Ctx, bus: &Bus, machines: &Path, name: &str) -> anyhow::Result<()> {
    let img = machines.join(name);
    let id = image::machine_id(&img);
    // Its project's limit goes with it, so the ID is free once the files are.
    if let Err(e) = quota::release(&img) {
        eprintln!("warning: {name}: disk limit not lifted: {e:#}");
    }
    if img.exists() {
        bus.remove_image(name)
            .with_context(|| format!("removing image {name}"))?;
    }
    // nspawn's --link-journal=try-guest leaves /var/log/journal/<id> pointing into the
    // image; it dangles once the image is gone.
    if let Some(id) = id {
        let link = ctx.paths.under("/var/log/journal").join(id);
        if link
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            let _ = fs::remove_file(&link);
        }
    }
    let file = ctx.paths.config_dir().join(format!("{name}.toml"));
    match fs::remove_file(&file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", file.display())),
    }
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
