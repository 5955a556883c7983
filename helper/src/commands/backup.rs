//! Fulcon's backups: `backup NUMBER NAME` (→ `slotXX.NAME`), `backup-list`, `backup-del`,
//! `backup-restore SLOT BACKUP` (`slot-os` = reset to the base image), `backup-auto`.
//!
//! A running slot is captured crash-consistently with a freeze bounded by what changed
//! (`storage::capture`: copied while it runs, frozen only for a walk over what changed
//! since); on btrfs the capture is a read-only snapshot. The store (`storage::backups`)
//! is a restic repository shared by every slot (engine "restic": each backup adds only
//! what is not stored yet), or one tar.zst per backup (engine "tar"); backups of both
//! kinds, and btrfs `.snap`s, are listed and restored alike. A restore builds the new
//! root beside the old one, checks its content, and swaps them by rename.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use slot_config::names::check_name;
use slot_config::{BackupEngine, Config, Slot, Storage};

use super::Ctx;
use crate::config::targets;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::backups::{self, Meta, RESTIC, SNAP, TAR};
use crate::storage::capture::{self, Captured};
use crate::storage::freeze::{self, SlotFreezer};
use crate::storage::hostkeys::HostKeys;
use crate::storage::layout::{self, Layout};
use crate::storage::restic::{self, Repo};
use crate::storage::{archive, holes, image, layer, lower, quota};
use crate::sys::lock;
use crate::sys::notify;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The repository a command works on: the host's own, or the off-site one.
fn repo(ctx: &Ctx, cfg: &Config, offsite: bool, create_key: bool) -> anyhow::Result<Repo> {
    let r = if offsite {
        backups::offsite_repo(cfg, &ctx.paths).ok_or_else(|| {
            bad_input(
                "no off-site repository is configured; set [backup] offsite and offsite_password_file in slot-os.toml",
            )
        })?
    } else {
        backups::local_repo(cfg, &ctx.paths)
    };
    // A new key only for a new repository: one made beside an existing repository would
    // not open it (the password file was lost: say so instead).
    let new_repo = !offsite && !Path::new(&r.location).join("config").exists();
    restic::ensure_password_file(&r.password_file, create_key && new_repo).map_err(|e| {
        anyhow::Error::new(e).context(if offsite {
            "the off-site repository's password file"
        } else {
            "the local repository's password file ([backup] password_file)"
        })
    })?;
    Ok(r)
}

/// Captures the slot's data: a read-only snapshot on btrfs (into `snap_at`), otherwise the
/// two-pass copy into its stage. Returns the tree and the freeze.
fn capture_slot(
    bus: &Bus,
    ctx: &Ctx,
    s: &Slot,
    root: &Path,
    stage: &capture::Stage,
    snap_at: Option<&Path>,
) -> anyhow::Result<Captured> {
    let mut freezer = SlotFreezer {
        bus,
        paths: &ctx.paths,
        slot: s,
        what: "backup",
        leader: None,
    };
    if let Some(at) = snap_at {
        use capture::Freezer;
        let frozen = freezer.freeze()?;
        let t0 = Instant::now();
        let made = image::snapshot(root, at, true);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let running = frozen.is_some();
        drop(frozen);
        if made.is_ok() {
            return Ok(Captured {
                tree: at.to_path_buf(),
                freeze_ms: running.then_some(ms),
                report: capture::Report {
                    frozen_ms: ms,
                    ..Default::default()
                },
            });
        }
    }
    notify::progress(&format!(
        "copying {} (running: frozen only at the end)",
        s.name
    ));
    capture::capture(root, stage, &mut freezer)
        .with_context(|| format!("capturing {}", root.display()))
}

fn frozen_note(c: &Captured) -> String {
    match c.freeze_ms {
        Some(ms) => format!(", slot frozen for {ms:.1} ms"),
        None => String::new(),
    }
}

