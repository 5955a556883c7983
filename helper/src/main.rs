//! `slot-os`: the helper people type. It edits /etc/slot-os (the source of truth), asks
//! systemd to reload, and drives systemd, machined and networkd over D-Bus.

mod cli;
mod commands;
mod config_edit;
mod dbus;
mod error;
mod freeze;
mod hostkeys;
mod image;
mod image_prep;
mod inroot;
mod journal;
mod limits;
mod lock;
mod netlink;
mod notify;
mod nsexec;
mod ovs;
mod ovsdb;
mod targets;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    journal::init();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("slot-os: {e:#}");
            ExitCode::from(error::exit_code(&e))
        }
    }
}
