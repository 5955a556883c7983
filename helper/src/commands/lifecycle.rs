//! `start|stop|suspend|resume (all | N... | NAME...) [-j N]`: systemd1 StartUnit / StopUnit /
//! FreezeUnit / ThawUnit on `systemd-nspawn@NAME.service`, many slots at once on one bus
//! connection (at most `-j` jobs under way, default 4 per CPU), each
//! waiting for its own job. One line per slot; exit 1 if any failed.
//!
//! What a slot is already doing decides what is left to do: starting a running slot,
//! stopping a stopped one and resuming one that is not suspended are no-ops that succeed;
//! suspending a slot that is not running fails for that slot. `stop` of a suspended slot
//! thaws it first (see `Bus::stop_units`), so it cannot hang.

use std::process::ExitCode;
use std::time::Instant;

use slot_config::Slot;

use super::Ctx;
use crate::config::targets;
use crate::dbus::{Bus, UnitStatus};
use crate::sys::journal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Suspend,
    Resume,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
        }
    }
    fn done(self) -> &'static str {
        match self {
            Action::Start => "started",
            Action::Stop => "stopped",
            Action::Suspend => "suspended",
            Action::Resume => "resumed",
        }
    }
}

/// What to do with one slot, given what systemd says about it now.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Queue the operation.
    Act,
    /// Nothing to do; print this instead of "started" etc.
    Skip(&'static str),
    /// Refuse, with this reason.
    Fail(String),
}

fn plan(action: Action, slot: &Slot, st: Option<&UnitStatus>) -> Plan {
    // No state (systemd did not answer for this unit): just try; the job will tell.
    let Some(st) = st else { return Plan::Act };
    let up = matches!(st.active_state.as_str(), "active" | "reloading");
    let frozen = st.is_frozen();
    match action {
        Action::Start if up && frozen => {
            Plan::Skip("already running (suspended: `slot-os resume` thaws it)")
        }
        Action::Start if up => Plan::Skip("already running"),
        // activating: StartUnit joins the running start job and waits for the boot.
        Action::Start => Plan::Act,
        Action::Stop if matches!(st.active_state.as_str(), "inactive" | "failed") => {
            Plan::Skip("already stopped")
        }
        Action::Stop => Plan::Act,
        Action::Suspend if frozen => Plan::Skip("already suspended"),
        Action::Suspend if !up => Plan::Fail(format!(
            "not running ({}); nothing to suspend (start it with `slot-os start {}`)",
            st.active_state,
            slot.arg()
        )),
        Action::Suspend => Plan::Act,
        Action::Resume if frozen => Plan::Act,
        Action::Resume => Plan::Skip("not suspended; nothing to resume"),
    }
}

/// Warns (stderr) if the slots running after this start would pass a kernel limit.
fn warn_limits(bus: &Bus, cfg: &slot_config::Config, todo: &[String]) {
    let booted: Vec<String> = cfg
        .slots
        .iter()
        .filter(|s| s.boot)
        .map(|s| s.unit())
        .collect();
    let up = bus
        .unit_states(&booted)
        .iter()
        .zip(&booted)
        .filter(|(st, u)| {
            todo.contains(u)
                || st.as_ref().is_ok_and(|s| {
                    matches!(
                        s.active_state.as_str(),
                        "active" | "activating" | "reloading"
                    )
                })
        })
        .count() as u64;
    if let Some(w) = crate::sys::limits::inotify_warning_here(up) {
        eprintln!("slot-os: warning: {w}");
    }
}

