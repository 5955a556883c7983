use std::process::ExitCode;

use super::Ctx;
use crate::error::NotImplemented;

pub fn run(_ctx: &Ctx, _continuous: bool, _json: bool, _name: Option<&str>) -> anyhow::Result<ExitCode> {
    Err(NotImplemented("list").into())
}
