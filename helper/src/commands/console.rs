//! `console N`: log in on the slot's console. machined's OpenMachineLogin hands out a
//! pseudo-terminal; `machinectl login` is the tool that drives one interactively, so we
//! hand over to it (the design allows this one hand-over).

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use super::{running, Ctx};
use crate::dbus::Bus;
use crate::targets;

pub fn run(ctx: &Ctx, slot: &str) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?;
    running::leader(&Bus::system()?, s)?;
    let err = Command::new("machinectl").arg("login").arg(&s.name).exec();
    Err(anyhow::Error::new(err).context("running machinectl login"))
}
