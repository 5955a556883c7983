//! `remove NAME [--dry-run]`: one slot stopped, its image deleted and its config file
//! removed, without touching any other slot (`build N` removes slotNN slots by range).
//! Its backups stay. An image that another slot boots, or that slots are cloned from,
//! is kept.

use std::process::ExitCode;

use slot_config::names::unit_name;

use super::Ctx;
use crate::config::edit::remove_file;
use crate::config::targets;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::provision;
use crate::sys::{journal, lock};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "NAME | NUMBER")]
    pub name: String,
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self.name, self.dry_run)
    }
}

fn run(ctx: &Ctx, arg: &str, dry_run: bool) -> anyhow::Result<ExitCode> {
    if arg == "all" {
        return Err(bad_input(
            "remove takes one slot; `slot-os build 0` removes every slotNN slot",
        ));
    }
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, arg)?.clone();
    let image = s.image_name().to_string();
    let machines = ctx.paths.under(&cfg.host.machines_dir);
    // Which other slot still needs the image: one that boots it, or one cloned from it
    // (its reset, `backup-restore N slot-os`, copies it again).
    let keeper = cfg
        .slots
        .iter()
        .filter(|o| o.name != s.name)
        .find(|o| o.image_name() == image || o.base_image.as_deref() == Some(image.as_str()))
        .map(|o| o.name.clone())
        .or_else(|| (image == cfg.host.image).then(|| "[defaults] image".to_string()));
    // An overlay slot's layer counts even if an interrupted run left no mount point.
    let has_image = machines.join(&image).symlink_metadata().is_ok()
        || crate::storage::layout::Layout::of(&machines, &s).exists();
    if dry_run {
        println!("would stop {}", s.name);
        match (&keeper, has_image) {
            (Some(k), true) => println!("would keep image {image} ({k} uses it)"),
            (None, true) => println!("would remove image {image}"),
            _ => {}
        }
        println!("would remove {}", s.file.display());
        return Ok(ExitCode::SUCCESS);
    }
    let bus = Bus::system()?;
    let done = (|| {
        if let Some(Err(e)) = bus.stop_units(&[unit_name(&s.name)]).pop() {
            return Err(e.context(format!("stopping {}; nothing was removed", s.name)));
        }
        // Image first, then config: a run killed in between leaves a slot without an
        // image, which `remove` (or `create`) finishes.
        if keeper.is_none() {
            provision::remove_image(&bus, &ctx.paths, &machines, &image)?;
        }
        remove_file(&s.file)?;
        bus.reload_config()
    })();
    let line = match (&done, &keeper) {
        (Err(e), _) => format!("failed: {e:#}"),
        (Ok(()), Some(k)) if has_image => format!("removed (image {image} kept: {k} uses it)"),
        (Ok(()), _) => "removed (backups kept)".to_string(),
    };
    journal::record("remove", &s.name, done.is_ok(), &line);
    done?;
    println!("{}: {line}", s.name);
    Ok(ExitCode::SUCCESS)
}
