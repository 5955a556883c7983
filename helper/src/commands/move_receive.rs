//! `move-receive` (hidden): the target's side of `slot-os move` (move_slot.rs), started by
//! the source over ssh or its `--via` command. It reads framed messages on stdin and
//! answers on stdout (storage::wire); what it says to people goes to stderr.
//!
//! The source is a host the admin trusts, but what arrives is checked as an import is: the
//! TOML against this host's config (name, number, bridges, host access only with
//! `--trust-config`), every tar member on its way in (tarcheck, incremental rules, no
//! device nodes).
//!
//! Phases (storage::moves::InPhase) and what a dead receiver's leftovers become at the
//! next run here (or when the source asks):
//! - receiving: the root arrives in `.slot-os-move-NAME` beside the images; no slot here.
//!   Removed.
//! - committing: the staging dir is renamed to the image's name; no TOML yet. Removed.
//! - committed: the TOML is written, the commit point: the slot is this host's. Started
//!   (if it ran on the source); a slot that cannot start is rolled back (TOML first) and
//!   the source starts its own copy again.
//! - done: kept until the source says it removed its copy (`Forget`), so it can ask.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use slot_config::names::{check_slot_name, unit_name};
use toml_edit::DocumentMut;

use super::Ctx;
use crate::config::edit::{arriving, remove_file, validate_change, write_atomic};
use crate::config::trust::host_access;
use crate::dbus::Bus;
use crate::error::{bad_input, exit_code};
use crate::storage::moves::{self, InPhase, Incoming};
use crate::storage::wire::{self, Kind, MoveRef, StreamStart};
use crate::storage::{dump, image, provision};
use crate::sys::{journal, lock, tool};

#[derive(clap::Args, Debug)]
pub struct Args {}

impl Args {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        serve(ctx)
    }
}

/// How long a question about a move waits for a receiver still at work on it.
const RECEIVER_WAIT: Duration = Duration::from_secs(120);

/// The wire's end: fd 1 as it was; fd 1 itself then points at stderr, so nothing printed
/// on the way can break a frame.
fn wire_out() -> anyhow::Result<File> {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd};
    // Close-on-exec: a child (tar, zstd) holding it would keep the source from seeing us end.
    // SAFETY: fcntl on our open stdout; the new fd is ours alone.
    let fd = unsafe { libc::fcntl(io::stdout().as_fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("dup of stdout");
    }
    // SAFETY: fd was just returned by fcntl and is owned by nothing else.
    let out = unsafe { File::from_raw_fd(fd) };
    nix::unistd::dup2_stdout(io::stderr()).context("dup2 of stderr")?;
    Ok(out)
}

fn hostname() -> String {
    crate::sys::hostname().unwrap_or_else(|| "the target".into())
}

fn serve(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut out = wire_out()?;
    let mut inp = io::stdin();
    let Some((kind, payload)) = wire::read_frame(&mut inp)? else {
        return Ok(ExitCode::from(1));
    };
    match kind {
        Kind::Hello => receive(ctx, wire::decode(kind, &payload)?, &mut inp, &mut out),
        Kind::Query => {
            let st = status(ctx, &wire::decode(kind, &payload)?)?;
            wire::send(&mut out, Kind::Status, &st)?;
            Ok(ExitCode::SUCCESS)
        }
        Kind::Forget => {
            forget(ctx, &wire::decode(kind, &payload)?)?;
            wire::send(&mut out, Kind::Status, &gone("forgotten"))?;
            Ok(ExitCode::SUCCESS)
        }
        k => bail!("a move session cannot begin with {k:?}"),
    }
}

fn gone(detail: &str) -> wire::Status {
    wire::Status {
        state: "gone".into(),
        detail: detail.into(),
    }
}

fn have(detail: &str) -> wire::Status {
    wire::Status {
        state: "have".into(),
        detail: detail.into(),
    }
}

/// What this host makes of the arriving slot: its TOML as written here, and where it goes.
struct Plan {
    text: String,
    config: PathBuf,
    image: PathBuf,
    staging: PathBuf,
}

