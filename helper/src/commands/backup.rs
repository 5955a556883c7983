//! Fulcon's backups: `backup NUMBER NAME` (→ `slotXX.NAME`), `backup-list`, `backup-del`,
//! `backup-restore SLOT BACKUP` (`slot-os` = reset to the base image).
//!
//! Over 400 lines: the five backup commands share one store (its directory, metadata, sweep
//! of interrupted runs), which would otherwise be split across files or exported.
//!
//! A running slot is frozen while its root is captured, so a backup is crash-consistent.
//! On btrfs the capture is a read-only snapshot (milliseconds of freeze); elsewhere a
//! tar stream compressed by zstd, whose SHA-256 is recorded. Data is written under a
//! hidden temporary name and renamed when complete; the metadata file, written last,
//! is what makes a backup exist, so an interrupted backup is never listed and its
//! leftovers are removed by the next backup command. A restore builds the new root
//! beside the old one and swaps them by rename.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use slot_config::names::check_name;
use slot_config::{Slot, Storage};

use super::Ctx;
use crate::config::targets;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::archive;
use crate::storage::freeze;
use crate::storage::hostkeys::HostKeys;
use crate::storage::image;
use crate::storage::layout::{self, Layout};
use crate::storage::quota;
use crate::storage::{layer, lower};
use crate::sys::lock;
use crate::sys::notify;

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Meta {
    name: String,
    slot: String,
    kind: String,
    created_unix: u64,
    size: u64,
    sha256: Option<String>,
    freeze_ms: Option<f64>,
    /// "overlay" for a backup of an overlay slot: it holds the upper directory only...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage: Option<String>,
    /// ...which needs this base version (`IMAGE@N`) below it; the version is kept while
    /// the backup exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lower: Option<String>,
}

const SNAP: &str = "snapshot";
const TAR: &str = "tar.zst";

fn backup_dir(ctx: &Ctx) -> PathBuf {
    ctx.paths.under(&ctx.load().host.backup_dir)
}

fn data_path(dir: &Path, name: &str, kind: &str) -> PathBuf {
    if kind == SNAP {
        dir.join(format!("{name}.snap"))
    } else {
        dir.join(format!("{name}.tar.zst"))
    }
}

fn meta_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Removes what interrupted runs left: hidden temporaries, and data without metadata.
fn sweep(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let n = e.file_name().to_string_lossy().into_owned();
        let orphan = (n.ends_with(".snap") || n.ends_with(".tar.zst"))
            && !meta_path(
                dir,
                n.trim_end_matches(".snap").trim_end_matches(".tar.zst"),
            )
            .exists();
        if n.starts_with(".tmp-") || orphan {
            let _ = image::remove_any(&p);
        }
    }
}

/// The backup dir holds every file of every slot, their keys included: root only. A dir
/// an older slot-os or an admin left open to others is closed, and that is said.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| format!("creating {}", dir.display()))
        }
        _ => {}
    }
    let mode = fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
        println!(
            "{}: mode was {mode:04o}, now 0700 (backups are for root only)",
            dir.display()
        );
    }
    let mut fixed = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if m.is_file() && m.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(e.path(), fs::Permissions::from_mode(0o600))?;
            fixed += 1;
        }
    }
    if fixed > 0 {
        println!("{fixed} file(s) in {} now mode 0600", dir.display());
    }
    Ok(())
}

/// `write_atomic` for the backup dir: mode 0600 from creation, under a `.tmp-` name that
/// `sweep` removes if we are interrupted.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("backup path has no directory")?;
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".tmp-{name}.{}", std::process::id()));
    crate::sys::replace_file(path, &tmp, text, Some(0o600))
}

