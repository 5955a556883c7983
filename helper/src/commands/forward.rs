//! `forward on|off|status`: lets slot traffic through an iptables FORWARD chain whose
//! policy is DROP (as Docker sets it). Bridged frames cross FORWARD too, because
//! br_netfilter hands them to iptables, so without this slots on one bridge (or one
//! VXLAN) stop reaching each other and the NAT network stops forwarding.
//!
//! The rules live in a chain of our own, `SLOT-OS-FORWARD`, jumped to from the top of
//! FORWARD, for IPv4 and IPv6; `on` is idempotent and `off` removes exactly what `on`
//! added. Run by slot-os-forward.service, which every slot with a network wants.

use std::process::ExitCode;

use crate::net::firewall::{installed_tables, CHAIN};

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ForwardAction {
    On,
    Off,
    Status,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_enum)]
    pub action: ForwardAction,
}

impl Args {
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let action = self.action;
        let tables = installed_tables();
        if tables.is_empty() {
            println!("iptables is not installed: no FORWARD chain to open; nothing to do");
            return Ok(ExitCode::SUCCESS);
        }
        for t in &tables {
            match action {
                ForwardAction::On => t.on()?,
                ForwardAction::Off => t.off()?,
                ForwardAction::Status => println!("{}", t.status()?),
            }
        }
        match action {
            ForwardAction::On => println!("slot traffic accepted in FORWARD ({CHAIN})"),
            ForwardAction::Off => println!("{CHAIN} removed"),
            ForwardAction::Status => {}
        }
        Ok(ExitCode::SUCCESS)
    }
}
