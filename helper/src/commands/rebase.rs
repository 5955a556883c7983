//! `rebase (all | N...)`: stopped overlay slots move onto the newest version of their base
//! image (a new version is made first if the base changed). Each slot keeps its upper: its
//! own files, and its deletions (whiteouts), stay above the new base; a file the slot
//! changed hides the new base's version of it.
//!
//! A running slot is refused: its lower must not change under it (that is the point of
//! versions), and a pin changed under it would only take effect at its next start, which
//! nobody would expect. Stop it, rebase, start it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::Ctx;
use crate::config::targets;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::layout::{self, Layout};
use crate::storage::{layer, lower};
use crate::sys::journal;
use crate::sys::lock::{self, ImageLock};

/// One line per slot, also in the journal (OPERATION=rebase).
fn report(slot: &str, ok: bool, line: String) {
    journal::record("rebase", slot, ok, &line);
    println!("{slot}: {line}");
}

pub fn run(ctx: &Ctx, args: &[String]) -> anyhow::Result<ExitCode> {
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let slots = targets::resolve(&cfg, args)?;
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let bus = Bus::system()?;
    let states = bus.unit_statuses(&slots.iter().map(|s| s.unit()).collect::<Vec<_>>());
    let mut refused = 0;
    let mut failed = 0;
    // One current version per base image, made at most once.
    let mut versions: BTreeMap<String, Result<lower::Version, String>> = BTreeMap::new();
    for (s, st) in slots.iter().zip(states) {
        if !s.is_overlay() {
            report(
                &s.name,
                false,
                format!(
                    "not an overlay slot ({}); `slot-os backup-restore {} {}` resets it to the base image instead",
                    s.storage.map_or("a plain image".to_string(), |x| format!("storage = \"{x}\"")),
                    s.arg(),
                    cfg.host.image
                ),
            );
            refused += 1;
            continue;
        }
        let active = st.map(|st| st.active_state).unwrap_or_default();
        if active != "inactive" && active != "failed" {
            report(
                &s.name,
                false,
                format!(
                    "{active}; stop it first (slot-os stop {}): a running slot's base never changes under it",
                    s.arg()
                ),
            );
            refused += 1;
            continue;
        }
        let base = s
            .base_image
            .clone()
            .unwrap_or_else(|| cfg.host.image.clone());
        let v = versions
            .entry(base.clone())
            .or_insert_with(|| match lower::current(&machines, &base) {
                Ok((v, new)) => {
                    if new {
                        println!("{base}: new read-only version {v}");
                    }
                    Ok(v)
                }
                Err(e) => Err(e.to_string()),
            })
            .clone();
        let v = match v {
            Ok(v) => v,
            Err(e) => {
                report(&s.name, false, format!("failed: {e}"));
                failed += 1;
                continue;
            }
        };
        let lay = Layout::of(&machines, s);
        let Some(dir) = lay.layer.as_deref() else {
            continue;
        };
        let r = (|| -> anyhow::Result<Option<lower::Version>> {
            // As nspawn does: a start meanwhile fails cleanly instead of mounting a root
            // whose pin is being changed.
            let _image = ImageLock::images(&[&lay.image], "stop it before rebasing")?;
            crate::dbus::running::require_stopped(&bus, s, "before rebasing")?;
            let old = layer::pin(dir)?;
            if old == v {
                return Ok(None);
            }
            layer::settle_stopped(&bus, &machines, s)?;
            layer::set_pin(dir, &v)?;
            Ok(Some(old))
        })();
        match r {
            Ok(None) => report(&s.name, true, format!("already on {v}")),
            Ok(Some(old)) => report(&s.name, true, format!("rebased from {old} to {v}")),
            Err(e) => {
                report(&s.name, false, format!("failed: {e:#}"));
                failed += 1;
            }
        }
    }
    let gone = layer::prune_versions(&machines, &ctx.paths.under(&cfg.host.backup_dir));
    if !gone.is_empty() {
        println!(
            "base versions no slot or backup uses any more, deleted: {}",
            gone.join(", ")
        );
    }
    if refused == slots.len() {
        return Err(bad_input("nothing was rebased"));
    }
    Ok(if failed + refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Slots: `all`, numbers or names.
    #[arg(required = true, value_name = "all | NUMBER | NAME")]
    pub slots: Vec<String>,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self.slots)
    }
}