pub fn run(
    ctx: &Ctx,
    action: Action,
    targets: &[String],
    jobs: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    // Bad input (exit 2) before anything is touched.
    let slots = targets::resolve(&cfg, targets)?;
    let units: Vec<String> = slots.iter().map(|s| s.unit()).collect();
    let bus = Bus::system()?;
    let t0 = Instant::now();

    let states = bus.unit_states(&units);
    let plans: Vec<Plan> = slots
        .iter()
        .zip(&states)
        .map(|(s, st)| plan(action, s, st.as_ref().ok()))
        .collect();
    let todo: Vec<String> = units
        .iter()
        .zip(&plans)
        .filter(|(_, p)| **p == Plan::Act)
        .map(|(u, _)| u.clone())
        .collect();
    if action == Action::Start {
        // A disk limit the file system cannot hold: refused before any slot starts (the
        // unit's disk-apply would fail each start anyway, with less to say).
        let machines = ctx.paths.under(&cfg.host.machines_dir);
        let refused: Vec<String> = slots
            .iter()
            .zip(&plans)
            .filter(|(_, p)| **p == Plan::Act)
            .filter_map(|(s, _)| {
                crate::storage::quota::check_slot(&machines, s)
                    .err()
                    .map(|e| format!("{}: {e}", s.name))
            })
            .collect();
        if !refused.is_empty() {
            return Err(crate::error::bad_input(refused.join("\n")));
        }
        warn_limits(&bus, &cfg, &todo);
    }
    // -j 0: every job at once (systemd queues them all itself).
    let jobs = match jobs {
        None => crate::dbus::default_jobs(),
        Some(0) => usize::MAX,
        Some(j) => j,
    };
    let mut results = match action {
        Action::Start => bus.start_units_at_most(&todo, jobs),
        Action::Stop => bus.stop_units_at_most(&todo, jobs),
        Action::Suspend => bus.freeze_units_at_most(&todo, jobs),
        Action::Resume => bus.thaw_units_at_most(&todo, jobs),
    }
    .into_iter();
    if action == Action::Stop {
        // An overlay slot's root unit stops by itself once its slot is stopped
        // (StopWhenUnneeded=yes), but after the slot's stop job: waited for here, so that
        // when `stop` returns the root is unmounted and its layer may be changed.
        let roots: Vec<String> = slots
            .iter()
            .filter(|s| s.is_overlay())
            .map(|s| s.root_unit())
            .collect();
        for (u, r) in roots.iter().zip(bus.stop_units(&roots)) {
            if let Err(e) = r {
                eprintln!("slot-os: warning: stopping {u}: {e:#}");
            }
        }
    }

    let mut failed = 0;
    let mut out = String::new();
    for (s, p) in slots.iter().zip(plans) {
        let line = match p {
            Plan::Act => match results.next() {
                Some(Ok(())) => action.done().to_string(),
                Some(Err(e)) => {
                    failed += 1;
                    format!("failed: {e:#}")
                }
                None => {
                    failed += 1;
                    "failed: no result from systemd".to_string()
                }
            },
            Plan::Skip(why) => why.to_string(),
            Plan::Fail(why) => {
                failed += 1;
                format!("failed: {why}")
            }
        };
        journal::record(action.name(), &s.name, !line.starts_with("failed"), &line);
        out.push_str(&format!("{}: {line}\n", s.name));
    }
    print!("{out}");
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

/// Slots to act on: `all`, slot numbers (`0`), or slot names (`slot00`).
#[derive(clap::Args, Debug, Clone)]
pub struct Targets {
    #[arg(required = true, value_name = "all | NUMBER | NAME")]
    pub targets: Vec<String>,
    /// Start, stop, suspend or resume at most N slots at once (default: 4 per CPU; 0: all at
    /// once; suspend and resume: at most 32 at once).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
}

impl Targets {
    pub fn exec(self, ctx: &Ctx, action: Action) -> anyhow::Result<ExitCode> {
        run(ctx, action, &self.targets, self.jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(active: &str, freezer: &str) -> UnitStatus {
        UnitStatus {
            active_state: active.into(),
            freezer_state: freezer.into(),
            ..Default::default()
        }
    }

    fn slot() -> Slot {
        let root = std::env::temp_dir().join(format!("slot-os-lifecycle-{}", std::process::id()));
        let dir = root.join("etc/slot-os");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("slot03.toml"), "").unwrap();
        let cfg = slot_config::load_dir(
            &slot_config::Paths::with_root(&root),
            &slot_config::HostFacts {
                cpus: slot_config::CpuSet::from_cpus(0..2),
                mem_total: None,
            },
        );
        std::fs::remove_dir_all(&root).unwrap();
        cfg.slots.into_iter().next().unwrap()
    }

    #[test]
    fn what_is_left_to_do() {
        let s = slot();
        let p = |a, act: &str, fr: &str| plan(a, &s, Some(&st(act, fr)));
        assert_eq!(p(Action::Start, "inactive", "running"), Plan::Act);
        assert_eq!(p(Action::Start, "failed", "running"), Plan::Act);
        assert_eq!(p(Action::Start, "activating", "running"), Plan::Act);
        assert!(matches!(
            p(Action::Start, "active", "running"),
            Plan::Skip(_)
        ));
        assert!(matches!(
            p(Action::Stop, "inactive", "running"),
            Plan::Skip(_)
        ));
        assert_eq!(p(Action::Stop, "active", "frozen"), Plan::Act);
        assert_eq!(p(Action::Stop, "deactivating", "running"), Plan::Act);
        assert_eq!(p(Action::Suspend, "active", "running"), Plan::Act);
        // hybrid hosts report no freezer state at all: try, and say why it failed
        assert_eq!(p(Action::Suspend, "active", ""), Plan::Act);
        assert!(matches!(
            p(Action::Suspend, "active", "frozen"),
            Plan::Skip(_)
        ));
        match p(Action::Suspend, "inactive", "running") {
            Plan::Fail(why) => assert!(why.contains("slot-os start 3"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(p(Action::Resume, "active", "frozen"), Plan::Act);
        assert!(matches!(
            p(Action::Resume, "active", "running"),
            Plan::Skip(_)
        ));
        assert!(matches!(
            p(Action::Resume, "inactive", "running"),
            Plan::Skip(_)
        ));
        assert_eq!(plan(Action::Stop, &s, None), Plan::Act);
    }
}
