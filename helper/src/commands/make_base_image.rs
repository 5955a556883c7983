use std::path::PathBuf;
use std::process::ExitCode;

use super::Ctx;
use crate::error::NotImplemented;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Make the image from a root filesystem tarball instead of the host.
    #[arg(long, value_name = "FILE", conflicts_with = "bootstrap")]
    pub from_tar: Option<PathBuf>,
    /// Make the image by bootstrapping a distribution (debootstrap/mmdebstrap), e.g. bookworm.
    #[arg(long, value_name = "SUITE")]
    pub bootstrap: Option<String>,
    /// Name of the image (default: the `image` of slot-os.toml, "slot-os").
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(_ctx: &Ctx, _args: Args) -> anyhow::Result<ExitCode> {
    Err(NotImplemented("make-base-image").into())
}
