use std::process::ExitCode;

use super::Ctx;

/// fog05's manifest check: every problem in every file, exit 2 if there is any.
pub fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    for p in &cfg.problems {
        println!("{p}");
    }
    let booted = cfg.slots.iter().filter(|s| s.boot).count() as u64;
    if let Some(w) = crate::sys::limits::inotify_warning_here(booted) {
        println!("warning: {w}");
    }
    if cfg.problems.is_empty() {
        println!(
            "{}: {} slot(s), {} bridge(s), no problems",
            ctx.paths.config_dir().display(),
            cfg.slots.len(),
            cfg.host.bridges.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} problem(s); files with problems are skipped by the generator",
            cfg.problems.len()
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
