//! `top [-n N] [-d SECS] [--sort cpu|mem|io|net|name]`: the running slots' CPU, memory, I/O
//! and network use, refreshed in place like `systemd-cgtop`. On a terminal it redraws every
//! `-d` seconds until `q` (or ^C); otherwise, or with `-n N`, it prints N snapshots (one
//! without `-n`) and exits. Rates are the change between two readings of the counters
//! `metrics` prints, so the first snapshot comes one interval after the start.

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use slot_config::Slot;

use super::Ctx;
use crate::dbus::{Bus, SlotUsage};
use crate::error::bad_input;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Cpu,
    Mem,
    Io,
    Net,
    Name,
}

/// One slot's line: rates over the last interval (`None`: not counted here, or no earlier
/// reading to compare with).
#[derive(Debug, Clone, Default, PartialEq)]
struct Row {
    name: String,
    state: &'static str,
    cpu_percent: Option<f64>,
    memory: Option<u64>,
    io_read: Option<f64>,
    io_write: Option<f64>,
    net_rx: Option<f64>,
    net_tx: Option<f64>,
}

/// Per second, from two readings `secs` apart; a counter that went back (the slot
/// restarted) has no rate this time.
fn rate(old: Option<u64>, new: Option<u64>, secs: f64) -> Option<f64> {
    let (o, n) = (old?, new?);
    (n >= o && secs > 0.0).then(|| (n - o) as f64 / secs)
}

fn rows(prev: &[SlotUsage], cur: &[SlotUsage], secs: f64) -> Vec<Row> {
    cur.iter()
        .filter(|s| s.leader.is_some())
        .map(|s| {
            // The same run of the slot (same leader) or nothing to compare with.
            let p = prev
                .iter()
                .find(|p| p.name == s.name && p.leader == s.leader);
            let old = |f: fn(&SlotUsage) -> Option<u64>| p.and_then(f);
            Row {
                name: s.name.clone(),
                state: s.state,
                cpu_percent: rate(old(|u| u.counters.cpu_usec), s.counters.cpu_usec, secs)
                    .map(|us| us / 10_000.0),
                memory: s.counters.memory_bytes,
                io_read: rate(
                    old(|u| u.counters.io_read_bytes),
                    s.counters.io_read_bytes,
                    secs,
                ),
                io_write: rate(
                    old(|u| u.counters.io_write_bytes),
                    s.counters.io_write_bytes,
                    secs,
                ),
                net_rx: rate(old(SlotUsage::rx_bytes), s.rx_bytes(), secs),
                net_tx: rate(old(SlotUsage::tx_bytes), s.tx_bytes(), secs),
            }
        })
        .collect()
}

fn sort(rows: &mut [Row], by: SortBy) {
    let key = |r: &Row| -> f64 {
        let sum = |a: Option<f64>, b: Option<f64>| a.unwrap_or(0.0) + b.unwrap_or(0.0);
        match by {
            SortBy::Cpu => r.cpu_percent.unwrap_or(-1.0),
            SortBy::Mem => r.memory.map_or(-1.0, |m| m as f64),
            SortBy::Io => sum(r.io_read, r.io_write),
            SortBy::Net => sum(r.net_rx, r.net_tx),
            SortBy::Name => 0.0,
        }
    };
    // Largest first, then by name.
    rows.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.name.cmp(&b.name))
    });
}

fn human(b: f64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", units[i])
}

fn table(rows: &[Row], total: usize, delay: Duration, interactive: bool) -> String {
    let dash = || "-".to_string();
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "slot-os top: {} of {total} slot(s) running, every {:.1} s{}\n",
        rows.len(),
        delay.as_secs_f64(),
        if interactive { " (q quits)" } else { "" }
    );
    out.push_str(&format!(
        "{:<w$}  {:<9} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
        "SLOT", "STATE", "CPU%", "MEMORY", "IO-READ/s", "IO-WRIT/s", "NET-RX/s", "NET-TX/s"
    ));
    for r in rows {
        out.push_str(&format!(
            "{:<w$}  {:<9} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            r.name,
            r.state,
            r.cpu_percent.map_or_else(dash, |c| format!("{c:.1}")),
            r.memory.map_or_else(dash, |m| human(m as f64)),
            r.io_read.map_or_else(dash, human),
            r.io_write.map_or_else(dash, human),
            r.net_rx.map_or_else(dash, human),
            r.net_tx.map_or_else(dash, human),
        ));
    }
    out
}

/// The terminal in non-canonical mode without echo (so `q` arrives alone), restored when
/// dropped. ^C still interrupts (ISIG stays on); the loop ends on it and drops this.
struct RawInput {
    saved: libc::termios,
}

impl RawInput {
    fn new() -> Option<RawInput> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is our stdin; t is a valid termios to write into.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        t.c_lflag &= !(libc::ICANON | libc::ECHO);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        // SAFETY: as above, with the changed copy.
        (unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } == 0).then_some(RawInput { saved })
    }

    /// Waits up to `d` for a key; true if it was `q`.
    fn quit_within(&self, d: Duration, stop: &AtomicBool) -> bool {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                return stop.load(Ordering::Relaxed);
            }
            let mut p = libc::pollfd {
                fd: std::io::stdin().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if n > 0 {
                let mut b = [0u8; 1];
                // SAFETY: reading one byte into a one-byte buffer.
                let r = unsafe { libc::read(p.fd, b.as_mut_ptr().cast(), 1) };
                if r <= 0 || b[0] == b'q' || b[0] == b'Q' {
                    return true;
                }
            }
        }
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        // SAFETY: restoring what tcgetattr returned on the same fd.
        unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

