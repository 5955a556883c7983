use std::process::ExitCode;

use super::Ctx;
use crate::error::NotImplemented;

pub fn run(_ctx: &Ctx, _count: &str, _dry_run: bool) -> anyhow::Result<ExitCode> {
    Err(NotImplemented("build").into())
}
