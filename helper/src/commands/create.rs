//! `create NAME [--number N] [--image BASE] [--dry-run]`: one slot, its config file and
//! its own image (cloned from the base image, own machine-id, host name and SSH host
//! keys), without touching any other slot. `build N` owns the whole slot00..slotN-1
//! range; `create` is for one slot at a time (Ansible's `slot` module, a slot named
//! `web`). Idempotent: what exists is kept, what is missing is made. A config file that
//! exists (written by hand or by a config manager) is used as it is; only a missing image
//! is cloned for it.

use std::process::ExitCode;

use slot_config::names::{
    check_name, check_slot_name, default_slot_name, number_from_name, MAX_SLOT_NUMBER,
};
use slot_config::{Storage, HOST_FILE};

use super::Ctx;
use crate::config::edit::{new_slot_text, record_storage, validate_change, write_atomic};
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::backend;
use crate::storage::layout::{self, Layout};
use crate::storage::provision::{self, NewImage};
use crate::storage::quota;
use crate::sys::{journal, lock};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The slot's name, or a number N for slotNN.
    #[arg(value_name = "NAME | NUMBER")]
    pub name: String,
    /// The slot's number (for a slot not named slotNN; its NICs' host names carry it).
    #[arg(long, value_name = "N")]
    pub number: Option<u32>,
    /// The base image to clone (default: `image` in [defaults] of slot-os.toml).
    #[arg(long, value_name = "BASE")]
    pub image: Option<String>,
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self)
    }
}

/// The slot's name and the number it must have, from `NAME | NUMBER` and `--number`.
fn name_and_number(arg: &str, number: Option<u32>) -> anyhow::Result<(String, Option<u32>)> {
    let (name, implied) = if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        let n = arg
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_SLOT_NUMBER)
            .ok_or_else(|| {
                bad_input(format!(
                    "{arg:?} is not a slot number; use 0 to {MAX_SLOT_NUMBER}"
                ))
            })?;
        (default_slot_name(n), Some(n))
    } else {
        check_slot_name(arg)?;
        (arg.to_string(), number_from_name(arg))
    };
    if format!("{name}.toml") == HOST_FILE {
        return Err(bad_input(format!(
            "{name:?} is reserved for {HOST_FILE}; choose another slot name"
        )));
    }
    match (number, implied) {
        (Some(n), _) if n > MAX_SLOT_NUMBER => Err(bad_input(format!(
            "--number {n}: use 0 to {MAX_SLOT_NUMBER}"
        ))),
        (Some(n), Some(m)) if n != m => Err(bad_input(format!(
            "{name} is slot number {m} by its name; --number {n} contradicts it (name it otherwise, e.g. `web --number {n}`)"
        ))),
        (Some(n), _) => Ok((name, Some(n))),
        (None, m) => Ok((name, m)),
    }
}

fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let (name, number) = name_and_number(&a.name, a.number)?;
    if let Some(b) = &a.image {
        check_name("image", b)?;
    }
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    if cfg.skipped.contains(&name) {
        return Err(bad_input(format!(
            "{name}.toml has errors (see `slot-os check`); fix it before creating; nothing was changed"
        )));
    }
    let file = ctx.paths.config_dir().join(format!("{name}.toml"));
    let machines = ctx.paths.under(&cfg.host.machines_dir);

    // An existing slot is kept as it is: options that contradict it are refused, not applied.
    let (image, base, text) = match cfg.slot(&name) {
        Some(s) => {
            if let Some(n) = number.filter(|n| s.number != Some(*n)) {
                return Err(bad_input(format!(
                    "{name} exists with number {}; it is not renumbered to {n}; nothing was changed",
                    s.number_text()
                )));
            }
            let base = s.base_image.clone().unwrap_or(cfg.host.image.clone());
            if let Some(b) = a.image.as_ref().filter(|b| **b != base) {
                return Err(bad_input(format!(
                    "{name} exists with base image {base}, not {b}; nothing was changed"
                )));
            }
            (s.image_name().to_string(), base, None)
        }
        None => {
            let base = a.image.clone().unwrap_or(cfg.host.image.clone());
            let written_number = number.filter(|_| number_from_name(&name).is_none());
            let text = new_slot_text(&name, &base, written_number, None, "create");
            // Numbers and names must stay unique: judged with every other file.
            validate_change(ctx, &file, &text)?;
            (name.clone(), base, Some(text))
        }
    };
    // A new slot must not boot another slot's image.
    if let Some(other) = cfg
        .slots
        .iter()
        .find(|o| text.is_some() && o.image_name() == image)
    {
        return Err(bad_input(format!(
            "image {image} is {}'s; nothing was changed",
            other.name
        )));
    }
    let asked = cfg.slot(&name).and_then(|s| s.storage);
    let clone = !match asked {
        Some(st) => Layout::named(&machines, &image, Some(st)).exists(),
        None => {
            machines.join(&image).symlink_metadata().is_ok()
                || Layout::named(&machines, &image, Some(Storage::Overlay)).exists()
        }
    };
    if !clone && text.is_none() {
        println!("{name}: exists; nothing to change");
        return Ok(ExitCode::SUCCESS);
    }
    if clone && !machines.join(&base).is_dir() {
        return Err(bad_input(format!(
            "base image {base:?} does not exist in {}; run `slot-os make-base-image` first; nothing was changed",
            machines.display()
        )));
    }
    // What a new root is made with: the slot file's `storage`, else the host's backend.
    let storage = if clone {
        let stage = layout::stage_dir(&ctx.paths);
        let c = backend::choose(asked.or(cfg.host.backend), &machines, &stage)
            .map_err(|e| bad_input(format!("{e}; nothing was changed")))?;
        Some(c.storage)
    } else {
        None
    };
    let text = text.map(|_| {
        let written_number = number.filter(|_| number_from_name(&name).is_none());
        new_slot_text(&name, &base, written_number, storage, "create")
    });
    // A disk limit the file system cannot hold: refused before anything is made.
    let refused = quota::refused_new(&cfg, &machines, &base, &[(&name, clone)]);
    if !refused.is_empty() {
        return Err(bad_input(refused.join("\n")));
    }
    if a.dry_run {
        if text.is_some() {
            println!("would write {}", file.display());
        }
        match storage {
            Some(Storage::Overlay) => {
                println!("would make {image} an overlay root on a version of image {base}")
            }
            Some(_) => println!("would clone image {base} as {image}"),
            None => {}
        }
        return Ok(ExitCode::SUCCESS);
    }

    let bus = Bus::system()?;
    if clone {
        let made = provision::images(
            &bus,
            &ctx.paths,
            &machines,
            &base,
            &[NewImage {
                image: &image,
                hostname: &name,
                storage: storage.unwrap_or(Storage::Copy),
            }],
        );
        if let Some(Err(e)) = made.into_iter().next() {
            journal::record("create", &name, false, &format!("failed: {e:#}"));
            return Err(e.context(format!("{name}: nothing was created")));
        }
        if text.is_none() {
            record_storage(&file, storage)?;
        }
    }
    // Image first: a run killed here leaves an image without a config, which the next
    // `create` takes as built.
    if let Some(text) = &text {
        write_atomic(&file, text)?;
    }
    bus.reload_config()?;
    let mut line = match (text.is_some(), clone) {
        (true, true) if storage == Some(Storage::Overlay) => {
            format!("created (overlay root on a version of {base})")
        }
        (true, true) => format!("created (image cloned from {base})"),
        (true, false) => format!("created (its image {image} existed)"),
        _ => format!("image cloned from {base} (config kept)"),
    };
    if let Some(s) = ctx.load().slot(&name) {
        if s.resources.limits.disk_bytes().is_some() {
            match quota::apply_slot(&ctx.paths, &machines, s) {
                Ok(done) => line.push_str(&format!("; {}", done.describe())),
                Err(e) => line.push_str(&format!("; disk limit not applied: {e:#}")),
            }
        }
    }
    journal::record("create", &name, true, &line);
    println!("{name}: {line}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::name_and_number;

    #[test]
    fn names_and_numbers() {
        let ok = |a: &str, n| name_and_number(a, n).unwrap();
        assert_eq!(ok("3", None), ("slot03".into(), Some(3)));
        assert_eq!(ok("slot12", None), ("slot12".into(), Some(12)));
        assert_eq!(ok("slot12", Some(12)), ("slot12".into(), Some(12)));
        assert_eq!(ok("web", None), ("web".into(), None));
        assert_eq!(ok("web", Some(10)), ("web".into(), Some(10)));
        for (a, n) in [
            ("slot12", Some(3)),
            ("4", Some(5)),
            ("Web", None),
            ("../x", None),
            ("slot-os", None),
            ("99999", None),
            ("web", Some(10000)),
            ("", None),
        ] {
            let e = name_and_number(a, n).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2, "{a} {n:?}: {e:#}");
        }
    }
}