pub fn backup(ctx: &Ctx, slot: &str, name: &str, offsite: bool) -> anyhow::Result<ExitCode> {
    check_name("backup", name)?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let s: Slot = targets::resolve_one(&cfg, slot)?.clone();
    let full = format!("{}.{name}", s.name);
    let dir = backups::backup_dir(&cfg, &ctx.paths);
    backups::private_dir(&dir)?;
    backups::sweep(&dir, &cfg);
    let engine = if offsite {
        BackupEngine::Restic
    } else {
        cfg.host.backup.engine
    };
    if backups::meta_path(&dir, &full, false).exists() {
        return Err(bad_input(format!(
            "backup {full} exists; delete it first (slot-os backup-del {full})"
        )));
    }
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let lay = Layout::of(&machines, &s);
    // An overlay slot's own data is its upper directory; the base version below it is
    // recorded with the backup (and kept while the backup exists).
    let root = lay.capture_dir();
    if !root.is_dir() {
        bail!("{} has no image at {}", s.name, root.display());
    }
    let lower = match &lay.layer {
        Some(l) => Some(layer::pin(l)?.id()),
        None => None,
    };
    let repo = match engine {
        BackupEngine::Restic => {
            let r = repo(ctx, &cfg, offsite, true)?;
            restic::version().map_err(anyhow::Error::new)?;
            r.ensure_init()
                .map_err(anyhow::Error::new)
                .with_context(|| format!("opening the restic repository {}", r.location))?;
            Some(r)
        }
        BackupEngine::Tar => None,
    };
    // Every restic command pays for opening the key: the name check runs beside the copy.
    let listing = repo.as_ref().map(|r| r.snapshots_start()).transpose()?;
    let stage = backups::stage(&dir, &s.name);
    let bus = Bus::system()?;
    let t0 = Instant::now();

    let tmp = dir.join(format!(".tmp-{full}.{}", std::process::id()));
    // btrfs: a read-only snapshot is the capture (milliseconds of freeze); it is the
    // backup itself with the tar engine, restic reads it and it is deleted.
    let on_btrfs = image::is_subvolume(&root) && image::is_btrfs(&dir);
    let snap_at = match (&repo, on_btrfs) {
        (_, false) => None,
        (None, true) => Some(tmp.clone()),
        (Some(_), true) => {
            // The snapshot takes the stage's place (restic finds its parent by path).
            fs::create_dir_all(&stage.dir)?;
            let _ = fs::remove_file(stage.dir.join("manifest"));
            image::remove_any(&stage.rootfs())?;
            Some(stage.rootfs())
        }
    };
    let captured = capture_slot(&bus, ctx, &s, &root, &stage, snap_at.as_deref());
    let captured = match captured {
        Ok(c) => c,
        Err(e) => {
            if let Some(at) = &snap_at {
                let _ = image::remove_any(at);
            }
            return Err(e.context("nothing was kept"));
        }
    };

    let meta = match repo {
        Some(r) => {
            let snaps = r
                .snapshots_finish(listing.context("listing")?)
                .map_err(anyhow::Error::new)?;
            let stored = store_restic(&r, &stage, &s, &full, &captured, &snaps, offsite, lower);
            if snap_at.is_some() {
                let _ = image::remove_any(&captured.tree);
            }
            stored?
        }
        None => store_tar(&dir, &s, &full, &captured, &tmp, lower)?,
    };
    backups::write_private(
        &backups::meta_path(&dir, &full, offsite),
        &serde_json::to_string_pretty(&meta)?,
    )?;
    let how = match meta.kind.as_str() {
        RESTIC => format!(
            "restic backup of {}{} ({:.1} MB new of {:.1} MB)",
            s.name,
            if offsite { " (off-site)" } else { "" },
            meta.size as f64 / 1e6,
            meta.tree_bytes.unwrap_or(0) as f64 / 1e6
        ),
        kind => format!("{kind} backup of {}", s.name),
    };
    println!(
        "{full}: {how}{} in {:.2} s",
        frozen_note(&captured),
        t0.elapsed().as_secs_f64()
    );
    if std::env::var_os("SLOT_OS_CAPTURE_REPORT").is_some() {
        eprintln!("capture: {}", serde_json::to_string(&captured.report)?);
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn store_restic(
    r: &Repo,
    stage: &capture::Stage,
    s: &Slot,
    full: &str,
    captured: &Captured,
    snaps: &[restic::Snapshot],
    offsite: bool,
    lower: Option<String>,
) -> anyhow::Result<Meta> {
    if snaps.iter().any(|x| x.tag("name") == Some(full)) {
        return Err(bad_input(format!(
            "backup {full} exists; delete it first (slot-os backup-del {full}{})",
            if offsite { " --offsite" } else { "" }
        )));
    }
    // restic keeps the directory it is given, by its path: the tree goes in as `rootfs`,
    // our notes on it as `slot-os/`, both read from the stage directory.
    let info = backups::CaptureInfo {
        format: 1,
        slot: s.name.clone(),
        name: full.to_string(),
        freeze_ms: captured.freeze_ms,
        sparse_hex: captured
            .report
            .sparse
            .iter()
            .map(|p| backups::hex_path(p))
            .collect(),
    };
    let info_dir = stage.dir.join(backups::INFO_DIR);
    fs::create_dir_all(&info_dir)?;
    fs::write(
        info_dir.join(backups::INFO_FILE),
        serde_json::to_string(&info)?,
    )?;
    let mut extra = BTreeMap::new();
    if let Some(ms) = captured.freeze_ms {
        extra.insert("freeze-ms", format!("{ms:.1}"));
    }
    if let Some(l) = &lower {
        extra.insert("storage", Storage::Overlay.to_string());
        extra.insert("lower", l.clone());
    }
    notify::progress(&format!("storing {full} in {}", r.location));
    let sum = r
        .backup(
            &stage.dir,
            &["rootfs", backups::INFO_DIR],
            &restic::tags(&s.name, full, &extra),
        )
        .map_err(anyhow::Error::new)
        .with_context(|| format!("storing {full} in {}", r.location))?;
    Ok(Meta {
        name: full.to_string(),
        slot: s.name.clone(),
        kind: RESTIC.into(),
        created_unix: now_unix(),
        size: sum.data_added,
        sha256: None,
        freeze_ms: captured.freeze_ms,
        snapshot: Some(sum.snapshot_id),
        offsite,
        tree_bytes: Some(sum.total_bytes_processed),
        storage: lower.as_ref().map(|_| Storage::Overlay.to_string()),
        lower,
    })
}

fn store_tar(
    dir: &Path,
    s: &Slot,
    full: &str,
    captured: &Captured,
    tmp: &Path,
    lower: Option<String>,
) -> anyhow::Result<Meta> {
    let (kind, size, sha) = if captured.tree == tmp {
        (SNAP, 0, None)
    } else {
        let mut tar = archive::tar_create(&captured.tree);
        tar.arg(".");
        match archive::tar_zstd(tar, tmp, "backed up") {
            Ok((n, h)) => (TAR, n, Some(h)),
            Err(e) => {
                let _ = image::remove_any(tmp);
                return Err(e.context("nothing was kept"));
            }
        }
    };
    let data = backups::data_path(dir, full, kind);
    fs::rename(tmp, &data).with_context(|| format!("renaming into {}", data.display()))?;
    Ok(Meta {
        name: full.to_string(),
        slot: s.name.clone(),
        kind: kind.into(),
        created_unix: now_unix(),
        size,
        sha256: sha,
        freeze_ms: captured.freeze_ms,
        snapshot: None,
        offsite: false,
        tree_bytes: None,
        storage: lower.as_ref().map(|_| Storage::Overlay.to_string()),
        lower,
    })
}

/// The scheduled backup: a new `slotXX.auto-STAMP`, then the oldest automatic backups
/// of that slot beyond `keep` are deleted (never the one just made, never others).
pub fn auto(ctx: &Ctx, slot: &str, keep: u32, offsite: bool) -> anyhow::Result<ExitCode> {
    if keep == 0 {
        return Err(bad_input("--keep must be at least 1"));
    }
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?.clone();
    let now = now_unix();
    let dir = backups::backup_dir(&cfg, &ctx.paths);
    let mut name = format!("auto-{}", backups::utc_stamp(now));
    for i in 1.. {
        if !backups::meta_path(&dir, &format!("{}.{name}", s.name), offsite).exists() {
            break;
        }
        name = format!("auto-{}-{i}", backups::utc_stamp(now));
    }
    notify::progress(&format!("backing up {} as {}.{name}", s.name, s.name));
    backup(ctx, &s.name, &name, offsite)?;
    let _lock = lock::exclusive(&ctx.paths)?;
    let prefix = format!("{}.auto-", s.name);
    let mut autos: Vec<Meta> = all_entries(ctx, &cfg, &dir, offsite)?
        .into_iter()
        .filter(|m| m.slot == s.name && m.name.starts_with(&prefix))
        .collect();
    autos.sort_by(|a, b| (a.created_unix, &a.name).cmp(&(b.created_unix, &b.name)));
    let excess = autos.len().saturating_sub(keep as usize);
    delete(ctx, &cfg, &dir, &autos[..excess], offsite)?;
    for m in &autos[..excess] {
        println!("{}: deleted (keeping {keep})", m.name);
    }
    notify::done(&format!(
        "{}.{name} done; {} automatic backups kept, {excess} deleted",
        s.name,
        autos.len() - excess
    ));
    Ok(ExitCode::SUCCESS)
}

/// Every backup: the file-per-backup kinds and the repository's snapshots.
fn all_entries(ctx: &Ctx, cfg: &Config, dir: &Path, offsite: bool) -> anyhow::Result<Vec<Meta>> {
    let mut out = if offsite {
        Vec::new()
    } else {
        backups::legacy(dir)
    };
    let local = backups::local_repo(cfg, &ctx.paths);
    let use_restic = offsite
        || (Path::new(&local.location).join("config").exists() && local.password_file.exists());
    if use_restic {
        let r = repo(ctx, cfg, offsite, false)?;
        let snaps = r.snapshots().map_err(anyhow::Error::new)?;
        backups::drop_stale_meta(dir, &snaps, offsite);
        out.extend(backups::restic_entries(dir, &snaps, offsite));
    }
    Ok(out)
}

fn delete(ctx: &Ctx, cfg: &Config, dir: &Path, gone: &[Meta], offsite: bool) -> anyhow::Result<()> {
    let ids: Vec<String> = gone.iter().filter_map(|m| m.snapshot.clone()).collect();
    if !ids.is_empty() {
        let r = repo(ctx, cfg, offsite, false)?;
        // Forgotten first, metadata after: a run killed between leaves metadata of a
        // snapshot that no longer exists, which the listing drops.
        r.forget_prune(&ids).map_err(anyhow::Error::new)?;
    }
    for m in gone {
        if m.kind == RESTIC {
            let _ = fs::remove_file(backups::meta_path(dir, &m.name, offsite));
        } else {
            // Metadata first: from then on the backup no longer exists, whatever follows.
            fs::remove_file(backups::meta_path(dir, &m.name, false))?;
            image::remove_any(&backups::data_path(dir, &m.name, &m.kind))?;
        }
    }
    if gone.iter().any(|m| m.lower.is_some()) {
        prune_versions(ctx, cfg, dir);
    }
    Ok(())
}

/// Deletes the base versions of overlay slots that no slot and no backup needs any more.
fn prune_versions(ctx: &Ctx, cfg: &Config, dir: &Path) {
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let gone = layer::prune_versions(&machines, dir);
    if !gone.is_empty() {
        println!(
            "base versions no slot or backup uses any more, deleted: {}",
            gone.join(", ")
        );
    }
}

pub fn list(ctx: &Ctx, json: bool, offsite: bool) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let dir = backups::backup_dir(&cfg, &ctx.paths);
    let metas = all_entries(ctx, &cfg, &dir, offsite)?;
    if json {
        println!("{}", serde_json::to_string(&metas)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:<12} {:>10} {:<19} {:>10} KIND",
        "NAME", "SLOT", "NEW", "CREATED (UTC)", "FROZEN"
    );
    for m in &metas {
        let c = backups::utc_stamp(m.created_unix);
        let size = match m.kind.as_str() {
            SNAP => "-".to_string(),
            RESTIC if m.size == 0 && m.tree_bytes.is_none() => "?".to_string(),
            _ => format!("{:.1} MB", m.size as f64 / 1e6),
        };
        let frozen = m
            .freeze_ms
            .map_or("-".to_string(), |f| format!("{f:.0} ms"));
        println!(
            "{:<32} {:<12} {:>10} {}-{}-{} {}:{}:{} {:>10} {}{}",
            m.name,
            m.slot,
            size,
            &c[0..4],
            &c[4..6],
            &c[6..8],
            &c[9..11],
            &c[11..13],
            &c[13..15],
            frozen,
            m.kind,
            if m.offsite { " (off-site)" } else { "" }
        );
    }
    let files: u64 = metas.iter().filter(|m| m.kind == TAR).map(|m| m.size).sum();
    let mut total = format!("total: {} backups", metas.len());
    let r = if offsite {
        Some(repo(ctx, &cfg, true, false)?)
    } else {
        let l = backups::local_repo(&cfg, &ctx.paths);
        Path::new(&l.location).join("config").exists().then_some(l)
    };
    if let Some(r) = r {
        let size = r.size().map_err(anyhow::Error::new)?;
        total += &format!(", restic repository {:.1} MB", size as f64 / 1e6);
    }
    if files > 0 {
        total += &format!(", tar.zst files {:.1} MB", files as f64 / 1e6);
    }
    println!("{total}");
    Ok(ExitCode::SUCCESS)
}

pub fn del(ctx: &Ctx, name: &str, offsite: bool) -> anyhow::Result<ExitCode> {
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let dir = backups::backup_dir(&cfg, &ctx.paths);
    let found: Vec<Meta> = all_entries(ctx, &cfg, &dir, offsite)?
        .into_iter()
        .filter(|m| m.name == name)
        .collect();
    if found.is_empty() {
        return Err(bad_input(format!(
            "no backup named {name:?} (see slot-os backup-list{})",
            if offsite { " --offsite" } else { "" }
        )));
    }
    delete(ctx, &cfg, &dir, &found, offsite)?;
    println!("{name}: deleted");
    Ok(ExitCode::SUCCESS)
}

pub fn restore(ctx: &Ctx, slot: &str, name: &str, offsite: bool) -> anyhow::Result<ExitCode> {
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
        return restore_overlay(ctx, &cfg, &s, &lay, name, offsite);
    }
    let dest = lay.image.clone();
    let new = image::sibling(&dest, ".slot-os-new-");
    let unpack = image::sibling(&dest, ".slot-os-restore-");
    let _ = image::remove_any(&new);
    let _ = image::remove_any(&unpack);
    let dir = backups::backup_dir(&cfg, &ctx.paths);
    let t0 = Instant::now();
    let reset = !offsite && (name == cfg.host.image || name == "slot-os");
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
        let Some(m) = all_entries(ctx, &cfg, &dir, offsite)?
            .into_iter()
            .find(|m| m.name == name)
        else {
            return Err(bad_input(format!(
                "no backup named {name:?} (see slot-os backup-list{})",
                if offsite { " --offsite" } else { "" }
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
        match m.kind.as_str() {
            RESTIC => restore_restic(ctx, &cfg, &m, &unpack, &new, offsite),
            SNAP => image::snapshot(&backups::data_path(&dir, name, SNAP), &new, false),
            _ => restore_tar(&dir, &m, &s, &new),
        }
    };
    let _ = image::remove_any(&unpack);
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
    super::disk_apply::reapply(ctx, &machines, &s);
    println!(
        "{}: restored from {name} in {:.2} s",
        s.name,
        t0.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// restic restores (and verifies) the snapshot into `unpack`; its `rootfs` becomes `new`.
fn restore_restic(
    ctx: &Ctx,
    cfg: &Config,
    m: &Meta,
    unpack: &Path,
    new: &Path,
    offsite: bool,
) -> anyhow::Result<()> {
    let r = repo(ctx, cfg, offsite, false)?;
    let id = m
        .snapshot
        .as_deref()
        .context("backup without a snapshot ID")?;
    let (major, minor) = restic::version().map_err(anyhow::Error::new)?;
    let sparse_flag = (major, minor) >= (0, 15);
    notify::progress(&format!("restoring {} from {}", m.name, r.location));
    fs::create_dir(unpack).with_context(|| format!("creating {}", unpack.display()))?;
    // restic fills an existing directory: on btrfs a subvolume, so the restored slot can
    // be snapshotted and hold a qgroup like any other.
    image::create_image_dir(&unpack.join("rootfs"))?;
    r.restore(id, unpack, sparse_flag)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("restoring snapshot {id} from {}", r.location))?;
    let root = unpack.join("rootfs");
    if !fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()) {
        bail!("snapshot {id} holds no rootfs directory; it was not made by slot-os backup");
    }
    let info: backups::CaptureInfo =
        fs::read(unpack.join(backups::INFO_DIR).join(backups::INFO_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    if !sparse_flag {
        let files: Vec<PathBuf> = info
            .sparse_hex
            .iter()
            .filter_map(|h| backups::unhex_path(h))
            .collect();
        holes::dig(&root, &files).context("making sparse files sparse again")?;
    }
    fs::rename(&root, new).with_context(|| format!("moving the restored tree to {}", new.display()))
}

fn restore_tar(dir: &Path, m: &Meta, s: &Slot, new: &Path) -> anyhow::Result<()> {
    let data = backups::data_path(dir, &m.name, &m.kind);
    // Unpacked and hashed in one pass: a mismatch is only known at the end, but the
    // unpacked tree is beside the slot's root and is then thrown away.
    let corrupted = |sum: String| {
        anyhow::anyhow!(
            "backup {} is corrupted: its SHA-256 is {sum}, {} was recorded; refusing to restore, {} is unchanged",
            m.name,
            m.sha256.as_deref().unwrap_or("none"),
            s.name
        )
    };
    image::create_image_dir(new).map(|_| ())?;
    match archive::untar_zstd(&data, new) {
        Ok(sum) if Some(&sum) == m.sha256.as_ref() => Ok(()),
        Ok(sum) => Err(corrupted(sum)),
        // zstd stops at a damaged frame: hash the whole file to say why.
        Err(e) => match backups::sha256_file(&data) {
            Ok(sum) if Some(&sum) != m.sha256.as_ref() => Err(corrupted(sum)),
            _ => Err(e),
        },
    }
}

/// An overlay slot's restore: a new layer beside its layer (the backup's upper on the
/// version it was taken on, or for a reset an empty upper on the base's current version),
/// its identity written through a private mount, then exchanged with the old layer in one
/// rename. The caller holds the image lock and has unmounted the root.
fn restore_overlay(
    ctx: &Ctx,
    cfg: &Config,
    s: &Slot,
    lay: &Layout,
    name: &str,
    offsite: bool,
) -> anyhow::Result<ExitCode> {
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let stage = layout::stage_dir(&ctx.paths);
    let Some(dest) = lay.layer.as_deref() else {
        bail!("{} is not an overlay slot", s.name);
    };
    let t0 = Instant::now();
    let reset = !offsite && (name == cfg.host.image || name == "slot-os");
    let id = image::machine_id(&lay.capture_dir())
        .map(Ok)
        .unwrap_or_else(image::new_machine_id)?;
    let unchanged = || format!("restoring {name}; {} is unchanged", s.name);
    let mut mark = None;
    let dir = backups::backup_dir(cfg, &ctx.paths);
    let (v, backup) = if reset {
        let base = s
            .base_image
            .clone()
            .unwrap_or_else(|| cfg.host.image.clone());
        let (v, _) = lower::current(&machines, &base).map_err(|e| bad_input(e.to_string()))?;
        (v, None)
    } else {
        let Some(m) = all_entries(ctx, cfg, &dir, offsite)?
            .into_iter()
            .find(|m| m.name == name)
        else {
            return Err(bad_input(format!(
                "no backup named {name:?} (see slot-os backup-list{})",
                if offsite { " --offsite" } else { "" }
            )));
        };
        let Some(v) = m.lower.as_deref().and_then(lower::Version::parse) else {
            return Err(bad_input(format!(
                "backup {name} holds a whole root, not an overlay slot's upper; {} is an overlay slot: restore it into a slot with storage \"copy\" or \"btrfs\"",
                s.name
            )));
        };
        if m.kind == SNAP {
            bail!("backup {name} is a btrfs snapshot, an overlay slot's backup is not");
        }
        mark = Some(image::Restored {
            backup: m.name.clone(),
            created_unix: m.created_unix,
        });
        (v, Some(m))
    };
    let keys = if reset { HostKeys::New } else { HostKeys::Keep };
    let tmp = layer::prepare(
        &machines,
        lay.image_name.as_str(),
        &v,
        &stage,
        |upper| {
            let Some(m) = &backup else { return Ok(()) };
            if m.kind == RESTIC {
                // Restored and verified inside the new layer, then renamed over its empty
                // upper; a killed run's leftovers go with the whole `.new-` layer.
                let unpack = upper.with_file_name("restore");
                let made = restore_restic(ctx, cfg, m, &unpack, upper, offsite);
                let _ = image::remove_any(&unpack);
                return made;
            }
            let data = backups::data_path(&dir, name, &m.kind);
            match archive::untar_zstd(&data, upper) {
                Ok(got) if Some(&got) == m.sha256.as_ref() => Ok(()),
                Ok(got) => bail!(
                    "backup {name} is corrupted: its SHA-256 is {got}, {} was recorded; refusing to restore",
                    m.sha256.as_deref().unwrap_or("none")
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
    super::disk_apply::reapply(ctx, &machines, s);
    println!(
        "{}: restored from {name} in {:.2} s (overlay on {v})",
        s.name,
        t0.elapsed().as_secs_f64()
    );
    prune_versions(ctx, cfg, &dir);
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
    /// Into the off-site repository ([backup] offsite) instead of the host's own.
    #[arg(long)]
    pub offsite: bool,
}

impl BackupArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        backup(ctx, &self.slot, &self.name, self.offsite)
    }
}

#[derive(clap::Args, Debug)]
pub struct AutoArgs {
    pub slot: String,
    /// How many automatic backups of the slot to keep (at least 1).
    #[arg(long, default_value_t = 7)]
    pub keep: u32,
    /// Into the off-site repository (and keep that many there).
    #[arg(long)]
    pub offsite: bool,
}

impl AutoArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        auto(ctx, &self.slot, self.keep, self.offsite)
    }
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
    /// The off-site repository's backups.
    #[arg(long)]
    pub offsite: bool,
}

impl ListArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        list(ctx, self.json, self.offsite)
    }
}

#[derive(clap::Args, Debug)]
pub struct DelArgs {
    pub image: String,
    /// From the off-site repository.
    #[arg(long)]
    pub offsite: bool,
}

impl DelArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        del(ctx, &self.image, self.offsite)
    }
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    pub slot: String,
    pub image: String,
    /// From the off-site repository (e.g. on another host).
    #[arg(long)]
    pub offsite: bool,
}

impl RestoreArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        restore(ctx, &self.slot, &self.image, self.offsite)
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
