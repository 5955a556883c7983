//! `slot-os`: the helper people type. It edits /etc/slot-os (the source of truth), asks
//! systemd to reload, and drives systemd, machined and networkd over D-Bus.

use std::process::ExitCode;

use clap::Parser;
use slot_os::{cli::Cli, error, sys::journal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    journal::init();
    quiet_on_closed_stdout();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cli.exec())) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("slot-os: {e:#}");
            ExitCode::from(error::exit_code(&e))
        }
        Err(p) if is_closed_stdout(p.as_ref()) => end_by_sigpipe(),
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// `println!` panics when stdout's reader has gone (`slot-os list | head`). Rust ignores
/// SIGPIPE, so that a write error, not the signal, ends us: the panic unwinds, and the
/// guards on the way (thaw a frozen slot, release a lock, remove a temporary file) run
/// before we end. Only the panic's message is kept off the terminal.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_closed_stdout(info.payload()) {
            default(info);
        }
    }));
}

fn is_closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.starts_with("failed printing to stdout") && text.contains("Broken pipe")
}

/// Ends as a Unix tool whose reader went away does: killed by SIGPIPE (status 141 in a
/// shell), which `set -o pipefail` scripts and `head` pipelines expect.
fn end_by_sigpipe() -> ExitCode {
    // SAFETY: restoring the default action and raising a signal in our own process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    ExitCode::from(141)
}
