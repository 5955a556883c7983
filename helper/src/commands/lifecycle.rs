//! `start|stop|suspend|resume (all | N... | NAME...)`: one D-Bus call per slot, all slots
//! at once, each waiting for its own job; one line per slot; exit 1 if any failed.

use std::process::ExitCode;
use std::time::Instant;

use super::Ctx;
use crate::dbus::Bus;
use crate::targets;

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Start,
    Stop,
    Suspend,
    Resume,
}

impl Action {
    fn done(self) -> &'static str {
        match self {
            Action::Start => "started",
            Action::Stop => "stopped",
            Action::Suspend => "suspended",
            Action::Resume => "resumed",
        }
    }
}

pub fn run(ctx: &Ctx, action: Action, args: &[String]) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let slots = targets::resolve(&cfg, args)?;
    let units: Vec<String> = slots.iter().map(|s| s.unit()).collect();
    let bus = Bus::system()?;
    let t0 = Instant::now();
    let results = match action {
        Action::Start => bus.start_units(&units),
        Action::Stop => bus.stop_units(&units),
        Action::Suspend => bus.freeze_units(&units),
        Action::Resume => bus.thaw_units(&units),
    };
    let mut failed = 0;
    for (s, r) in slots.iter().zip(results) {
        match r {
            Ok(()) => println!("{}: {}", s.name, action.done()),
            Err(e) => {
                failed += 1;
                println!("{}: failed: {e:#}", s.name);
            }
        }
    }
    if slots.len() > 1 {
        println!(
            "{} of {} slot(s) {} in {:.2} s",
            slots.len() - failed,
            slots.len(),
            action.done(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
