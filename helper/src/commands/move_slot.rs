//! `move SLOT HOST [--via CMD]`: a slot moved to another slot-os host while it runs, down
//! for seconds, never lost (fog05's migration).
//!
//! 1. copy: a level-0 dump of the running root streams to the target's `slot-os
//!    move-receive` (over `ssh HOST`, or the admin's `--via` command), into a hidden
//!    staging dir there; no slot there yet;
//! 2. changes: the slot is frozen here and a level-1 dump (what changed since 1) follows
//!    (storage::dump);
//! 3. handover: the slot is killed here while frozen (the target holds the frozen instant,
//!    crash-consistent), its TOML parked, and the target told to make its copy the slot
//!    (TOML last) and start it; it answers once the slot has booted;
//! 4. only then is the slot removed here. Downtime: freeze → booted there.
//!
//! Interrupted at any point, one whole slot survives. The phases kept on disk
//! (storage::moves::OutPhase) and what the next slot-os run here makes of a dead move
//! ([`settle_all`]; the state machine is drawn in docs/notes/move.md):
//! - copying, frozen: the slot never stopped here: thawed if frozen, the move forgotten
//!   (the target removes its staging dir itself);
//! - stopping: the target has no slot: the TOML goes back, the slot starts again here;
//! - handed-over: only the target knows: asked (over the same command), then finished or
//!   undone as it answers; while it cannot be asked the slot stays stopped here, parked;
//! - finishing: the target has it: the copy here is removed.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use slot_config::Slot;

use super::Ctx;
use crate::config::targets;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::moves::{self, OutPhase, Outgoing};
use crate::storage::wire::{self, Kind, Peer};
use crate::storage::{archive, dump, freeze, image, layer, layout, provision};
use crate::sys::{journal, lock, tool};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "NAME | NUMBER")]
    pub slot: String,
    /// The slot-os host to move it to, reached with `ssh HOST slot-os move-receive`.
    pub host: String,
    /// Reach the target with this command instead of `ssh HOST` (`slot-os move-receive`
    /// is appended; run by `sh -c`), e.g. `--via 'ssh -p 2222 root@web2'`.
    #[arg(long, value_name = "CMD")]
    pub via: Option<String>,
    /// Keep what the slot's TOML asks of the target host (privileged, bind mounts);
    /// refused there otherwise, as an import refuses it.
    #[arg(long)]
    pub trust_config: bool,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run(ctx, &self)
    }
}

/// How long `move` waits for the target's word on a handover whose connection broke (the
/// target may still be booting the slot).
const ASK_LIMIT: Duration = Duration::from_secs(180);
/// How long any other command waits for it before going on with its own work.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// The command that reaches the target's receiver.
fn peer_argv(host: &str, via: Option<&str>) -> anyhow::Result<Vec<String>> {
    const REMOTE: [&str; 2] = ["slot-os", "move-receive"];
    if host.is_empty()
        || host.starts_with('-')
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad_input(format!(
            "{host:?} is not a host name (ssh destination)"
        )));
    }
    Ok(match via {
        Some(v) if v.trim().is_empty() => return Err(bad_input("--via needs a command")),
        Some(v) => vec![
            "sh".into(),
            "-c".into(),
            format!("{v} {}", REMOTE.join(" ")),
        ],
        None => [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=15",
            "--",
            host,
        ]
        .iter()
        .chain(REMOTE.iter())
        .map(|s| s.to_string())
        .collect(),
    })
}

