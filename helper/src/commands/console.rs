//! `console N`: a root shell in the slot for the host's root, with no password: images
//! have no password hashes (make-base-image locks them all), so a login prompt would
//! let nobody in. machined's OpenMachineShell starts the shell through the slot's own
//! service manager (so it runs in the slot's cgroup, with its limits) on a new
//! pseudo-terminal of the slot, and hands back the pty's master. Forwarding a pty to the
//! caller's terminal well (raw mode, window size changes, hangups, the `^]^]^]` escape)
//! is what `machinectl shell` does around that same call, so we hand over to it rather
//! than write a second pty forwarder (the design allows this one hand-over).
//! `--login` keeps the getty login of `machinectl login`, for slots whose users have
//! passwords of their own.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use super::Ctx;
use crate::config::targets;
use crate::dbus::running;
use crate::dbus::Bus;

pub fn run(ctx: &Ctx, slot: &str, login: bool) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?;
    running::leader(&Bus::system()?, s)?;
    let mut c = Command::new("machinectl");
    if login {
        c.arg("login").arg(&s.name);
    } else {
        c.arg("shell").arg(format!("root@{}", s.name));
    }
    let err = c.exec();
    Err(anyhow::Error::new(err).context("running machinectl"))
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "NUMBER | NAME")]
    pub slot: String,
    /// Log in on the slot's getty instead (machinectl login): for slots whose users
    /// have passwords of their own.
    #[arg(long)]
    pub login: bool,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self.slot, self.login)
    }
}