/// Checks the slot against this host's config (as `import` does); bad input if it cannot
/// be this host's. Call with the helper lock held.
fn plan(ctx: &Ctx, hello: &wire::Hello) -> anyhow::Result<Plan> {
    let name = hello.slot.as_str();
    check_slot_name(name)?;
    let here = hostname();
    let cfg = ctx.load();
    let config = ctx.paths.config_dir().join(format!("{name}.toml"));
    if cfg.slot(name).is_some() || config.symlink_metadata().is_ok() {
        return Err(bad_input(format!("a slot named {name} exists on {here}")));
    }
    let mut doc: DocumentMut = hello
        .toml
        .parse()
        .map_err(|e| bad_input(format!("its slot.toml does not parse: {e}")))?;
    let number = arriving(&mut doc, name, hello.number);
    // It arrives as a plain image (an overlay slot's merged tree, too); a file that recorded
    // its storage records what this host makes of it.
    if doc.remove("storage").is_some() {
        let machines = ctx.paths.under(&cfg.host.machines_dir);
        let made = match image::is_btrfs(&machines) {
            true => slot_config::Storage::Btrfs,
            false => slot_config::Storage::Copy,
        };
        doc["storage"] = toml_edit::value(made.as_str());
    }
    if let Some((n, other)) = number.and_then(|n| cfg.slot_by_number(n).map(|o| (n, o))) {
        return Err(bad_input(format!(
            "slot number {n} is taken on {here} by {}",
            other.name
        )));
    }
    let text = doc.to_string();
    let after = validate_change(ctx, &config, &text)
        .with_context(|| format!("{name} does not fit {here}'s config"))?;
    if !hello.trust_config {
        let asks = after.slot(name).map(host_access).unwrap_or_default();
        if !asks.is_empty() {
            return Err(bad_input(format!(
                "its slot.toml asks for access to {here}:\n  {}\nif you trust it, move it with --trust-config",
                asks.join("\n  ")
            )));
        }
    }
    let image = ctx.paths.under(&cfg.host.machines_dir).join(name);
    if image.symlink_metadata().is_ok() {
        return Err(bad_input(format!(
            "an image named {name} exists on {here} at {}",
            image.display()
        )));
    }
    let staging = image::sibling(&image, ".slot-os-move-");
    Ok(Plan {
        text,
        config,
        image,
        staging,
    })
}

/// Why a session ended before the slot was this host's.
fn refusal(e: &anyhow::Error) -> wire::Refused {
    wire::Refused {
        message: format!("{e:#}"),
        bad_input: exit_code(e) == 2,
    }
}

fn receive(
    ctx: &Ctx,
    hello: wire::Hello,
    inp: &mut (impl Read + Send),
    out: &mut File,
) -> anyhow::Result<ExitCode> {
    let refuse = |out: &mut File, e: anyhow::Error| {
        let _ = wire::send(out, Kind::Refused, &refusal(&e));
        Err(e.context("nothing was changed here"))
    };
    if hello.protocol != wire::PROTOCOL {
        return refuse(
            out,
            bad_input(format!(
                "the source speaks move protocol {}, this slot-os {}; use the same slot-os version on both hosts",
                hello.protocol,
                wire::PROTOCOL
            )),
        );
    }
    let bus = match Bus::system() {
        Ok(b) => b,
        Err(e) => return refuse(out, e),
    };
    let held = match lock::exclusive(&ctx.paths) {
        Ok(l) => l,
        Err(e) => return refuse(out, e),
    };
    settle_all(ctx, &bus);
    let alive = match moves::alive(&ctx.paths, &hello.slot) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return refuse(
                out,
                bad_input(format!(
                    "a move of {} into {} is under way",
                    hello.slot,
                    hostname()
                )),
            )
        }
        Err(e) => return refuse(out, e),
    };
    let plan = match plan(ctx, &hello) {
        Ok(p) => p,
        Err(e) => {
            moves::forget_lock(&ctx.paths, &hello.slot, alive);
            return refuse(out, e);
        }
    };
    let mut marker = Incoming {
        id: hello.id.clone(),
        slot: hello.slot.clone(),
        source: hello.source.clone(),
        phase: InPhase::Receiving,
        staging: plan.staging.clone(),
        image: plan.image.clone(),
        config: plan.config.clone(),
        start: hello.running,
    };
    let mpath = moves::in_marker(&ctx.paths, &hello.slot);
    // The marker first: a receiver killed from here on leaves what names its staging dir.
    let made = moves::save(&ctx.paths, &mpath, &marker).and_then(|()| {
        image::remove_any(&plan.staging)?;
        if let Some(d) = plan.staging.parent() {
            std::fs::create_dir_all(d)?;
        }
        image::create_image_dir(&plan.staging).map(|_| ())
    });
    if let Err(e) = made {
        let _ = image::remove_any(&plan.staging);
        let _ = moves::remove(&mpath);
        moves::forget_lock(&ctx.paths, &hello.slot, alive);
        return refuse(out, e);
    }
    drop(held);
    wire::send(out, Kind::Ready, &wire::Ready { host: hostname() })?;

    let mut s = Session {
        ctx,
        bus: &bus,
        hello: &hello,
        plan: &plan,
        marker: &mut marker,
        mpath: &mpath,
        held: None,
    };
    match s.run(inp, out) {
        Ok(code) => {
            moves::forget_lock(&ctx.paths, &hello.slot, alive);
            Ok(code)
        }
        Err(e) => {
            // Nothing here is a slot yet (a failed start was rolled back): the copy goes.
            let _ = image::remove_any(&plan.staging);
            let _ = moves::remove(&mpath);
            moves::forget_lock(&ctx.paths, &hello.slot, alive);
            let _ = wire::send(out, Kind::Refused, &refusal(&e));
            Err(e.context(format!(
                "receiving {} from {}; nothing was kept",
                hello.slot, hello.source
            )))
        }
    }
}

