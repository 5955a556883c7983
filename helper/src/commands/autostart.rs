//! `autostart on|off (all | NUMBER...)`: persisted in each slot's TOML; the generator
//! turns it into machines.target.wants links, so it takes effect at the next boot.

use std::process::ExitCode;

use toml_edit::value;

use super::Ctx;
use crate::config::edit::{read_doc, write_doc};
use crate::config::targets;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::sys::lock;

pub fn run(ctx: &Ctx, args: &[String]) -> anyhow::Result<ExitCode> {
    // Fulcon writes `autostart NAME on|off TARGETS`; NAME-like words before on/off are
    // taken as more targets, so `autostart slot00 on` works too.
    let pos = args
        .iter()
        .position(|a| a == "on" || a == "off")
        .ok_or_else(|| bad_input("say `on` or `off`: autostart on|off (all | NUMBER...)"))?;
    let on = args[pos] == "on";
    let mut names: Vec<String> = args[..pos].to_vec();
    names.extend_from_slice(&args[pos + 1..]);
    names.retain(|n| n != "autostart");

    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let slots = targets::resolve(&cfg, &names)?;
    let bus = Bus::system()?;
    for s in &slots {
        let mut doc = read_doc(&s.file)?;
        doc["autostart"] = value(on);
        write_doc(&s.file, &doc)?;
        println!("{}: autostart {}", s.name, if on { "on" } else { "off" });
    }
    bus.reload_config()?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(required = true, num_args = 1.., value_name = "[NAME] on|off all|NUMBER...")]
    pub args: Vec<String>,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self.args)
    }
}
