use std::process::ExitCode;

use super::Ctx;
use crate::error::NotImplemented;

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Start,
    Stop,
    Suspend,
    Resume,
}

pub fn run(_ctx: &Ctx, _action: Action, _targets: &[String]) -> anyhow::Result<ExitCode> {
    Err(NotImplemented("start/stop/suspend/resume").into())
}
