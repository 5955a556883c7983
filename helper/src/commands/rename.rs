//! `rename OLD NEW`: a stopped slot's config file, image and units move to a new name.
//! Each step leaves a consistent state, so an interrupted rename can be finished by
//! running it again or undone by hand.

use std::fs;
use std::process::ExitCode;

use anyhow::Context;
use slot_config::names::check_slot_name;
use toml_edit::value;

use super::Ctx;
use crate::config::edit::{read_doc, write_doc};
use crate::config::targets;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::layer;
use crate::sys::lock;

pub fn run(ctx: &Ctx, old: &str, new: &str) -> anyhow::Result<ExitCode> {
    check_slot_name(new)?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, old)?.clone();
    let new_file = ctx.paths.config_dir().join(format!("{new}.toml"));
    if new_file.exists() || cfg.slot(new).is_some() {
        return Err(bad_input(format!("a slot named {new} already exists")));
    }
    let bus = Bus::system()?;
    crate::dbus::running::require_stopped(&bus, &s, "first")?;
    let renames_image = s.image.is_none();
    let machines = ctx.paths.under(&cfg.host.machines_dir);
    let overlay = s.is_overlay();
    if renames_image
        && (machines.join(new).exists() || (overlay && layer::path(&machines, new).exists()))
    {
        return Err(bad_input(format!("an image named {new} already exists")));
    }
    // The image under both names, until the rename is complete: nspawn can boot neither.
    let old_dir = machines.join(s.image_name());
    let new_dir = machines.join(new);
    let _image = lock::ImageLock::images(&[&old_dir, &new_dir], "stop it first")?;
    crate::dbus::running::require_stopped(&bus, &s, "first")?;
    if overlay {
        layer::settle_stopped(&bus, &machines, &s)?;
    }

    // 1. The new file, still booting the old image; the number is kept explicitly since
    //    a name like `web` does not imply one.
    let mut doc = read_doc(&s.file)?;
    if let Some(n) = s.number {
        doc["number"] = value(i64::from(n));
    }
    if renames_image {
        doc["image"] = value(s.name.as_str());
    }
    write_doc(&new_file, &doc)?;
    // 2. The old file goes.
    fs::remove_file(&s.file).with_context(|| format!("removing {}", s.file.display()))?;
    // 3. The image follows, and the new file stops naming the old image.
    if renames_image {
        if overlay {
            // The layer (upper, work, pin) moves in one rename; the mount point is only an
            // empty directory.
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &layer::path(&machines, &s.name),
                nix::fcntl::AT_FDCWD,
                &layer::path(&machines, new),
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .with_context(|| format!("renaming the layer of {} to {new}", s.name))?;
            layer::make_mount_point(&machines, new)?;
            let _ = std::fs::remove_dir(&old_dir);
        } else {
            // Not machined's RenameImage: it takes the image lock itself, which we hold.
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &old_dir,
                nix::fcntl::AT_FDCWD,
                &new_dir,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .with_context(|| format!("renaming image {} to {new}", s.name))?;
        }
        // Inside the image: its etc/hostname may be a symlink to a host file.
        let stage = crate::storage::layout::stage_dir(&ctx.paths);
        if let Err(e) = layer::with_root(&machines, new, overlay, &stage, |r| {
            crate::storage::image::set_hostname(r, new)
        }) {
            eprintln!("warning: {new}: hostname not changed: {e:#}");
        }
        doc.remove("image");
        write_doc(&new_file, &doc)?;
    }
    bus.reload_config()?;
    println!("{} renamed to {new}", s.name);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    pub old: String,
    pub new: String,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self.old, &self.new)
    }
}