fn hostname() -> String {
    crate::sys::hostname().unwrap_or_else(|| "the source".into())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The move in flight, for the signal thread: its phase and the connection's process group.
static PHASE: AtomicU8 = AtomicU8::new(0);
static PEER: AtomicU32 = AtomicU32::new(0);
static INTERRUPTED: Mutex<Option<&'static str>> = Mutex::new(None);

/// A first SIGINT/SIGTERM/SIGHUP before the handover cuts the connection, so the move
/// fails where it is and is undone here (the slot thawed, started again); after it, the
/// handover is left to finish (a second signal ends us; the next run settles it).
fn on_signal(name: &'static str) {
    if PHASE.load(Ordering::SeqCst) >= OutPhase::HandedOver as u8 {
        eprintln!("slot-os: {name}: the slot is being handed over; the move finishes in a moment ({name} again ends slot-os now; the next slot-os run settles the move)");
        return;
    }
    *INTERRUPTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
    let pgid = PEER.load(Ordering::SeqCst);
    if pgid > 0 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[derive(serde::Serialize, Default, Debug)]
struct Report {
    slot: String,
    host: String,
    running: bool,
    /// Frozen here → booted there.
    downtime_ms: Option<u64>,
    copy_bytes: u64,
    copy_ms: u64,
    changes_bytes: Option<u64>,
    changes_ms: Option<u64>,
    boot_ms: Option<u64>,
    /// Directories renamed during the copy, sent whole with the changes.
    redumped_dirs: usize,
}

fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let argv = peer_argv(&a.host, a.via.as_deref())?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let bus = Bus::system()?;
    settle_all(ctx, &bus);
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, &a.slot)?.clone();
    if let Some(m) = moves::load::<Outgoing>(&moves::out_marker(&ctx.paths, &s.name)) {
        return Err(bad_input(format!(
            "{}: an earlier move to {} is not settled yet ({} has not answered); the next slot-os run here asks it again; nothing was changed",
            s.name, m.host, m.host
        )));
    }
    let image = s.image_name().to_string();
    if let Some(o) = cfg.slots.iter().find(|o| {
        o.name != s.name && (o.image_name() == image || o.base_image.as_deref() == Some(&image))
    }) {
        return Err(bad_input(format!(
            "{}: its image {image} is shared with {}; a move carries a slot's own image",
            s.name, o.name
        )));
    }
    if image == cfg.host.image {
        return Err(bad_input(format!(
            "{}: its image {image} is the base image; a move carries a slot's own image",
            s.name
        )));
    }
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let lay = layout::Layout::existing(&machines, &s)?;
    let root = lay.image.clone();
    let st = bus.unit_status(&s.unit())?;
    let running = match st.active_state.as_str() {
        "active" if st.is_frozen() => {
            return Err(bad_input(format!(
                "{} is suspended; resume it first (slot-os resume {})",
                s.name,
                s.arg()
            )))
        }
        "active" => true,
        "inactive" | "failed" => false,
        other => {
            return Err(bad_input(format!(
                "{} is {other}; move it once it has started or stopped",
                s.name
            )))
        }
    };
    // A stopped slot stays stopped while it moves: nspawn cannot boot a locked image.
    let image_lock = match running {
        true => None,
        false => Some(lock::ImageLock::images(&[&root], "let it finish first")?),
    };
    let hello = wire::Hello {
        protocol: wire::PROTOCOL,
        id: image::new_machine_id()?,
        slot: s.name.clone(),
        number: s.number,
        toml: fs::read_to_string(&s.file)
            .with_context(|| format!("reading {}", s.file.display()))?,
        running,
        trust_config: a.trust_config,
        source: hostname(),
    };
    let mut peer = Peer::spawn(&argv)?;
    let reached =
        wire::send(peer.tx()?, Kind::Hello, &hello).and_then(|()| wire::next_frame(&mut peer.rx));
    match reached {
        Ok((Kind::Ready, _)) => {}
        Ok((Kind::Refused, p)) => {
            let r: wire::Refused = wire::decode(Kind::Refused, &p)?;
            let msg = format!(
                "{}: {} refused it: {}; nothing was changed",
                s.name,
                a.host,
                r.message.trim_end_matches("; nothing was changed")
            );
            return Err(if r.bad_input {
                bad_input(msg)
            } else {
                anyhow!(msg)
            });
        }
        Ok((k, _)) => bail!("{}: {} answered {k:?}; nothing was changed", s.name, a.host),
        Err(e) => bail!(
            "{}: could not reach slot-os on {} ({}): {e:#}; nothing was changed",
            s.name,
            a.host,
            argv.join(" ")
        ),
    }
    let mut mv = Move {
        ctx,
        bus: &bus,
        s,
        root,
        overlay: lay.is_overlay().then_some(machines),
        image_lock,
        peer,
        marker: Outgoing {
            id: hello.id,
            slot: hello.slot,
            host: a.host.clone(),
            peer: argv,
            phase: OutPhase::Copying,
            was_running: running,
            config: PathBuf::new(),
            image: PathBuf::new(),
        },
        report: Report {
            host: a.host.clone(),
            running,
            ..Default::default()
        },
        json: a.json,
    };
    mv.marker.config = mv.s.file.clone();
    mv.marker.image = mv.root.clone();
    mv.report.slot = mv.s.name.clone();
    mv.go()
}

