//! `net-info [NAME] [--json]`: slots' addresses, live from each running slot's network
//! namespace, as configured for a stopped one.

use std::process::ExitCode;

use slot_config::Slot;

use super::Ctx;
use crate::config::targets;
use crate::dbus::{running, Bus};
use crate::net::netlink::{self, Netlink};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        info(ctx, self.name.as_deref(), self.json)
    }
}

/// One address. The JSON keys are the field names, in the alphabetical order `net-info
/// --json` has always printed.
#[derive(serde::Serialize)]
struct Row {
    address: String,
    interface: String,
    live: bool,
    slot: String,
}

impl Row {
    fn new(s: &Slot, interface: &str, address: String, live: bool) -> Row {
        Row {
            address,
            interface: interface.to_string(),
            live,
            slot: s.name.clone(),
        }
    }
}

fn info(ctx: &Ctx, name: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let slots: Vec<&Slot> = match name {
        Some(n) => vec![targets::resolve_one(&cfg, n)?],
        None => cfg.slots.iter().collect(),
    };
    let bus = Bus::system()?;
    let leaders = running::leaders(&bus, &slots)?;
    let mut rows = Vec::new();
    for (s, leader) in slots.iter().zip(leaders) {
        match leader {
            Some(l) => {
                for (ifname, addrs) in Netlink::of_pid(l)?.interfaces()? {
                    for (ip, p) in addrs.iter().filter(|(ip, _)| !netlink::is_link_local6(ip)) {
                        rows.push(Row::new(s, &ifname, format!("{ip}/{p}"), true));
                    }
                }
            }
            None => {
                for n in &s.nics {
                    for a in &n.addresses {
                        rows.push(Row::new(s, &n.slot_ifname(), a.to_string(), false));
                    }
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for r in rows {
            println!(
                "{}\t{}\t\t{}{}",
                r.slot,
                r.interface,
                r.address,
                if r.live {
                    ""
                } else {
                    "\t(configured, slot stopped)"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
