//! `exec NAME -- CMD...` (OverC's `cube-ctl NAME:CMD`): run a command in a running slot,
//! within its limits (see nsexec); its exit code is ours.

use std::process::ExitCode;

use anyhow::Context;

use super::{running, Ctx};
use crate::dbus::Bus;
use crate::{nsexec, targets};

pub fn run(ctx: &Ctx, slot: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?;
    let bus = Bus::system()?;
    let leader = running::pinned_leader(&bus, s)?;
    drop(bus);
    let code = if s.boot {
        nsexec::run_in_slot_manager(&leader, command, nsexec::Stdio3::inherit()?)?
    } else {
        let st = nsexec::command(&leader, command)?
            .status()
            .with_context(|| format!("running {:?} in the slot", command[0]))?;
        nsexec::exit_code(&st)
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
