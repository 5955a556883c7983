//! `build N`: slots slot00..slot(N-1), each a TOML file plus its own root made from the
//! base image (a machined clone: btrfs snapshot or copy; or an overlay on a version of the
//! base, see `storage::layer`); slots numbered N and above are removed; `build 0` removes
//! them all. Only slots named slotNN belong to `build`; slots an admin named otherwise stay.

use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use slot_config::names::{default_slot_name, number_from_name, unit_name, MAX_SLOT_NUMBER};
use slot_config::{Config, Storage};

use super::Ctx;
use crate::config::edit::{new_slot_text, remove_file, write_atomic};
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::backend::{self, Choice};
use crate::storage::layer;
use crate::storage::layout::{self, Layout};
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
    let stage = layout::stage_dir(&ctx.paths);
    // What each new slot is made with: its own file's `storage`, else the host's backend
    // (resolved once, and only if some slot needs it: auto probes the kernel).
    let mut host_choice: Option<Choice> = None;
    let mut clone: Vec<(&String, Storage)> = Vec::new();
    for s in &wanted {
        let asked = cfg.slot(s).and_then(|x| x.storage);
        let made = |st| Layout::named(&machines, s, Some(st)).exists();
        if asked.is_some_and(made) || (asked.is_none() && machines.join(s.as_str()).exists()) {
            continue;
        }
        let storage = match asked {
            Some(st) => st,
            None => {
                if host_choice.is_none() {
                    let c = backend::choose(cfg.host.backend, &machines, &stage)
                        .map_err(|e| bad_input(e.to_string()))?;
                    println!("storage: {} ({})", c.storage, c.why);
                    host_choice = Some(c);
                }
                host_choice.as_ref().map_or(Storage::Copy, |c| c.storage)
            }
        };
        if asked == Some(Storage::Btrfs) || asked == Some(Storage::Overlay) {
            backend::choose(asked, &machines, &stage).map_err(|e| {
                bad_input(format!("{s}.toml asks for storage = \"{storage}\": {e}"))
            })?;
        }
        clone.push((s, storage));
    }

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
    let cloned = |s: &String| clone.iter().any(|(c, _)| *c == s);
    let new: Vec<(&str, bool)> = wanted
        .iter()
        .filter(|s| cloned(s) || create_cfg.contains(s))
        .map(|s| (s.as_str(), cloned(s)))
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
        for (s, st) in &clone {
            match st {
                Storage::Overlay => {
                    println!("would make {s} an overlay slot on a version of image {base}")
                }
                _ => println!("would clone image {base} as {s} ({st})"),
            }
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

    let to_make: Vec<NewImage<'_>> = clone
        .iter()
        .map(|(s, storage)| NewImage {
            image: s,
            hostname: s,
            storage: *storage,
        })
        .collect();
    let made = provision::images(&bus, &ctx.paths, &machines, &base, &to_make);
    for s in &wanted {
        let file = ctx.paths.config_dir().join(format!("{s}.toml"));
        let i = clone.iter().position(|(c, _)| c == &s);
        let storage = i.map(|i| clone[i].1);
        match i.map(|i| &made[i]) {
            Some(Err(e)) => {
                println!("{s}: failed: making its root from image {base}: {e:#}");
                failed = true;
                continue;
            }
            Some(Ok(())) if !create_cfg.contains(&s) => {
                crate::config::edit::record_storage(&file, storage)?
            }
            _ => {}
        }
        if create_cfg.contains(&s) {
            write_atomic(&file, &new_slot_text(s, &base, None, storage, "build"))?;
        }
        if storage.is_some() || create_cfg.contains(&s) {
            println!(
                "{s}: built{}",
                match storage {
                    Some(Storage::Overlay) => format!(" (overlay root on a version of {base})"),
                    Some(st) => format!(" (image cloned from {base}, {st})"),
                    None => String::new(),
                }
            );
        }
    }
    let gone = layer::prune_versions(&machines, &ctx.paths.under(&cfg.host.backup_dir));
    if !gone.is_empty() {
        println!(
            "base versions no slot or backup uses any more, deleted: {}",
            gone.join(", ")
        );
    }
    // New slots get their disk limit now, from the config just written.
    let after = ctx.load();
    for s in wanted
        .iter()
        .filter(|s| cloned(s) || create_cfg.contains(s))
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
    let machines = ctx.paths.under(&cfg.host.machines_dir);
    // Image directories, and overlay layers whose mount point an interrupted run left out.
    for dir in [
        machines.clone(),
        crate::storage::layout::layers_dir(&machines),
    ] {
        if let Ok(rd) = fs::read_dir(dir) {
            names.extend(
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().map(String::from)),
            );
        }
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
