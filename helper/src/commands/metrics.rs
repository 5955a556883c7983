//! `metrics [--output FILE]`: every slot's state and counters as OpenMetrics text, for
//! node_exporter's textfile collector (`slot-os-metrics.timer` writes it every minute).
//!
//! Samples are what the kernel counts (see `sys::cgroup`, `net::netlink`); a counter this
//! host's cgroup setup does not keep (memory and I/O need the cgroup-v2 memory and io
//! controllers) has no sample for that slot, rather than a made-up 0. A slot that is not
//! running has only its state.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use slot_config::Slot;

use super::Ctx;
use crate::dbus::{Bus, SlotUsage};
use crate::error::bad_input;

/// The states `slot_os_slot_state` has a sample for, per slot (Fulcon's words, lower case).
const STATES: [&str; 6] = [
    "running",
    "suspended",
    "starting",
    "stopping",
    "stopped",
    "failed",
];

/// A label value as OpenMetrics escapes it.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: its metadata, then `rows` of (labels, value).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    unit: &str,
    help: &str,
    rows: &[(String, String)],
) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    if !unit.is_empty() {
        let _ = writeln!(out, "# UNIT {name} {unit}");
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let sample = if kind == "counter" {
        format!("{name}_total")
    } else {
        name.to_string()
    };
    for (labels, value) in rows {
        let _ = writeln!(out, "{sample}{{{labels}}} {value}");
    }
}

/// The OpenMetrics text for these slots (ending in `# EOF`).
pub fn render(slots: &[SlotUsage]) -> String {
    let mut out = String::new();
    let slot = |s: &SlotUsage| format!("slot=\"{}\"", label(&s.name));
    let per_slot = |f: &dyn Fn(&SlotUsage) -> Option<String>| -> Vec<(String, String)> {
        slots
            .iter()
            .filter_map(|s| f(s).map(|v| (slot(s), v)))
            .collect()
    };
    let states: Vec<(String, String)> = slots
        .iter()
        .flat_map(|s| {
            let now = s.state.to_ascii_lowercase();
            STATES.iter().map(move |st| {
                (
                    format!("{},state=\"{st}\"", slot(s)),
                    u8::from(now == *st).to_string(),
                )
            })
        })
        .collect();
    family(
        &mut out,
        "slot_os_slot_state",
        "gauge",
        "",
        "1 for the state the slot is in (running, suspended, starting, stopping, stopped, failed), 0 for the others.",
        &states,
    );
    family(
        &mut out,
        "slot_os_cpu_seconds",
        "counter",
        "seconds",
        "CPU time used by the slot's unit (cgroup cpu.stat usage_usec, or cpuacct.usage).",
        &per_slot(&|s| {
            s.counters
                .cpu_usec
                .map(|u| format!("{}.{:06}", u / 1_000_000, u % 1_000_000))
        }),
    );
    family(
        &mut out,
        "slot_os_memory_bytes",
        "gauge",
        "bytes",
        "Memory charged to the slot's unit (cgroup memory.current); no sample without the memory controller.",
        &per_slot(&|s| s.counters.memory_bytes.map(|b| b.to_string())),
    );
    family(
        &mut out,
        "slot_os_io_read_bytes",
        "counter",
        "bytes",
        "Bytes the slot's unit read from block devices (cgroup io.stat rbytes); no sample without the io controller.",
        &per_slot(&|s| s.counters.io_read_bytes.map(|b| b.to_string())),
    );
    family(
        &mut out,
        "slot_os_io_write_bytes",
        "counter",
        "bytes",
        "Bytes the slot's unit wrote to block devices (cgroup io.stat wbytes); no sample without the io controller.",
        &per_slot(&|s| s.counters.io_write_bytes.map(|b| b.to_string())),
    );
    let links = |rx: bool| -> Vec<(String, String)> {
        slots
            .iter()
            .flat_map(|s| {
                s.links.iter().map(move |l| {
                    (
                        format!("{},interface=\"{}\"", slot(s), label(&l.name)),
                        // The host end transmits what the slot receives.
                        if rx { l.tx_bytes } else { l.rx_bytes }.to_string(),
                    )
                })
            })
            .collect()
    };
    family(
        &mut out,
        "slot_os_network_receive_bytes",
        "counter",
        "bytes",
        "Bytes the slot received on a link, counted at the link's host end (interface: its host-side name).",
        &links(true),
    );
    family(
        &mut out,
        "slot_os_network_transmit_bytes",
        "counter",
        "bytes",
        "Bytes the slot sent on a link, counted at the link's host end (interface: its host-side name).",
        &links(false),
    );
    out.push_str("# EOF\n");
    out
}

