//! `list [-c] [--json] [NAME]`: Fulcon's columns from the config and from what systemd
//! and machined report, on one bus connection with every query in flight at once.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use slot_config::Slot;

use super::{running, Ctx};
use crate::dbus::Bus;
use crate::targets;

struct Row<'a> {
    slot: &'a Slot,
    state: &'static str,
    active_state: String,
    sub_state: String,
    freezer_state: String,
    leader: Option<u32>,
    addresses: Vec<String>,
}

fn gather<'a>(bus: &Bus, slots: &[&'a Slot]) -> anyhow::Result<Vec<Row<'a>>> {
    let units: Vec<String> = slots.iter().map(|s| s.unit()).collect();
    let states = bus.unit_statuses(&units);
    let machines = bus.list_machines()?;
    let leaders: Vec<Option<u32>> = slots
        .iter()
        .map(|s| {
            machines
                .iter()
                .find(|m| m.name == s.name)
                .map(|m| m.leader)
                .filter(|l| *l > 0)
        })
        .collect();
    let running_names: Vec<String> = slots
        .iter()
        .zip(&leaders)
        .filter(|(_, l)| l.is_some())
        .map(|(s, _)| s.name.clone())
        .collect();
    let mut addrs = bus.machines_addresses(&running_names).into_iter();
    let mut rows = Vec::with_capacity(slots.len());
    for ((s, st), leader) in slots.iter().zip(states).zip(leaders) {
        let st = st.unwrap_or_else(|_| crate::dbus::UnitStatus {
            active_state: "unknown".into(),
            ..Default::default()
        });
        let (a, sub, f) = (st.active_state, st.sub_state, st.freezer_state);
        let addresses = if leader.is_some() {
            addrs
                .next()
                .unwrap_or_default()
                .into_iter()
                .filter(|ip| !matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
                .map(|ip| ip.to_string())
                .collect()
        } else {
            Vec::new()
        };
        rows.push(Row {
            slot: s,
            state: running::state_name(&a, &f),
            active_state: a,
            sub_state: sub,
            freezer_state: f,
            leader,
            addresses,
        });
    }
    Ok(rows)
}

fn print_table(ctx: &Ctx, rows: &[Row<'_>]) {
    let mut out = std::io::stdout().lock();
    for r in rows {
        let s = r.slot;
        let cpus = s
            .resources
            .cpus
            .as_ref()
            .unwrap_or(&ctx.facts.cpus)
            .to_string();
        let _ = writeln!(
            out,
            "{:>2} : {:<9} {:<10} {:>3} %  {:<5} {:>5}  {}  {:<10} {}",
            s.number,
            r.state,
            s.name,
            s.resources.cpu_quota,
            cpus,
            s.resources.memory.to_string(),
            if s.autostart { "A" } else { "-" },
            s.base_image.as_deref().unwrap_or(s.image_name()),
            r.addresses.join(" ")
        );
    }
}

fn to_json(ctx: &Ctx, rows: &[Row<'_>]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                let s = r.slot;
                serde_json::json!({
                    "number": s.number,
                    "name": s.name,
                    "state": r.state,
                    "cpu_quota": s.resources.cpu_quota,
                    "cpus": s.resources.cpus.as_ref().unwrap_or(&ctx.facts.cpus).to_string(),
                    "memory": s.resources.memory.0,
                    "memory_text": s.resources.memory.to_string(),
                    "autostart": s.autostart,
                    "image": s.base_image.as_deref().unwrap_or(s.image_name()),
                    "addresses": r.addresses,
                    "leader": r.leader,
                    "unit": s.unit(),
                    "active_state": r.active_state,
                    "sub_state": r.sub_state,
                    "freezer_state": r.freezer_state,
                })
            })
            .collect(),
    )
}

pub fn run(
    ctx: &Ctx,
    continuous: bool,
    json: bool,
    name: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let bus = Bus::system()?;
    let tty = std::io::stdout().is_terminal();
    loop {
        let cfg = ctx.load();
        let slots: Vec<&Slot> = match name {
            Some(n) => vec![targets::resolve_one(&cfg, n)?],
            None => cfg.slots.iter().collect(),
        };
        let rows = gather(&bus, &slots)?;
        if continuous && tty {
            print!("\x1b[H\x1b[2J");
        }
        if json {
            println!("{}", to_json(ctx, &rows));
        } else {
            print_table(ctx, &rows);
        }
        if !continuous {
            return Ok(ExitCode::SUCCESS);
        }
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(1));
        if !tty {
            println!();
        }
    }
}