struct Move<'a> {
    ctx: &'a Ctx,
    bus: &'a Bus,
    s: Slot,
    /// The image directory; an overlay slot's mount point.
    root: PathBuf,
    /// An overlay slot's machines directory: its dumps read the merged tree.
    overlay: Option<PathBuf>,
    image_lock: Option<lock::ImageLock>,
    peer: Peer,
    marker: Outgoing,
    report: Report,
    json: bool,
}

/// How the handover ended.
enum Handover {
    Started(wire::Started),
    /// The target has no part of it (it refused or rolled back), with its reason.
    Declined(String),
    /// The connection broke after the target was told: only it knows.
    Lost(anyhow::Error),
}

impl Move<'_> {
    fn say(&self, line: String) {
        if !self.json {
            println!("{}: {line}", self.s.name);
            let _ = std::io::stdout().flush();
        }
    }

    fn mark(&mut self, phase: OutPhase) -> anyhow::Result<()> {
        self.marker.phase = phase;
        PHASE.store(phase as u8, Ordering::SeqCst);
        moves::save(
            &self.ctx.paths,
            &moves::out_marker(&self.ctx.paths, &self.s.name),
            &self.marker,
        )
    }

    fn snar(&self, level: u8) -> PathBuf {
        self.ctx
            .paths
            .run_dir()
            .join(format!("move-{}.snar{level}", self.s.name))
    }

    fn go(&mut self) -> anyhow::Result<ExitCode> {
        PEER.store(self.peer.pid(), Ordering::SeqCst);
        self.mark(OutPhase::Copying)?;
        freeze::take_over_signals(on_signal)?;
        let host = self.marker.host.clone();
        self.say(format!(
            "copying to {host}{}",
            if self.marker.was_running {
                " while it runs"
            } else {
                " (stopped)"
            }
        ));
        let outcome = self.transfer();
        let _ = fs::remove_file(self.snar(0));
        let _ = fs::remove_file(self.snar(1));
        let interrupted = *INTERRUPTED.lock().unwrap_or_else(|e| e.into_inner());
        let result = match outcome {
            Ok(Handover::Started(st)) => self.done(st),
            Ok(Handover::Declined(why)) => {
                self.peer.kill();
                self.undo();
                Err(anyhow!(
                    "{}: {host} could not take it ({why}); it is back here{}",
                    self.s.name,
                    self.back_state()
                ))
            }
            Ok(Handover::Lost(e)) => self.settle_lost(e),
            Err(e) => {
                let why = self.abort();
                self.undo();
                if let Some(sig) = interrupted {
                    eprintln!(
                        "slot-os: {}: interrupted ({sig}); the move was undone, it is here{}",
                        self.s.name,
                        self.back_state()
                    );
                    return Ok(ExitCode::from(128 + signal_number(sig)));
                }
                Err(e.context(format!(
                    "{}: the move to {host} failed{}; it is here{}",
                    self.s.name,
                    why.map(|w| format!(" ({host}: {w})")).unwrap_or_default(),
                    self.back_state()
                )))
            }
        };
        let line = match &result {
            Ok(_) => format!("moved to {host}"),
            Err(e) => format!("failed: {e:#}"),
        };
        journal::record("move", &self.s.name, result.is_ok(), &line);
        result
    }

    fn back_state(&self) -> &'static str {
        if self.marker.was_running {
            " and runs"
        } else {
            ", stopped"
        }
    }

    /// The copy, the changes and the handover; an error is from before the handover.
    fn transfer(&mut self) -> anyhow::Result<Handover> {
        let running = self.marker.was_running;
        let (bytes, ms) = self.send_copy()?;
        self.report.copy_bytes = bytes;
        self.report.copy_ms = ms;
        self.say(format!(
            "copy sent: {} in {:.1} s",
            mb(bytes),
            ms as f64 / 1e3
        ));
        let mut down = None;
        if running {
            self.mark(OutPhase::Frozen)?;
            let t = Instant::now();
            down = Some(t);
            let frozen =
                freeze::Frozen::new(self.bus, &self.ctx.paths, &self.s.unit()).map_err(|e| {
                    e.context(format!(
                        "{} cannot be frozen for its move; stop it and move it stopped",
                        self.s.name
                    ))
                })?;
            let tree = self.tree()?;
            let root = tree.as_ref().map_or(self.root.as_path(), |t| t.path());
            let delta = dump::level1(root, &self.snar(0), &self.snar(1))?;
            self.report.redumped_dirs = delta.redumped;
            let bytes = self.send_changes(delta)?;
            self.expect_applied()?;
            self.report.changes_bytes = Some(bytes);
            self.report.changes_ms = Some(t.elapsed().as_millis() as u64);
            self.say(format!(
                "frozen; changes sent and applied: {} in {:.2} s",
                mb(bytes),
                t.elapsed().as_secs_f64()
            ));
            self.mark(OutPhase::Stopping)?;
            self.stop_frozen(frozen)?;
        } else {
            self.mark(OutPhase::Stopping)?;
        }
        moves::park(&self.ctx.paths, &self.s.name, &self.s.file)?;
        self.mark(OutPhase::HandedOver)?;
        if let Err(e) = wire::send(self.peer.tx()?, Kind::Commit, &()) {
            return Ok(Handover::Lost(e));
        }
        Ok(match wire::next_frame(&mut self.peer.rx) {
            Ok((Kind::Started, p)) => {
                let st: wire::Started = wire::decode(Kind::Started, &p)?;
                self.report.downtime_ms = down.map(|t| t.elapsed().as_millis() as u64);
                self.report.boot_ms = Some(st.ms);
                Handover::Started(st)
            }
            Ok((Kind::RolledBack, p)) => Handover::Declined(
                wire::decode::<wire::RolledBack>(Kind::RolledBack, &p)
                    .map(|r| r.message)
                    .unwrap_or_default(),
            ),
            Ok((Kind::Refused, p)) => Handover::Declined(
                wire::decode::<wire::Refused>(Kind::Refused, &p)
                    .map(|r| r.message)
                    .unwrap_or_default(),
            ),
            Ok((k, _)) => Handover::Lost(anyhow!("the target answered {k:?}")),
            Err(e) => Handover::Lost(e),
        })
    }

    /// What a dump reads instead of the image directory: for an overlay slot its merged tree (base version and
    /// upper, IDs as on disk, as an export reads it), from a read-only overlay only this
    /// process sees. It is mounted anew for each level: an overlay caches what it has
    /// read, while the slot writes its upper through its own overlay, so the frozen level
    /// must not see the running level's cache. The target makes it a plain image.
    fn tree(&self) -> anyhow::Result<Option<layer::ReadOnlyTree>> {
        let Some(machines) = &self.overlay else {
            return Ok(None);
        };
        let stage = layout::stage_dir(&self.ctx.paths);
        let t = layer::ReadOnlyTree::mount(machines, self.s.image_name(), &stage)
            .with_context(|| format!("mounting {}'s merged tree for its move", self.s.name))?;
        Ok(Some(t))
    }

    /// Level 0 of the running root, zstd-compressed (a link is slower than `zstd -1`).
    fn send_copy(&mut self) -> anyhow::Result<(u64, u64)> {
        let t0 = Instant::now();
        let running = self.marker.was_running;
        wire::send(
            self.peer.tx()?,
            Kind::Stream,
            &wire::StreamStart {
                phase: "copy".into(),
                compressed: true,
            },
        )?;
        let tree = self.tree()?;
        let root = tree.as_ref().map_or(self.root.as_path(), |t| t.path());
        let mut tar = dump::level0(root, &self.snar(0))
            .stderr(Stdio::piped())
            .spawn()
            .context("running tar")?;
        let mut zstd = tool("zstd")
            .args(["-T0", "-1", "-q", "-c"])
            .stdin(tar.stdout.take().context("tar stdout")?)
            .stdout(Stdio::piped())
            .spawn()
            .context("running zstd (install the zstd package)")?;
        let mut from = zstd.stdout.take().context("zstd stdout")?;
        let mut w = wire::DataWriter::new(self.peer.tx()?);
        let pumped = archive::pump(&mut from, &mut w, "copied", |_| {});
        if pumped.is_err() {
            let _ = zstd.kill();
            let _ = tar.kill();
        }
        let mut err = String::new();
        if let Some(mut e) = tar.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let (ts, zs) = (tar.wait()?, zstd.wait()?);
        pumped.context("sending the copy")?;
        if !dump::succeeded(ts, running) || !zs.success() {
            bail!(
                "copying {} failed (tar {ts}, zstd {zs}): {}",
                self.root.display(),
                err.trim()
            );
        }
        let bytes = w.finish().context("sending the copy")?;
        self.expect_applied()?;
        Ok((bytes, t0.elapsed().as_millis() as u64))
    }

    /// Level 1, plain tar: small, and every millisecond of it is downtime.
    fn send_changes(&mut self, mut d: dump::Delta) -> anyhow::Result<u64> {
        wire::send(
            self.peer.tx()?,
            Kind::Stream,
            &wire::StreamStart {
                phase: "changes".into(),
                compressed: false,
            },
        )?;
        let mut w = wire::DataWriter::new(self.peer.tx()?);
        let sent = w
            .write_all(&d.front)
            .map_err(anyhow::Error::from)
            .and_then(|()| archive::pump(&mut d.stdout, &mut w, "changes", |_| {}));
        if sent.is_err() {
            let _ = d.child.kill();
        }
        let st = d.child.wait()?;
        sent.context("sending the changes")?;
        if !st.success() {
            bail!(
                "reading the changes of {} failed (tar {st})",
                self.root.display()
            );
        }
        w.finish().context("sending the changes")
    }

    fn expect_applied(&mut self) -> anyhow::Result<()> {
        match wire::next_frame(&mut self.peer.rx)? {
            (Kind::Applied, _) => Ok(()),
            (Kind::Refused, p) => {
                let r: wire::Refused = wire::decode(Kind::Refused, &p)?;
                Err(match r.bad_input {
                    true => bad_input(r.message),
                    false => anyhow!(r.message),
                })
            }
            (k, _) => bail!("the target answered {k:?}"),
        }
    }

    /// The slot ends here at its frozen instant: its init is killed while frozen (the kernel
    /// ends the rest of its PID namespace, nothing after the freeze runs: the target holds
    /// that instant), then the unit is thawed so nspawn sees its container end and cleans
    /// up as after any stop (veths, the NAT zone's bridge when it was the last slot on it).
    fn stop_frozen(&self, frozen: freeze::Frozen<'_>) -> anyhow::Result<()> {
        let unit = self.s.unit();
        let killed = crate::dbus::running::pinned_leader(self.bus, &self.s).and_then(|l| l.kill());
        if let Err(e) = killed {
            eprintln!("slot-os: warning: {e:#}; stopping it instead");
        }
        drop(frozen); // thawed: nspawn ends its dead container
        if let Some(Err(e)) = self.bus.stop_units(std::slice::from_ref(&unit)).pop() {
            return Err(e.context(format!("stopping {}", self.s.name)));
        }
        let _ = self.bus.reset_failed(&unit);
        Ok(())
    }

    /// Tells the target to drop its copy and returns why it ended the session, if it
    /// said (it may have refused while we were sending): read until it hangs up.
    fn abort(&mut self) -> Option<String> {
        if let Ok(tx) = self.peer.tx() {
            let _ = wire::write_frame(tx, Kind::Abort, b"");
        }
        self.peer.close_tx();
        let fd = self.peer.rx.as_fd().try_clone_to_owned().ok()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = fs::File::from(fd);
            let mut word = None;
            while let Ok(Some((k, p))) = wire::read_frame(&mut r) {
                word = match k {
                    Kind::Refused => wire::decode::<wire::Refused>(k, &p).map(|r| r.message).ok(),
                    Kind::RolledBack => wire::decode::<wire::RolledBack>(k, &p)
                        .map(|r| r.message)
                        .ok(),
                    _ => word,
                };
            }
            let _ = tx.send(word);
        });
        let word = rx.recv_timeout(Duration::from_secs(10)).ok().flatten();
        self.peer.kill();
        word
    }

    /// Before the handover: the slot is here as it was (thawed by Frozen's drop; started
    /// again if the move had stopped it), and the target drops its copy.
    fn undo(&mut self) {
        if let Err(e) = restore(self.ctx, self.bus, &self.marker) {
            eprintln!("slot-os: warning: {}: {e:#}", self.s.name);
        }
    }

    fn done(&mut self, st: wire::Started) -> anyhow::Result<ExitCode> {
        let host = self.marker.host.clone();
        if st.booted {
            self.say(format!(
                "stopped here; booted on {host} in {:.2} s",
                st.ms as f64 / 1e3
            ));
        }
        self.mark(OutPhase::Finishing)?;
        self.image_lock = None;
        finish(self.ctx, self.bus, &self.marker, Some(&mut self.peer))?;
        let r = &self.report;
        if self.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            let sent = r.copy_bytes + r.changes_bytes.unwrap_or(0);
            match r.downtime_ms {
                Some(d) => self.say(format!(
                    "moved to {host}: downtime {:.2} s (frozen here → booted there); sent {} (copy {}, changes {})",
                    d as f64 / 1e3,
                    mb(sent),
                    mb(r.copy_bytes),
                    mb(r.changes_bytes.unwrap_or(0))
                )),
                None => self.say(format!("moved to {host} (stopped); sent {}", mb(sent))),
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The connection broke after the handover: ask the target (a new session).
    fn settle_lost(&mut self, e: anyhow::Error) -> anyhow::Result<ExitCode> {
        self.peer.kill();
        self.image_lock = None;
        let host = self.marker.host.clone();
        match settle(self.ctx, self.bus, &self.marker, ASK_LIMIT) {
            Ok(Settled::Moved) => {
                self.say(format!("moved to {host} (the connection broke after the handover; {host} confirmed it has the slot)"));
                Ok(ExitCode::SUCCESS)
            }
            Ok(Settled::Back) => Err(e.context(format!(
                "{}: the handover to {host} did not happen; it is back here{}",
                self.s.name,
                self.back_state()
            ))),
            Ok(Settled::Undecided(why)) => Err(e.context(format!(
                "{}: the connection to {host} broke during the handover and {host} cannot say yet whether it has the slot ({why}); it stays stopped here, its config parked in {}; the next slot-os run here asks again",
                self.s.name,
                moves::dir(&self.ctx.paths).display()
            ))),
            Err(e2) => Err(e2.context(format!("{}: settling the move to {host}", self.s.name))),
        }
    }
}

fn signal_number(name: &str) -> u8 {
    match name {
        "SIGINT" => 2,
        "SIGHUP" => 1,
        _ => 15,
    }
}

/// What settling a move here came to.
enum Settled {
    /// The target has the slot; nothing of it is left here.
    Moved,
    /// The slot is here again, as it was before the move.
    Back,
    /// The target could not say yet: nothing was changed.
    Undecided(String),
}

/// The slot as it was before the move: its TOML back, started again if it ran.
fn restore(ctx: &Ctx, bus: &Bus, m: &Outgoing) -> anyhow::Result<()> {
    let unit = slot_config::names::unit_name(&m.slot);
    if m.phase >= OutPhase::Stopping {
        // Killed, or about to be: down for sure (its nspawn may still be ending) first.
        let _ = bus.stop_units(std::slice::from_ref(&unit));
        let _ = bus.reset_failed(&unit);
    } else if bus.unit_status(&unit)?.is_frozen() {
        let _ = bus.thaw_units(std::slice::from_ref(&unit));
    }
    if moves::unpark(&ctx.paths, &m.slot, &m.config)? {
        bus.reload_config()?;
    }
    if m.was_running {
        if let Some(Err(e)) = bus.start_units(&[unit]).pop() {
            return Err(e.context(format!("starting {} again", m.slot)));
        }
    }
    moves::remove(&moves::out_marker(&ctx.paths, &m.slot))
}

/// The target has the slot: the copy here goes, then the record (on both hosts).
fn finish(ctx: &Ctx, bus: &Bus, m: &Outgoing, peer: Option<&mut Peer>) -> anyhow::Result<()> {
    if m.image.symlink_metadata().is_ok() {
        let machines = m.image.parent().context("image path")?;
        let name = m.image.file_name().context("image path")?.to_string_lossy();
        provision::remove_image(bus, &ctx.paths, machines, &name)?;
    }
    moves::remove(&moves::parked(&ctx.paths, &m.slot))?;
    bus.reload_config()?;
    let forget = wire::MoveRef {
        id: m.id.clone(),
        slot: m.slot.clone(),
    };
    let told = match peer {
        Some(p) => p
            .tx()
            .map_err(anyhow::Error::from)
            .and_then(|tx| wire::send(tx, Kind::Forget, &forget)),
        None => Peer::ask(&m.peer, Kind::Forget, &forget, Duration::from_secs(60)).map(|_| ()),
    };
    if let Err(e) = told {
        eprintln!(
            "slot-os: note: {} keeps a record of {}'s move until told it is finished ({e:#}); harmless",
            m.host, m.slot
        );
    }
    moves::remove(&moves::out_marker(&ctx.paths, &m.slot))
}

/// What a move whose `slot-os move` is gone (or lost its connection) becomes; see the
/// module doc. Call with the helper lock held.
fn settle(ctx: &Ctx, bus: &Bus, m: &Outgoing, limit: Duration) -> anyhow::Result<Settled> {
    match m.phase {
        OutPhase::Copying | OutPhase::Frozen | OutPhase::Stopping => {
            restore(ctx, bus, m)?;
            Ok(Settled::Back)
        }
        OutPhase::HandedOver => {
            let q = wire::MoveRef {
                id: m.id.clone(),
                slot: m.slot.clone(),
            };
            let (k, p) = match Peer::ask(&m.peer, Kind::Query, &q, limit) {
                Ok(a) => a,
                Err(e) => return Ok(Settled::Undecided(format!("{e:#}"))),
            };
            let st: wire::Status = match k {
                Kind::Status => wire::decode(k, &p)?,
                other => return Ok(Settled::Undecided(format!("it answered {other:?}"))),
            };
            match st.state.as_str() {
                "have" => {
                    finish(ctx, bus, m, None)?;
                    Ok(Settled::Moved)
                }
                "gone" => {
                    restore(ctx, bus, m)?;
                    Ok(Settled::Back)
                }
                _ => Ok(Settled::Undecided(st.detail)),
            }
        }
        OutPhase::Finishing => {
            finish(ctx, bus, m, None)?;
            Ok(Settled::Moved)
        }
    }
}

/// Settles every move from this host whose `slot-os move` died; run by any slot-os that
/// can take the helper lock (see cli.rs), and by `move` itself.
pub fn settle_all(ctx: &Ctx, bus: &Bus) {
    let out = moves::outgoing(&ctx.paths);
    if out.is_empty() {
        return;
    }
    // A move killed while its slot was frozen left a freeze marker too.
    freeze::thaw_orphans(bus, &ctx.paths);
    for (path, m) in out {
        let Some(m) = m else {
            eprintln!(
                "slot-os: warning: {} is not a move marker; left alone",
                path.display()
            );
            continue;
        };
        let _ = fs::remove_file(ctx.paths.run_dir().join(format!("move-{}.snar0", m.slot)));
        let _ = fs::remove_file(ctx.paths.run_dir().join(format!("move-{}.snar1", m.slot)));
        let line = match settle(ctx, bus, &m, SETTLE_LIMIT) {
            Ok(Settled::Moved) => format!("moved to {} (finished by this run: its copy here was removed)", m.host),
            Ok(Settled::Back) => format!(
                "the move to {} was interrupted before the handover; it is here again{}",
                m.host,
                if m.was_running { " and runs" } else { "" }
            ),
            Ok(Settled::Undecided(why)) => format!(
                "the move to {} is undecided: {} did not answer ({why}); it stays stopped here (config parked in {})",
                m.host,
                m.host,
                moves::dir(&ctx.paths).display()
            ),
            Err(e) => format!("settling the move to {} failed: {e:#}", m.host),
        };
        eprintln!("slot-os: {}: {line}", m.slot);
        journal::record("move", &m.slot, !line.contains("failed"), &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_reached_by_ssh_or_the_given_command() {
        assert_eq!(
            peer_argv("web2", None).unwrap(),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=15",
                "--",
                "web2",
                "slot-os",
                "move-receive"
            ]
        );
        assert_eq!(
            peer_argv("web2", Some("ssh -p 2222 root@web2")).unwrap(),
            ["sh", "-c", "ssh -p 2222 root@web2 slot-os move-receive"]
        );
        for bad in ["", "-oProxyCommand=x", "a b", "a\nb"] {
            assert!(peer_argv(bad, None).is_err(), "{bad:?}");
        }
        assert!(peer_argv("web2", Some("  ")).is_err());
    }
}