pub fn run(ctx: &Ctx, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    // Bad input before the bus is asked anything.
    let target = match output {
        None => None,
        Some(p) => {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| bad_input(format!("{}: not a file name", p.display())))?;
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            if !dir.is_dir() {
                return Err(bad_input(format!(
                    "{}: directory {} does not exist (node_exporter's textfile directory is \
                     its --collector.textfile.directory)",
                    p.display(),
                    dir.display()
                )));
            }
            // Not *.prom: the collector must never read the file half written.
            let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
            Some((p, tmp))
        }
    };
    let cfg = ctx.load();
    let mut slots: Vec<&Slot> = cfg.slots.iter().collect();
    slots.sort_by_key(|s| (s.number.is_none(), s.number));
    let bus = Bus::system()?;
    let text = render(&bus.usage_of(&slots)?);
    match target {
        None => print!("{text}"),
        Some((p, tmp)) => crate::sys::replace_file(p, &tmp, &text, Some(0o644))
            .with_context(|| format!("writing the metrics to {}", p.display()))?,
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write to FILE atomically (a temporary file in its directory, then renamed), e.g.
    /// /var/lib/prometheus/node-exporter/slot-os.prom; default: standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, self.output.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::netlink::LinkCounters;
    use crate::sys::cgroup::Usage;

    #[test]
    fn openmetrics_text() {
        let slots = vec![
            SlotUsage {
                name: "slot00".into(),
                state: "RUNNING",
                leader: Some(42),
                counters: Usage {
                    cpu_usec: Some(1_500_000),
                    memory_bytes: None,
                    io_read_bytes: Some(10),
                    io_write_bytes: Some(20),
                },
                links: vec![LinkCounters {
                    name: "vb-slot00".into(),
                    rx_bytes: 100,
                    tx_bytes: 200,
                    ..Default::default()
                }],
            },
            SlotUsage {
                name: "web-1".into(),
                state: "STOPPED",
                leader: None,
                counters: Usage::default(),
                links: Vec::new(),
            },
        ];
        let t = render(&slots);
        assert!(t.ends_with("\n# EOF\n"), "{t}");
        assert!(
            t.contains("# TYPE slot_os_cpu_seconds counter\n# UNIT slot_os_cpu_seconds seconds\n")
        );
        assert!(t.contains("slot_os_cpu_seconds_total{slot=\"slot00\"} 1.500000\n"));
        assert!(t.contains("slot_os_slot_state{slot=\"slot00\",state=\"running\"} 1\n"));
        assert!(t.contains("slot_os_slot_state{slot=\"slot00\",state=\"stopped\"} 0\n"));
        assert!(t.contains("slot_os_slot_state{slot=\"web-1\",state=\"stopped\"} 1\n"));
        // Received by the slot = sent by the host end.
        assert!(t.contains(
            "slot_os_network_receive_bytes_total{slot=\"slot00\",interface=\"vb-slot00\"} 200\n"
        ));
        assert!(t.contains(
            "slot_os_network_transmit_bytes_total{slot=\"slot00\",interface=\"vb-slot00\"} 100\n"
        ));
        assert!(t.contains("slot_os_io_write_bytes_total{slot=\"slot00\"} 20\n"));
        // Not counted here: no sample at all, and none for a stopped slot.
        assert!(!t.contains("slot_os_memory_bytes{"), "{t}");
        assert!(!t.contains("{slot=\"web-1\"}"), "{t}");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