struct Session<'a> {
    ctx: &'a Ctx,
    bus: &'a Bus,
    hello: &'a wire::Hello,
    plan: &'a Plan,
    marker: &'a mut Incoming,
    mpath: &'a Path,
    /// Taken once the copy is here and held until the end: the config checked then is
    /// the config the slot joins.
    held: Option<lock::Lock>,
}

impl Session<'_> {
    fn save(&mut self, phase: InPhase) -> anyhow::Result<()> {
        self.marker.phase = phase;
        moves::save(&self.ctx.paths, self.mpath, &*self.marker)
    }

    fn run(&mut self, inp: &mut (impl Read + Send), out: &mut File) -> anyhow::Result<ExitCode> {
        loop {
            let (kind, payload) = match wire::read_frame(inp) {
                Ok(Some(f)) => f,
                Ok(None) => bail!("the source ended the connection"),
                Err(e) => return Err(e).context("reading from the source"),
            };
            match kind {
                Kind::Stream => {
                    let ss: StreamStart = wire::decode(kind, &payload)?;
                    let t0 = Instant::now();
                    receive_stream(inp, &self.plan.staging, ss.compressed)
                        .with_context(|| format!("the {} of {}", ss.phase, self.hello.slot))?;
                    image::sync_fs(&self.plan.staging)?;
                    if self.held.is_none() {
                        self.held = Some(lock::exclusive(&self.ctx.paths)?);
                        // Checked again: the config may have changed while the copy came.
                        plan(self.ctx, self.hello)?;
                    }
                    let ms = t0.elapsed().as_millis() as u64;
                    wire::send(
                        out,
                        Kind::Applied,
                        &wire::Applied {
                            phase: ss.phase,
                            ms,
                        },
                    )?;
                }
                Kind::Commit => return self.commit(inp, out),
                Kind::Abort => bail!("the source gave the move up"),
                k => bail!("unexpected {k:?} from the source"),
            }
        }
    }

    /// Makes the copy this host's slot and starts it. An error is returned only from before
    /// the commit point (the TOML written); after it, the slot is either running here or
    /// rolled back (and the source told so), whatever the connection does.
    fn commit(&mut self, inp: &mut impl Read, out: &mut File) -> anyhow::Result<ExitCode> {
        if self.held.is_none() {
            bail!("the source handed over before sending the slot");
        }
        let (name, source) = (self.hello.slot.clone(), self.hello.source.clone());
        self.save(InPhase::Committing)?;
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &self.plan.staging,
            nix::fcntl::AT_FDCWD,
            &self.plan.image,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .with_context(|| format!("renaming the copy into {}", self.plan.image.display()))?;
        if let Err(e) = write_atomic(&self.plan.config, &self.plan.text) {
            let _ = image::remove_any(&self.plan.image);
            return Err(e);
        }
        // The commit point: from here on the slot is this host's.
        if let Err(e) = self.save(InPhase::Committed) {
            // A marker left at "committing" with the TOML written reads as committed.
            eprintln!("slot-os: warning: {e:#}");
        }
        let t0 = Instant::now();
        if let Err(e) = start(self.ctx, self.bus, self.marker) {
            let why = format!("{e:#}");
            roll_back(self.ctx, self.bus, self.marker);
            let _ = wire::send(
                out,
                Kind::RolledBack,
                &wire::RolledBack {
                    message: why.clone(),
                },
            );
            journal::record(
                "move",
                &name,
                false,
                &format!("moving in from {source} failed: {why}"),
            );
            eprintln!("slot-os: {name} did not start here ({why}); removed it again");
            return Ok(ExitCode::from(1));
        }
        let ms = t0.elapsed().as_millis() as u64;
        if let Err(e) = self.save(InPhase::Done) {
            eprintln!("slot-os: warning: {e:#}");
        }
        self.held = None;
        journal::record("move", &name, true, &format!("moved in from {source}"));
        let told = wire::send(
            out,
            Kind::Started,
            &wire::Started {
                booted: self.marker.start,
                ms,
            },
        );
        // The source removes its copy, then says so; until then the marker answers it.
        if told.is_ok() && matches!(wire::read_frame(inp), Ok(Some((Kind::Forget, _)))) {
            let _ = moves::remove(self.mpath);
        } else {
            eprintln!(
                "slot-os: {name} runs here; {source} went away before it removed its copy (it does when it next runs)"
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Unpacks one data stream (zstd-compressed or plain tar) into `dir` through the
/// incremental checks.
fn receive_stream(
    inp: &mut (impl Read + Send),
    dir: &Path,
    compressed: bool,
) -> anyhow::Result<u64> {
    let mut data = wire::DataReader::new(inp);
    if !compressed {
        dump::apply(&mut data, dir)?;
        if !data.ended() {
            bail!("the stream ended before its end mark");
        }
        return Ok(data.received());
    }
    let mut z = tool("zstd")
        .args(["-d", "-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running zstd (install the zstd package)")?;
    let zin = z.stdin.take().context("zstd stdin")?;
    let zout = z.stdout.take().context("zstd stdout")?;
    let (fed, applied) = std::thread::scope(|sc| {
        let feeder = sc.spawn(move || -> io::Result<(u64, bool)> {
            let mut zin = zin;
            io::copy(&mut data, &mut zin)?;
            Ok((data.received(), data.ended()))
        });
        let applied = dump::apply(zout, dir);
        if applied.is_err() {
            let _ = z.kill();
        }
        let fed = feeder
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the stream reader panicked")));
        (fed, applied)
    });
    let zs = z.wait()?;
    // A damaged, cut or given-up stream is said as such before what it made tar or zstd
    // say; a pipe that broke because they stopped is theirs to explain.
    let broken = |e: &io::Error| e.kind() == io::ErrorKind::BrokenPipe;
    match (&fed, applied) {
        (Err(e), Err(a)) if broken(e) => return Err(a),
        (Err(_), _) => {}
        (Ok(_), a) => {
            a?;
        }
    }
    let (bytes, ended) = fed.context("receiving the stream")?;
    if !ended || !zs.success() {
        bail!("the stream was cut short (zstd {zs})");
    }
    Ok(bytes)
}

/// Starts the arrived slot if it ran on the source (waiting until it has booted), after
/// giving it the disk limit its TOML asks for (as an import does: a start refuses a limit
/// the file system was not given).
fn start(ctx: &Ctx, bus: &Bus, m: &Incoming) -> anyhow::Result<()> {
    bus.reload_config()?;
    if let (Some(s), Some(machines)) = (ctx.load().slot(&m.slot), m.image.parent()) {
        super::disk_apply::reapply(ctx, machines, s);
    }
    if m.start {
        if let Some(Err(e)) = bus.start_units(&[unit_name(&m.slot)]).pop() {
            return Err(e);
        }
    }
    Ok(())
}

/// Undoes a committed move that cannot start: the TOML goes first (the slot is then no
/// longer this host's), then the image and the marker.
fn roll_back(ctx: &Ctx, bus: &Bus, m: &Incoming) {
    let _ = bus.stop_units(&[unit_name(&m.slot)]);
    let _ = bus.reset_failed(&unit_name(&m.slot));
    let _ = remove_file(&m.config);
    let _ = bus.reload_config();
    let machines = m.image.parent().unwrap_or(Path::new("/"));
    if let Err(e) = provision::remove_image(bus, &ctx.paths, machines, &m.slot) {
        eprintln!("slot-os: warning: removing {}: {e:#}", m.image.display());
        let _ = image::remove_any(&m.image);
    }
    let _ = moves::remove(&moves::in_marker(&ctx.paths, &m.slot));
}

/// What a dead receiver's move becomes (see the module doc). Call with the helper lock.
fn settle(ctx: &Ctx, bus: &Bus, m: &mut Incoming) -> anyhow::Result<wire::Status> {
    let mpath = moves::in_marker(&ctx.paths, &m.slot);
    let committed = m.config.symlink_metadata().is_ok();
    match m.phase {
        InPhase::Done => Ok(have("it runs here")),
        InPhase::Committed | InPhase::Committing if committed => match start(ctx, bus, m) {
            Ok(()) => {
                m.phase = InPhase::Done;
                moves::save(&ctx.paths, &mpath, &*m)?;
                Ok(have("started by this run"))
            }
            Err(e) => {
                roll_back(ctx, bus, m);
                Ok(gone(&format!("it did not start here ({e:#}); removed")))
            }
        },
        InPhase::Committed | InPhase::Committing => {
            // Renamed into place maybe, but never this host's: no TOML was written.
            image::remove_any(&m.image)?;
            image::remove_any(&m.staging)?;
            moves::remove(&mpath)?;
            Ok(gone(
                "the handover did not finish here; its copy was removed",
            ))
        }
        InPhase::Receiving => {
            image::remove_any(&m.staging)?;
            moves::remove(&mpath)?;
            Ok(gone("it never arrived whole; its copy was removed"))
        }
    }
}

/// Settles every move into this host whose receiver died. Call with the helper lock.
pub fn settle_all(ctx: &Ctx, bus: &Bus) {
    for (path, m) in moves::incoming(&ctx.paths) {
        let Some(mut m) = m else {
            eprintln!(
                "slot-os: warning: {} is not a move marker; left alone",
                path.display()
            );
            continue;
        };
        let Ok(Some(held)) = moves::alive(&ctx.paths, &m.slot) else {
            continue; // its receiver is at work
        };
        let before = m.phase;
        let settled = settle(ctx, bus, &mut m);
        drop_lock_if_settled(ctx, &m.slot, held);
        match settled {
            Ok(st) if before != InPhase::Done => {
                eprintln!(
                    "slot-os: {}: the move from {} was interrupted: {}",
                    m.slot, m.source, st.detail
                )
            }
            Ok(_) => {}
            Err(e) => eprintln!(
                "slot-os: warning: settling the move of {} from {}: {e:#}",
                m.slot, m.source
            ),
        }
    }
}

/// A move's receiver lock file goes once its marker has (taken, so no receiver is at work).
fn drop_lock_if_settled(ctx: &Ctx, slot: &str, held: moves::Alive) {
    if moves::in_marker(&ctx.paths, slot)
        .symlink_metadata()
        .is_err()
    {
        moves::forget_lock(&ctx.paths, slot, held);
    }
}

/// The source asks what became of a move it lost touch with.
fn status(ctx: &Ctx, q: &MoveRef) -> anyhow::Result<wire::Status> {
    check_slot_name(&q.slot)?;
    // A receiver still at work may be committing: its answer is the one to give.
    if !moves::wait_receiver(&ctx.paths, &q.slot, RECEIVER_WAIT)? {
        return Ok(wire::Status {
            state: "busy".into(),
            detail: "its receiver is still at work".into(),
        });
    }
    let _lock = lock::exclusive(&ctx.paths)?;
    let mpath = moves::in_marker(&ctx.paths, &q.slot);
    let st = match moves::load::<Incoming>(&mpath) {
        Some(mut m) if m.id == q.id => settle(ctx, &Bus::system()?, &mut m),
        _ => Ok(gone("no part of it is here")),
    };
    if let Ok(Some(held)) = moves::alive(&ctx.paths, &q.slot) {
        drop_lock_if_settled(ctx, &q.slot, held);
    }
    st
}

/// The source removed its copy: the record of a finished move goes.
fn forget(ctx: &Ctx, q: &MoveRef) -> anyhow::Result<()> {
    check_slot_name(&q.slot)?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let mpath = moves::in_marker(&ctx.paths, &q.slot);
    if let Some(m) = moves::load::<Incoming>(&mpath) {
        if m.id == q.id && m.phase == InPhase::Done {
            moves::remove(&mpath)?;
        }
    }
    if let Ok(Some(held)) = moves::alive(&ctx.paths, &q.slot) {
        drop_lock_if_settled(ctx, &q.slot, held);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_whether_nothing_changed() {
        assert!(refusal(&bad_input("name taken")).bad_input);
        let r = refusal(&anyhow::anyhow!("disk full").context("unpacking"));
        assert!(!r.bad_input);
        assert_eq!(r.message, "unpacking: disk full");
    }
}
