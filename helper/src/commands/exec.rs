//! `exec NAME -- CMD...` (OverC's `cube-ctl NAME:CMD`): run a command in a running slot;
//! its exit code is ours.

use std::process::ExitCode;

use super::{running, Ctx};
use crate::dbus::Bus;
use crate::{nsexec, targets};

pub fn run(ctx: &Ctx, slot: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?;
    let bus = Bus::system()?;
    let leader = running::leader(&bus, s)?;
    drop(bus);
    let st = nsexec::run(leader, command)?;
    Ok(ExitCode::from(nsexec::exit_code(&st).clamp(0, 255) as u8))
}
