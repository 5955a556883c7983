//! `slot-os`: the helper people type. It edits /etc/slot-os (the source of truth), asks
//! systemd to reload, and drives systemd, machined and networkd over D-Bus.

use std::process::ExitCode;

use clap::Parser;
use slot_os::{cli::Cli, error, sys::journal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    journal::init();
    match cli.exec() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("slot-os: {e:#}");
            ExitCode::from(error::exit_code(&e))
        }
    }
}
