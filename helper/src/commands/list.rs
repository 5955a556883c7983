//! `list [-c] [--json] [NAME]`: Fulcon's columns, one line per configured slot in number
//! order, from the config and from what systemd and machined report:
//!
//! ```text
//!  0 : RUNNING   slot00  66 %  0-1  512M  A  slot-os  overlay  172.17.0.2
//! ```
//!
//! It has to be fast (it is typed in a loop, and `-c` redraws every second): one bus
//! connection, no process per slot, and every query in flight at once — systemd's state of
//! all units in one ListUnitsByNames call (plus FreezerState of the running ones), then
//! machined's machines and the running slots' addresses.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use slot_config::{Config, Slot};

use super::Ctx;
use crate::config::targets;
use crate::dbus::running;
use crate::dbus::Bus;
use crate::storage::layout::{self, Described};
use crate::storage::quota;

struct Row<'a> {
    slot: &'a Slot,
    storage: Described,
    state: &'static str,
    active_state: String,
    sub_state: String,
    freezer_state: String,
    leader: Option<u32>,
    addresses: Vec<String>,
    /// What the slot's disk quota reports, where one tracks its directory.
    disk: Option<quota::Usage>,
}

/// Addresses worth showing: not link-local (fe80::/10, 169.254/16), not loopback.
fn shown(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_loopback(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80 && !v6.is_loopback(),
    }
}

fn gather<'a>(bus: &Bus, machines: &Path, slots: &[&'a Slot]) -> anyhow::Result<Vec<Row<'a>>> {
    let units: Vec<String> = slots.iter().map(|s| s.unit()).collect();
    let names: Vec<String> = slots.iter().map(|s| s.name.clone()).collect();
    let o = bus.slots_overview(&units, &names)?;
    let mut rows = Vec::with_capacity(slots.len());
    for (((s, st), m), addrs) in slots.iter().zip(o.states).zip(o.machines).zip(o.addresses) {
        let (a, sub, f) = match st {
            Ok(st) => (st.active_state, st.sub_state, st.freezer_state),
            Err(_) => ("unknown".to_string(), String::new(), String::new()),
        };
        rows.push(Row {
            slot: s,
            storage: layout::describe(machines, s),
            state: running::state_name(&a, &f),
            active_state: a,
            sub_state: sub,
            freezer_state: f,
            leader: m.map(|m| m.leader).filter(|l| *l > 0),
            addresses: addrs
                .iter()
                .filter(|ip| shown(ip))
                .map(|ip| ip.to_string())
                .collect(),
            disk: quota::usage(&quota::slot_dir(machines, s)),
        });
    }
    Ok(rows)
}

fn cpus_text(ctx: &Ctx, s: &Slot) -> String {
    s.resources
        .cpus
        .as_ref()
        .unwrap_or(&ctx.facts.cpus)
        .to_string()
}

fn image(s: &Slot) -> &str {
    s.base_image.as_deref().unwrap_or(s.image_name())
}

