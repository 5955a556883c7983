use std::process::ExitCode;

use slot_config::render::{render_all, Content, OutDir};

use super::Ctx;
use crate::config::targets::resolve_one;
use crate::error::bad_input;

/// Prints what the generator would write for one slot (or for the host's bridges).
pub fn run(ctx: &Ctx, which: &str) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let mut single = cfg.clone();
    if which == "host" {
        single.slots.clear();
    } else {
        let slot = resolve_one(&cfg, which)?.clone();
        single.slots = vec![slot];
        single.host.bridges.clear();
    }
    let outputs = render_all(&single);
    if outputs.is_empty() {
        return Err(bad_input(format!("nothing is generated for {which:?}")));
    }
    for o in outputs {
        let dir = match o.dir {
            OutDir::Nspawn => ctx.paths.nspawn_dir(),
            OutDir::Network => ctx.paths.network_dir(),
            OutDir::Units => "/run/systemd/generator".into(),
        };
        let path = dir.join(&o.path);
        match o.content {
            Content::Text(t) => println!("==> {} <==\n{t}", path.display()),
            Content::Link(l) => println!("==> {} <==\n-> {}\n", path.display(), l.display()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "NAME | NUMBER | host")]
    pub slot: String,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self.slot)
    }
}
