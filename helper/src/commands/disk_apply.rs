//! `disk-apply NAME` (hidden): makes the slot's directory hold the disk limit the config
//! gives it, or lifts one the config no longer has. Every slot's unit runs it before the
//! slot starts (ExecStartPre=), so a `disk` edited by hand or by Ansible holds however the
//! slot is started; without a limit it only looks, and its failure does not stop the slot.

use std::path::Path;
use std::process::ExitCode;

use super::Ctx;
use crate::config::targets;
use crate::error::bad_input;
use crate::storage::quota;
use crate::sys::journal;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub slot: String,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let cfg = ctx.load();
        let s = targets::resolve_one(&cfg, &self.slot)?;
        let machines = ctx.paths.under(&cfg.host.machines_dir);
        quota::check_slot(&machines, s).map_err(|e| bad_input(e.0))?;
        match quota::apply_slot(&ctx.paths, &machines, s) {
            Ok(quota::Applied::Nothing) => {}
            Ok(done) => {
                let line = done.describe();
                journal::record("disk-apply", &s.name, true, &line);
                println!("{}: {line}", s.name);
            }
            Err(e) => {
                journal::record("disk-apply", &s.name, false, &format!("failed: {e:#}"));
                return Err(e);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// After a slot's root was made again (restore, import): the disk limit its config gives is
/// applied now; where the file system cannot hold it, the slot still arrives (its start will
/// refuse, saying how to enable quotas).
pub(crate) fn reapply(ctx: &Ctx, machines: &Path, s: &slot_config::Slot) {
    if s.resources.limits.disk_bytes().is_none() {
        return;
    }
    match quota::apply_slot(&ctx.paths, machines, s) {
        Ok(quota::Applied::Nothing) => {}
        Ok(done) => println!("{}: {}", s.name, done.describe()),
        Err(e) => println!("warning: {}: disk limit not applied: {e:#}", s.name),
    }
}