pub fn run(ctx: &Ctx, iterations: Option<u64>, delay: f64, by: SortBy) -> anyhow::Result<ExitCode> {
    if !(delay.is_finite() && (0.1..=3600.0).contains(&delay)) {
        return Err(bad_input(format!(
            "--delay {delay}: give seconds from 0.1 to 3600"
        )));
    }
    if iterations == Some(0) {
        return Err(bad_input("-n 0: give at least one snapshot"));
    }
    let delay = Duration::from_secs_f64(delay);
    let tty = std::io::stdout().is_terminal();
    let interactive = tty && iterations.is_none();
    let count = iterations.unwrap_or(if interactive { u64::MAX } else { 1 });
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("handling ^C")?;
    }
    let raw = if interactive && std::io::stdin().is_terminal() {
        RawInput::new()
    } else {
        None
    };
    let bus = Bus::system()?;
    // The config is read again each time: slots made or removed meanwhile come and go.
    let gather = || -> anyhow::Result<Vec<SlotUsage>> {
        let cfg = ctx.load();
        let slots: Vec<&Slot> = cfg.slots.iter().collect();
        bus.usage_of(&slots)
    };
    let mut prev = gather()?;
    let mut t_prev = Instant::now();
    for i in 0..count {
        let quit = match &raw {
            Some(r) => r.quit_within(delay, &stop),
            None => {
                std::thread::sleep(delay);
                stop.load(Ordering::Relaxed)
            }
        };
        if quit {
            break;
        }
        let cur = gather()?;
        let now = Instant::now();
        let mut rs = rows(&prev, &cur, now.duration_since(t_prev).as_secs_f64());
        sort(&mut rs, by);
        let text = table(&rs, cur.len(), delay, interactive);
        let mut out = std::io::stdout().lock();
        if tty && iterations.is_none() {
            // home + clear, in the same write as the table: no flicker
            write!(out, "\x1b[H\x1b[2J{text}")?;
        } else {
            if i > 0 {
                writeln!(out)?;
            }
            out.write_all(text.as_bytes())?;
        }
        out.flush()?;
        prev = cur;
        t_prev = now;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print N snapshots and exit (default on a terminal: refresh until `q`; otherwise 1).
    #[arg(short = 'n', long = "iterations", value_name = "N")]
    pub iterations: Option<u64>,
    /// Seconds between snapshots.
    #[arg(
        short = 'd',
        long = "delay",
        value_name = "SECS",
        default_value_t = 1.0
    )]
    pub delay: f64,
    /// Order of the slots (largest first; name: alphabetical).
    #[arg(long, value_enum, default_value_t = SortBy::Cpu)]
    pub sort: SortBy,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, self.iterations, self.delay, self.sort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::netlink::LinkCounters;
    use crate::sys::cgroup::Usage;

    fn u(name: &str, leader: u32, cpu: u64, rx: u64) -> SlotUsage {
        SlotUsage {
            name: name.into(),
            state: "RUNNING",
            leader: Some(leader),
            counters: Usage {
                cpu_usec: Some(cpu),
                ..Default::default()
            },
            links: vec![LinkCounters {
                name: format!("vb-{name}"),
                tx_bytes: rx,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn rates_from_two_readings() {
        let prev = vec![u("a", 1, 1_000_000, 0), u("b", 2, 0, 1000)];
        let mut stopped = u("c", 3, 0, 0);
        stopped.leader = None;
        // b restarted (new leader): no rate for it this time.
        let cur = vec![u("a", 1, 1_500_000, 2048), u("b", 9, 10, 1000), stopped];
        let mut rs = rows(&prev, &cur, 2.0);
        assert_eq!(rs.len(), 2, "stopped slots are not shown");
        assert_eq!(rs[0].cpu_percent, Some(25.0));
        assert_eq!(rs[0].net_rx, Some(1024.0));
        assert_eq!(rs[0].memory, None);
        assert_eq!(rs[1].cpu_percent, None);
        sort(&mut rs, SortBy::Name);
        assert_eq!(rs[0].name, "a");
        sort(&mut rs, SortBy::Cpu);
        assert_eq!(rs[0].name, "a");
        let t = table(&rs, 3, Duration::from_secs(1), false);
        assert!(t.starts_with("slot-os top: 2 of 3 slot(s) running"), "{t}");
        assert!(t.contains("\na     RUNNING     25.0        -"), "{t}");
        assert!(t.contains("1.0K"), "{t}");
    }

    #[test]
    fn counters_that_went_back_have_no_rate() {
        assert_eq!(rate(Some(10), Some(5), 1.0), None);
        assert_eq!(rate(None, Some(5), 1.0), None);
        assert_eq!(rate(Some(5), Some(15), 2.0), Some(5.0));
    }
}
