use std::process::ExitCode;

use super::Ctx;

/// fog05's manifest check: every problem in every file, exit 2 if there is any.
pub fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    for p in &cfg.problems {
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
    if cfg.problems.is_empty() && refused == 0 {
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
            cfg.problems.len() + refused,
            if refused > 0 {
                ", slots whose disk limit cannot be enforced do not start"
            } else {
                ""
            }
        );
        Ok(ExitCode::from(2))
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx)
    }
}
