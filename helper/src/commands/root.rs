//! `root-mount NAME` / `root-umount NAME` (hidden): what `slot-os-root@NAME.service` runs
//! before an overlay slot starts and after it stops. Neither takes the helper lock: `start`
//! holds it while it waits for the slot's start job, which waits for this.

use std::process::ExitCode;

use anyhow::Context;

use super::Ctx;
use crate::error::bad_input;
use crate::storage::{layer, layout};
use crate::sys::lock::ImageLock;

pub fn mount(ctx: &Ctx, name: &str) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let s = cfg
        .slot(name)
        .ok_or_else(|| bad_input(format!("no valid slot named {name} (see slot-os check)")))?;
    if !s.is_overlay() {
        return Err(bad_input(format!(
            "{name} is not an overlay slot; its root is the image directory itself"
        )));
    }
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let lay = layout::Layout::of(&machines, s);
    // nspawn holds this lock while the slot runs (and restore or rebase while they change
    // the layer): no second root is mounted under a running slot.
    let _image = ImageLock::images(
        &[&lay.image],
        "it runs (its root is mounted already), or a restore or rebase is changing it",
    )?;
    layer::mount_root(
        &machines,
        s.image_name(),
        s.uid_base(),
        &layout::stage_dir(&ctx.paths),
    )
    .with_context(|| format!("mounting the root of {name}"))?;
    let pin = lay
        .layer
        .as_deref()
        .and_then(|l| layer::pin(l).ok())
        .map(|v| v.id())
        .unwrap_or_default();
    match s.uid_base() {
        Some(b) => println!(
            "{name}: root mounted on {} ({pin} below its upper, idmapped to {b}..{})",
            lay.image.display(),
            b + slot_config::storage::UID_RANGE - 1
        ),
        None => println!(
            "{name}: root mounted on {} ({pin} below its upper)",
            lay.image.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn umount(ctx: &Ctx, name: &str) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    // A slot whose file went away meanwhile is still unmounted, by its own name.
    let image = cfg.slot(name).map_or(name, |s| s.image_name());
    slot_config::names::check_name("image", image)?;
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let n = layer::unmount_root(&machines, image)
        .with_context(|| format!("unmounting the root of {name}"))?;
    if n > 0 {
        println!("{name}: root unmounted");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    pub slot: String,
}

impl Args {
    pub fn exec_mount(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        mount(ctx, &self.slot)
    }
    pub fn exec_umount(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        umount(ctx, &self.slot)
    }
}
