use std::process::ExitCode;

use super::Ctx;
use crate::error::NotImplemented;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// CPU% (100 = one whole CPU), or "auto".
    #[arg(short = 'c', value_name = "CPU%")]
    pub cpu: Option<String>,
    /// CPU set, e.g. 0-1,3, or "all".
    #[arg(short = 'n', value_name = "CPUSET")]
    pub cpus: Option<String>,
    /// Memory, with M or G, e.g. 512M.
    #[arg(short = 'm', value_name = "MEM")]
    pub memory: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[arg(required = true, value_name = "all | NUMBER | NAME")]
    pub targets: Vec<String>,
}

pub fn run(_ctx: &Ctx, _args: Args) -> anyhow::Result<ExitCode> {
    Err(NotImplemented("resource").into())
}