fn read_meta(dir: &Path) -> Vec<Meta> {
    let mut out: Vec<Meta> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn sha256_file(p: &Path) -> anyhow::Result<String> {
    let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    archive::pump(f, std::io::sink(), "verified", |c| h.update(c))?;
    Ok(format!("{:x}", h.finalize()))
}

pub fn backup(ctx: &Ctx, slot: &str, name: &str) -> anyhow::Result<ExitCode> {
    check_name("backup", name)?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let s: Slot = targets::resolve_one(&cfg, slot)?.clone();
    let full = format!("{}.{name}", s.name);
    let dir = backup_dir(ctx);
    private_dir(&dir)?;
    sweep(&dir);
    if meta_path(&dir, &full).exists() {
        return Err(bad_input(format!(
            "backup {full} exists; delete it first (slot-os backup-del {full})"
        )));
    }
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let lay = Layout::of(&machines, &s);
    let root = lay.capture_dir();
    if !root.is_dir() {
        bail!("{} has no image at {}", s.name, root.display());
    }
    let lower = match &lay.layer {
        Some(l) => Some(layer::pin(l)?.id()),
        None => None,
    };
    // Subvolumes have st_dev of their own, so "same file system" is only known by trying.
    let try_snapshot = image::is_subvolume(&root) && image::is_btrfs(&dir);
    let tmp = dir.join(format!(".tmp-{full}.{}", std::process::id()));

    let bus = Bus::system()?;
    let frozen = freeze::for_capture(&bus, &ctx.paths, &s, "backup")?;
    let running = frozen.is_some();
    let t0 = Instant::now();
    let mut kind = TAR;
    let captured = if try_snapshot && image::snapshot(&root, &tmp, true).is_ok() {
        kind = SNAP;
        Ok((0, None))
    } else {
        let mut tar = archive::tar_create(&root);
        tar.arg(".");
        archive::tar_zstd(tar, &tmp, "backed up").map(|(n, h)| (n, Some(h)))
    };
    let frozen_ms = t0.elapsed().as_secs_f64() * 1000.0;
    drop(frozen);
    let (size, sha) = match captured {
        Ok(v) => v,
        Err(e) => {
            let _ = image::remove_any(&tmp);
            return Err(e.context("nothing was kept"));
        }
    };
    let data = data_path(&dir, &full, kind);
    fs::rename(&tmp, &data).with_context(|| format!("renaming into {}", data.display()))?;
    let meta = Meta {
        name: full.clone(),
        slot: s.name.clone(),
        kind: kind.into(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        size,
        sha256: sha,
        freeze_ms: running.then_some(frozen_ms),
        storage: lower.as_ref().map(|_| Storage::Overlay.to_string()),
        lower,
    };
    write_private(
        &meta_path(&dir, &full),
        &serde_json::to_string_pretty(&meta)?,
    )?;
    println!(
        "{full}: {kind} backup of {}{}",
        s.name,
        if running {
            format!(", slot frozen for {frozen_ms:.1} ms")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `YYYYMMDD-HHMMSS` in UTC: sorts as time does and is a valid backup name.
fn utc_stamp(unix: u64) -> String {
    let (days, secs) = ((unix / 86400) as i64, unix % 86400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The scheduled backup: a new `slotXX.auto-STAMP`, then the oldest automatic backups
/// of that slot beyond `keep` are deleted (never the one just made, never others).
pub fn auto(ctx: &Ctx, slot: &str, keep: u32) -> anyhow::Result<ExitCode> {
    if keep == 0 {
        return Err(bad_input("--keep must be at least 1"));
    }
    let s = targets::resolve_one(&ctx.load(), slot)?.clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = backup_dir(ctx);
    let mut name = format!("auto-{}", utc_stamp(now));
    for i in 1.. {
        if !meta_path(&dir, &format!("{}.{name}", s.name)).exists() {
            break;
        }
        name = format!("auto-{}-{i}", utc_stamp(now));
    }
    notify::progress(&format!("backing up {} as {}.{name}", s.name, s.name));
    backup(ctx, &s.name, &name)?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let prefix = format!("{}.auto-", s.name);
    let autos: Vec<Meta> = read_meta(&dir)
        .into_iter()
        .filter(|m| m.slot == s.name && m.name.starts_with(&prefix))
        .collect();
    let excess = autos.len().saturating_sub(keep as usize);
    for m in &autos[..excess] {
        fs::remove_file(meta_path(&dir, &m.name))?;
        image::remove_any(&data_path(&dir, &m.name, &m.kind))?;
        println!("{}: deleted (keeping {keep})", m.name);
    }
    notify::done(&format!(
        "{}.{name} done; {} automatic backups kept, {excess} deleted",
        s.name,
        autos.len() - excess
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn list(ctx: &Ctx, json: bool) -> anyhow::Result<ExitCode> {
    let dir = backup_dir(ctx);
    let metas = read_meta(&dir);
    if json {
        println!("{}", serde_json::to_string(&metas)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:<12} {:>10} {:<19} KIND",
        "NAME", "SLOT", "SIZE", "CREATED (UTC)"
    );
    for m in metas {
        let created = utc_stamp(m.created_unix);
        let size = match m.kind.as_str() {
            SNAP => "-".to_string(),
            _ => format!("{:.1} MB", m.size as f64 / 1e6),
        };
        println!(
            "{:<32} {:<12} {:>10} {}-{}-{} {}:{}:{} {}",
            m.name,
            m.slot,
            size,
            &created[0..4],
            &created[4..6],
            &created[6..8],
            &created[9..11],
            &created[11..13],
            &created[13..15],
            m.kind
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn del(ctx: &Ctx, name: &str) -> anyhow::Result<ExitCode> {
    let _lock = lock::exclusive(&ctx.paths)?;
    let dir = backup_dir(ctx);
    let Some(m) = read_meta(&dir).into_iter().find(|m| m.name == name) else {
        return Err(bad_input(format!(
            "no backup named {name:?} (see slot-os backup-list)"
        )));
    };
    // Metadata first: from then on the backup no longer exists, whatever happens next.
    fs::remove_file(meta_path(&dir, name))?;
    image::remove_any(&data_path(&dir, name, &m.kind))?;
    println!("{name}: deleted");
    if m.lower.is_some() {
        let cfg = ctx.load();
        let machines = layout::machines_dir(&ctx.paths, &cfg.host);
        let gone = layer::prune_versions(&machines, &dir);
        if !gone.is_empty() {
            println!(
                "base versions no slot or backup uses any more, deleted: {}",
                gone.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn restore(ctx: &Ctx, slot: &str, name: &str) -> anyhow::Result<ExitCode> {
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let s: Slot = targets::resolve_one(&cfg, slot)?.clone();
    let bus = Bus::system()?;
    crate::dbus::running::require_stopped(&bus, &s, "before restoring")?;
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let lay = Layout::of(&machines, &s);
    // Held until the new root is in place: nspawn cannot boot it meanwhile.
    let _image = lock::ImageLock::images(&[&lay.image], "stop it before restoring")?;
    crate::dbus::running::require_stopped(&bus, &s, "before restoring")?;
    if lay.is_overlay() {
        layer::settle_stopped(&bus, &machines, &s)?;
        return restore_overlay(ctx, &cfg, &s, &lay, name);
    }
    let dest = lay.image.clone();
    let new = image::sibling(&dest, ".slot-os-new-");
    let _ = image::remove_any(&new);
    let dir = backup_dir(ctx);
    let t0 = Instant::now();
    let reset = name == cfg.host.image || name == "slot-os";
    let mut mark = None;
    let made = if reset {
        // Fulcon's reset: a fresh copy of the base image, with the slot's identity.
        let base = machines.join(&cfg.host.image);
        if !base.is_dir() {
            return Err(bad_input(format!(
                "base image {} does not exist",
                cfg.host.image
            )));
        }
        copy_root(&base, &new)
    } else {
        let Some(m) = read_meta(&dir).into_iter().find(|m| m.name == name) else {
            return Err(bad_input(format!(
                "no backup named {name:?} (see slot-os backup-list)"
            )));
        };
        if m.storage.is_some() {
            return Err(bad_input(format!(
                "backup {name} is of an overlay slot (its upper directory on {}); {} is not an overlay slot; restore it into one",
                m.lower.as_deref().unwrap_or("?"),
                s.name
            )));
        }
        mark = Some(image::Restored {
            backup: m.name.clone(),
            created_unix: m.created_unix,
        });
        let data = data_path(&dir, name, &m.kind);
        if m.kind == SNAP {
            image::snapshot(&data, &new, false)
        } else {
            // Unpacked and hashed in one pass: a mismatch is only known at the end, but
            // the unpacked tree is beside the slot's root and is then thrown away.
            let corrupted = |sum: String| {
                anyhow::anyhow!(
                    "backup {name} is corrupted: its SHA-256 is {sum}, {} was recorded; refusing to restore, {} is unchanged",
                    m.sha256.as_deref().unwrap_or("none"),
                    s.name
                )
            };
            image::create_image_dir(&new).map(|_| ()).and_then(|()| {
                match archive::untar_zstd(&data, &new) {
                    Ok(sum) if Some(&sum) == m.sha256.as_ref() => Ok(()),
                    Ok(sum) => Err(corrupted(sum)),
                    // zstd stops at a damaged frame: hash the whole file to say why.
                    Err(e) => match sha256_file(&data) {
                        Ok(sum) if Some(&sum) != m.sha256.as_ref() => Err(corrupted(sum)),
                        _ => Err(e),
                    },
                }
            })
        }
    };
    if let Err(e) = made {
        let _ = image::remove_any(&new);
        return Err(e.context(format!("restoring {name}; {} is unchanged", s.name)));
    }
    // Keep the slot's own identity across restores; a reset to the base image makes new
    // SSH host keys (the base image has none), a backup of the slot has the slot's own.
    let id = image::machine_id(&dest)
        .map(Ok)
        .unwrap_or_else(image::new_machine_id)?;
    let keys = if reset { HostKeys::New } else { HostKeys::Keep };
    if let Err(e) = image::set_identity(&new, &s.name, Some(&id), keys) {
        let _ = image::remove_any(&new);
        return Err(e.context(format!("restoring {name}; {} is unchanged", s.name)));
    }
    // Which backup the root now is, for a config manager that restores only once (the
    // mark a backup itself carried is an older restore's).
    let marked = match &mark {
        Some(r) => image::mark_restored(&new, r),
        None => image::clear_restored(&new),
    };
    if let Err(e) = marked {
        eprintln!(
            "slot-os: warning: {e:#}; `info` will not say which backup {} was restored from",
            s.name
        );
    }
    // The new root joins the old one's project before the swap: the slot keeps its ID and
    // its limit without a walk after it.
    if let Err(e) = quota::adopt(&dest, &new) {
        let _ = image::remove_any(&new);
        return Err(e.context(format!("restoring {name}; {} is unchanged", s.name)));
    }
    image::swap_into_place(&new, &dest)?;
    if s.resources.limits.disk_bytes().is_some() {
        match quota::apply_slot(&ctx.paths, &machines, &s) {
            Ok(quota::Applied::Nothing) => {}
            Ok(done) => println!("{}: {}", s.name, done.describe()),
            Err(e) => println!("warning: {}: disk limit not applied: {e:#}", s.name),
        }
    }
    println!(
        "{}: restored from {name} in {:.2} s",
        s.name,
        t0.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// An overlay slot's restore: a new layer beside its layer (the backup's upper on the
/// version it was taken on, or for a reset an empty upper on the base's current version),
/// its identity written through a private mount, then exchanged with the old layer in one
/// rename. The caller holds the image lock and has unmounted the root.
fn restore_overlay(
    ctx: &Ctx,
    cfg: &slot_config::Config,
    s: &Slot,
    lay: &Layout,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let stage = layout::stage_dir(&ctx.paths);
    let Some(dest) = lay.layer.as_deref() else {
        bail!("{} is not an overlay slot", s.name);
    };
    let t0 = Instant::now();
    let reset = name == cfg.host.image || name == "slot-os";
    let id = image::machine_id(&lay.capture_dir())
        .map(Ok)
        .unwrap_or_else(image::new_machine_id)?;
    let unchanged = || format!("restoring {name}; {} is unchanged", s.name);
    let mut mark = None;
    let (v, data, sum) = if reset {
        let base = s
            .base_image
            .clone()
            .unwrap_or_else(|| cfg.host.image.clone());
        let (v, _) = lower::current(&machines, &base).map_err(|e| bad_input(e.to_string()))?;
        (v, None, None)
    } else {
        let dir = backup_dir(ctx);
        let Some(m) = read_meta(&dir).into_iter().find(|m| m.name == name) else {
            return Err(bad_input(format!(
                "no backup named {name:?} (see slot-os backup-list)"
            )));
        };
        let Some(v) = m.lower.as_deref().and_then(lower::Version::parse) else {
            return Err(bad_input(format!(
                "backup {name} holds a whole root, not an overlay slot's upper; {} is an overlay slot: restore it into a slot with storage \"copy\" or \"btrfs\"",
                s.name
            )));
        };
        if m.kind != TAR {
            bail!(
                "backup {name} is a {}, an overlay slot's backup is a tar",
                m.kind
            );
        }
        mark = Some(image::Restored {
            backup: m.name.clone(),
            created_unix: m.created_unix,
        });
        (v, Some(data_path(&dir, name, &m.kind)), m.sha256)
    };
    let keys = if reset { HostKeys::New } else { HostKeys::Keep };
    let tmp = layer::prepare(
        &machines,
        lay.image_name.as_str(),
        &v,
        &stage,
        |upper| {
            let Some(data) = &data else { return Ok(()) };
            match archive::untar_zstd(data, upper) {
                Ok(got) if Some(&got) == sum.as_ref() => Ok(()),
                Ok(got) => bail!(
                    "backup {name} is corrupted: its SHA-256 is {got}, {} was recorded; refusing to restore",
                    sum.as_deref().unwrap_or("none")
                ),
                Err(e) => Err(e),
            }
        },
        |root| image::set_identity_in(root, &s.name, Some(&id), keys),
    )
    .with_context(unchanged)?;
    // The mark sits on the layer directory (host-only; the slot cannot forge it), as does
    // the quota's project (see `layout::own_data_dir`).
    let marked = match &mark {
        Some(r) => image::mark_restored(&tmp, r),
        None => image::clear_restored(&tmp),
    };
    if let Err(e) = marked {
        eprintln!(
            "slot-os: warning: {e:#}; `info` will not say which backup {} was restored from",
            s.name
        );
    }
    if let Err(e) = quota::adopt(dest, &tmp) {
        let _ = image::remove_any(&tmp);
        return Err(e.context(unchanged()));
    }
    image::swap_into_place(&tmp, dest)?;
    if s.resources.limits.disk_bytes().is_some() {
        match quota::apply_slot(&ctx.paths, &machines, s) {
            Ok(quota::Applied::Nothing) => {}
            Ok(done) => println!("{}: {}", s.name, done.describe()),
            Err(e) => println!("warning: {}: disk limit not applied: {e:#}", s.name),
        }
    }
    println!(
        "{}: restored from {name} in {:.2} s (overlay on {v})",
        s.name,
        t0.elapsed().as_secs_f64()
    );
    let gone = layer::prune_versions(&machines, &backup_dir(ctx));
    if !gone.is_empty() {
        println!(
            "base versions no slot or backup uses any more, deleted: {}",
            gone.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn copy_root(src: &Path, dest: &Path) -> anyhow::Result<()> {
    if image::is_subvolume(src) && image::snapshot(src, dest, false).is_ok() {
        return Ok(());
    }
    let st = crate::sys::tool("cp")
        .args(["-a", "--reflink=auto"])
        .arg(src)
        .arg(dest)
        .status()
        .context("running cp")?;
    if !st.success() {
        bail!("copying {} failed", src.display());
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    pub slot: String,
    pub name: String,
}

impl BackupArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        backup(ctx, &self.slot, &self.name)
    }
}

#[derive(clap::Args, Debug)]
pub struct AutoArgs {
    pub slot: String,
    /// How many automatic backups of the slot to keep (at least 1).
    #[arg(long, default_value_t = 7)]
    pub keep: u32,
}

impl AutoArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        auto(ctx, &self.slot, self.keep)
    }
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        list(ctx, self.json)
    }
}

#[derive(clap::Args, Debug)]
pub struct DelArgs {
    pub image: String,
}

impl DelArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        del(ctx, &self.image)
    }
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    pub slot: String,
    pub image: String,
}

impl RestoreArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        restore(ctx, &self.slot, &self.image)
    }
}

#[derive(clap::Args, Debug)]
pub struct ThawLeftoversArgs {
    pub slot: Option<String>,
}

impl ThawLeftoversArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        freeze::thaw_leftovers(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::utc_stamp;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_795_451_589), "20261123-163309");
    }
}
