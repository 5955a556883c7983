use std::process::ExitCode;

use super::Ctx;
use crate::error::NotImplemented;

pub fn run(_ctx: &Ctx, _args: &[String]) -> anyhow::Result<ExitCode> {
    Err(NotImplemented("autostart").into())
}
