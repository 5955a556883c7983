//! `exec NAME -- CMD...` (OverC's `cube-ctl NAME:CMD`): run a command in a running slot,
//! within its limits (see nsexec); its exit code is ours.

use std::process::ExitCode;

use anyhow::Context;

use super::Ctx;
use crate::config::targets;
use crate::dbus::running;
use crate::dbus::Bus;
use crate::sys::nsexec;

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

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "NAME | NUMBER")]
    pub slot: String,
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
    pub command: Vec<String>,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self.slot, &self.command)
    }
}
