use std::process::ExitCode;

use slot_config::{Config, Problem, Storage, HOST_FILE};

use super::Ctx;
use crate::storage::layout::{self, Layout};
use crate::storage::{backend, layer, lower};

/// fog05's manifest check: every problem in every file, exit 2 if there is any.
pub fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let mut problems = cfg.problems.clone();
    let storage_note = storage_problems(ctx, &cfg, &mut problems);
    for p in &problems {
        println!("{p}");
    }
    // What the file holds is valid; whether the host can give it is the disk's to say.
    let machines = ctx.paths.under(&cfg.host.machines_dir);
    let mut refused = 0;
    for s in &cfg.slots {
        match crate::storage::quota::check_slot(&machines, s) {
            Err(e) => {
                println!("{}: disk: {e}", s.file.display());
                refused += 1;
            }
            Ok(Some(crate::storage::quota::Backend::Qgroup { enabled: false })) => println!(
                "note: {}: btrfs quotas are off on {}; the first disk limit applied switches them on",
                s.name,
                machines.display()
            ),
            Ok(_) => {}
        }
        if s.privileged && s.resources.limits.disk_bytes().is_some() {
            println!(
                "warning: {}: privileged: its root is the host's root, which can lift a disk quota",
                s.name
            );
        }
    }
    let booted = cfg.slots.iter().filter(|s| s.boot).count() as u64;
    if let Some(w) = crate::sys::limits::inotify_warning_here(booted) {
        println!("warning: {w}");
    }
    if let Some(n) = storage_note {
        println!("{n}");
    }
    if problems.is_empty() && refused == 0 {
        println!(
            "{}: {} slot(s), {} bridge(s), no problems",
            ctx.paths.config_dir().display(),
            cfg.slots.len(),
            cfg.host.bridges.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} problem(s); files with problems are skipped by the generator{}",
            problems.len() + refused,
            if refused > 0 {
                ", slots whose disk limit cannot be enforced do not start"
            } else {
                ""
            }
        );
        Ok(ExitCode::from(2))
    }
}

/// The storage backend against this host (`[storage] backend` must be possible here; the
/// answer of `auto` is said), and every built overlay slot's layer and base version. Only
/// looked at when the machines directory exists and we are root (the probe mounts).
fn storage_problems(ctx: &Ctx, cfg: &Config, problems: &mut Vec<Problem>) -> Option<String> {
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    if !machines.is_dir() || !nix::unistd::geteuid().is_root() {
        return None;
    }
    let host_file = ctx.paths.config_dir().join(HOST_FILE);
    let mut note = None;
    match backend::choose(cfg.host.backend, &machines, &layout::stage_dir(&ctx.paths)) {
        Ok(c) if cfg.host.backend.is_none() => {
            note = Some(format!("storage: new slots get {} ({})", c.storage, c.why));
        }
        Ok(_) => {}
        Err(e) => problems.push(Problem::new(&host_file, "storage.backend", e.to_string())),
    }
    for s in cfg.slots.iter().filter(|s| s.is_overlay()) {
        let lay = Layout::of(&machines, s);
        let Some(dir) = lay.layer.as_deref() else {
            continue;
        };
        if !dir.is_dir() {
            // Not built yet: `build` (or `create`) makes it.
            continue;
        }
        match layer::pin(dir) {
            Err(e) => problems.push(Problem::new(&s.file, "storage", e.to_string())),
            Ok(v) if !lower::root(&machines, &v).is_dir() => problems.push(Problem::new(
                &s.file,
                "storage",
                format!(
                    "its base version {v} is missing from {}; the slot cannot start (restore a backup of it, or `slot-os backup-restore {} {}` to reset it)",
                    lower::root(&machines, &v).display(),
                    s.arg(),
                    cfg.host.image
                ),
            )),
            Ok(_) => {}
        }
    }
    for s in cfg
        .slots
        .iter()
        .filter(|s| s.storage == Some(Storage::Btrfs))
    {
        let img = machines.join(s.image_name());
        if img.is_dir() && !crate::storage::image::is_btrfs(&img) {
            problems.push(Problem::new(
                &s.file,
                "storage",
                format!("\"btrfs\", but {} is not on btrfs", img.display()),
            ));
        }
    }
    note
}

#[derive(clap::Args, Debug)]
pub struct Args {}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx)
    }
}