/// Fulcon's columns; with a DISK column (used/limit) after the memory when a quota
/// tracks any of the slots.
fn table(ctx: &Ctx, rows: &[Row<'_>]) -> String {
    let with_disk = rows.iter().any(|r| r.disk.is_some());
    let cols: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let s = r.slot;
            [
                s.name.clone(),
                cpus_text(ctx, s),
                s.resources.memory.to_string(),
                image(s).to_string(),
                if with_disk {
                    format!("  {}", super::disk_text(r.disk))
                } else {
                    String::new()
                },
                r.storage.text().to_string(),
            ]
        })
        .collect();
    let w = |i: usize| cols.iter().map(|c| c[i].len()).max().unwrap_or(0);
    let (wn, wc, wm, wi, wd, ws) = (w(0), w(1), w(2), w(3), w(4), w(5));
    let mut out = String::new();
    for (r, c) in rows.iter().zip(&cols) {
        let s = r.slot;
        let line = format!(
            "{:>2} : {:<9} {:<wn$}  {:>3} %  {:<wc$}  {:>wm$}{:<wd$}  {}  {:<wi$}  {:<ws$}  {}",
            s.number_text(),
            r.state,
            c[0],
            s.resources.cpu_quota,
            c[1],
            c[2],
            c[4],
            if s.autostart { "A" } else { "-" },
            c[3],
            c[5],
            r.addresses.join(" "),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What a config manager compares against (Ansible's `slot` module): the settings as
/// written (before "auto" and [defaults] are resolved), whether the slot's image exists,
/// and its configured NICs.
fn settings_json(cfg: &Config, machines: &Path, s: &Slot) -> serde_json::Value {
    serde_json::json!({
        "cpu_quota_setting": s.cpu_quota.unwrap_or(cfg.host.cpu_quota).to_string(),
        "cpus_setting": s.resources.cpus.as_ref().map_or("all".to_string(), |c| c.to_string()),
        "image_exists": machines.join(s.image_name()).symlink_metadata().is_ok() || layout::Layout::of(machines, s).exists(),
        "nics": s.nics.iter().map(|n| serde_json::json!({
            "number": n.number,
            "bridge": n.bridge,
            "addresses": n.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn to_json(ctx: &Ctx, cfg: &Config, rows: &[Row<'_>]) -> serde_json::Value {
    let machines = ctx.paths.under(&cfg.host.machines_dir);
    serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                let s = r.slot;
                let mut v = serde_json::json!({
                    "number": s.number,
                    "name": s.name,
                    "state": r.state,
                    "cpu_quota": s.resources.cpu_quota,
                    "cpus": cpus_text(ctx, s),
                    "memory": s.resources.memory.0,
                    "memory_text": s.resources.memory.to_string(),
                    "autostart": s.autostart,
                    "image": image(s),
                    "storage": r.storage.storage.map(|x| x.as_str()),
                    "storage_recorded": r.storage.recorded,
                    "base_version": r.storage.base_version,
                    "addresses": r.addresses,
                    "leader": r.leader,
                    "unit": s.unit(),
                    "active_state": r.active_state,
                    "sub_state": r.sub_state,
                    "freezer_state": r.freezer_state,
                    // {used, limit} in bytes from the slot's quota; null where none tracks it
                    "disk": r.disk,
                });
                if let (Some(o), serde_json::Value::Object(extra)) =
                    (v.as_object_mut(), settings_json(cfg, &machines, s))
                {
                    o.extend(extra);
                }
                v
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
    let mut bus: Option<Bus> = None;
    let tty = std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        let cfg = ctx.load();
        // A bad NAME is bad input (exit 2), found before the bus is touched.
        let mut slots: Vec<&Slot> = match name {
            Some(n) => vec![targets::resolve_one(&cfg, n)?],
            None => cfg.slots.iter().collect(),
        };
        slots.sort_by_key(|s| (s.number.is_none(), s.number));
        let bus = match &bus {
            Some(b) => b,
            None => bus.insert(Bus::system()?),
        };
        let machines = layout::machines_dir(&ctx.paths, &cfg.host);
        let rows = gather(bus, &machines, &slots)?;
        let text = if json {
            format!("{}\n", to_json(ctx, &cfg, &rows))
        } else {
            table(ctx, &rows)
        };
        let mut out = std::io::stdout().lock();
        if continuous && tty {
            // home + clear, in the same write as the table: no flicker
            write!(out, "\x1b[H\x1b[2J{text}")?;
        } else {
            if continuous && !first {
                writeln!(out)?;
            }
            out.write_all(text.as_bytes())?;
        }
        out.flush()?;
        drop(out);
        if !continuous {
            return Ok(ExitCode::SUCCESS);
        }
        first = false;
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep refreshing the list until ^C.
    #[arg(short = 'c', long = "continuous")]
    pub continuous: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "NAME | NUMBER")]
    pub name: Option<String>,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, self.continuous, self.json, self.name.as_deref())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_are_shown_as_written() {
        let root = std::env::temp_dir().join(format!("slot-os-list-{}", std::process::id()));
        let dir = root.join("etc/slot-os");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(root.join("var/lib/machines/slot00")).unwrap();
        std::fs::write(
            dir.join("slot-os.toml"),
            "[defaults]\ncpu_quota = \"50%\"\n[[bridge]]\nnumber = 1\naddress = \"192.168.18.1/24\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("slot00.toml"),
            "cpus = \"0\"\n[[nic]]\nnumber = 1\nbridge = 1\naddress = [\"192.168.18.2/24\"]\n",
        )
        .unwrap();
        std::fs::write(dir.join("slot01.toml"), "cpu_quota = \"auto\"\n").unwrap();
        let paths = slot_config::Paths::with_root(&root);
        let cfg = slot_config::load_dir(
            &paths,
            &slot_config::HostFacts {
                cpus: slot_config::CpuSet::from_cpus(0..2),
                mem_total: None,
            },
        );
        let machines = paths.under("/var/lib/machines");
        let get = |n: &str| super::settings_json(&cfg, &machines, cfg.slot(n).unwrap());
        assert_eq!(
            get("slot00"),
            serde_json::json!({
                "cpu_quota_setting": "50%",
                "cpus_setting": "0",
                "image_exists": true,
                "nics": [{"number": 1, "bridge": 1, "addresses": ["192.168.18.2/24"]}],
            })
        );
        assert_eq!(
            get("slot01"),
            serde_json::json!({
                "cpu_quota_setting": "auto",
                "cpus_setting": "all",
                "image_exists": false,
                "nics": [],
            })
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn link_local_addresses_are_not_shown() {
        for (a, want) in [
            ("172.17.0.2", true),
            ("fe80::1", false),
            ("febf::1", false),
            ("fd77::10", true),
            ("169.254.3.4", false),
            ("127.0.0.1", false),
        ] {
            assert_eq!(super::shown(&a.parse().unwrap()), want, "{a}");
        }
    }
}
