//! The backup store: the backup directory (root only), what each backup is, and where its
//! data lives.
//!
//! Two kinds of data live side by side:
//! - **restic** (the default engine): snapshots in the repository `BACKUPS/restic` (or the
//!   off-site one), tagged `slot-os`, `slot=SLOT`, `name=SLOT.NAME`. The snapshot is what
//!   makes such a backup exist; `NAME.json` beside it only adds what restic does not keep
//!   (the bytes it added, the freeze), and a snapshot without one is still listed.
//! - **tar.zst / snapshot** (engine "tar", and every backup slot-os made before): data
//!   under a hidden temporary name renamed when complete, then `NAME.json`, written last,
//!   makes the backup exist; leftovers without metadata are swept by the next command.
//!
//! Each slot's capture stage (`BACKUPS/.stage/SLOT`) is kept between backups: the next
//! capture copies only what changed.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use slot_config::Config;

use crate::storage::capture::Stage;
use crate::storage::restic::{Repo, Snapshot};
use crate::storage::{archive, image};

pub const SNAP: &str = "snapshot";
pub const TAR: &str = "tar.zst";
pub const RESTIC: &str = "restic";

/// What `NAME.json` says of one backup.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Meta {
    pub name: String,
    pub slot: String,
    pub kind: String,
    pub created_unix: u64,
    /// tar.zst: the file's size; restic: the bytes this backup added to the repository
    /// (before compression, as restic counts them).
    pub size: u64,
    pub sha256: Option<String>,
    pub freeze_ms: Option<f64>,
    /// restic: the snapshot's ID, and whether it is in the off-site repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offsite: bool,
    /// restic: the tree's apparent size (what a tar of it would hold before compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_bytes: Option<u64>,
    /// "overlay" for a backup of an overlay slot: it holds the upper directory only...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// ...which needs this base version (`IMAGE@N`) below it; the version is kept while
    /// the backup exists (`lower::used_by_backups` reads this field of every NAME.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<String>,
}

pub fn backup_dir(cfg: &Config, paths: &slot_config::Paths) -> PathBuf {
    paths.under(&cfg.host.backup_dir)
}

pub fn data_path(dir: &Path, name: &str, kind: &str) -> PathBuf {
    if kind == SNAP {
        dir.join(format!("{name}.snap"))
    } else {
        dir.join(format!("{name}.tar.zst"))
    }
}

pub fn meta_path(dir: &Path, name: &str, offsite: bool) -> PathBuf {
    if offsite {
        dir.join(format!("{name}.offsite.json"))
    } else {
        dir.join(format!("{name}.json"))
    }
}

pub fn stage(dir: &Path, slot: &str) -> Stage {
    Stage::new(dir.join(".stage").join(slot))
}

/// The host's own repository.
pub fn local_repo(cfg: &Config, paths: &slot_config::Paths) -> Repo {
    Repo {
        location: backup_dir(cfg, paths)
            .join("restic")
            .to_string_lossy()
            .into_owned(),
        password_file: paths.under(&cfg.host.backup.password_file),
        env_file: None,
        cache_dir: None,
    }
}

/// The off-site repository, if one is configured.
pub fn offsite_repo(cfg: &Config, paths: &slot_config::Paths) -> Option<Repo> {
    let b = &cfg.host.backup;
    Some(Repo {
        location: b.offsite.clone()?,
        password_file: paths.under(b.offsite_password_file.as_ref()?),
        env_file: b.offsite_env_file.as_ref().map(|p| paths.under(p)),
        cache_dir: Some(paths.under(Path::new("/var/cache/slot-os/restic"))),
    })
}

/// Removes what interrupted runs left: hidden temporaries, data without metadata, and
/// the stages of slots that no longer exist.
pub fn sweep(dir: &Path, cfg: &Config) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let n = e.file_name().to_string_lossy().into_owned();
        let orphan = (n.ends_with(".snap") || n.ends_with(".tar.zst"))
            && !meta_path(
                dir,
                n.trim_end_matches(".snap").trim_end_matches(".tar.zst"),
                false,
            )
            .exists();
        if n.starts_with(".tmp-") || orphan {
            let _ = image::remove_any(&p);
        }
    }
    for e in fs::read_dir(dir.join(".stage"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if !cfg.slots.iter().any(|s| s.name == n) {
            let _ = image::remove_any(&e.path());
        }
    }
}

/// The backup dir holds every file of every slot, their keys included: root only. A dir
/// an older slot-os or an admin left open to others is closed, and that is said.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
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
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("backup path has no directory")?;
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".tmp-{name}.{}", std::process::id()));
    crate::sys::replace_file(path, &tmp, text, Some(0o600))
}

/// Every `NAME.json` (local and `NAME.offsite.json` of the off-site repository).
pub fn read_meta(dir: &Path) -> Vec<Meta> {
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

/// The file-per-backup kinds (tar.zst, snapshot).
pub fn legacy(dir: &Path) -> Vec<Meta> {
    read_meta(dir)
        .into_iter()
        .filter(|m| m.kind != RESTIC)
        .collect()
}

/// The backups in a restic repository, with what our `NAME.json` adds to each.
pub fn restic_entries(dir: &Path, snaps: &[Snapshot], offsite: bool) -> Vec<Meta> {
    let metas = read_meta(dir);
    let mut out: Vec<Meta> = snaps
        .iter()
        .filter_map(|s| {
            let name = s.tag("name")?.to_string();
            let known = metas
                .iter()
                .find(|m| m.kind == RESTIC && m.offsite == offsite && same_snapshot(m, s));
            Some(Meta {
                slot: s.tag("slot").unwrap_or("").to_string(),
                kind: RESTIC.into(),
                created_unix: parse_time(&s.time).unwrap_or(0),
                size: known.map_or(0, |m| m.size),
                sha256: None,
                freeze_ms: known
                    .and_then(|m| m.freeze_ms)
                    .or_else(|| s.tag("freeze-ms").and_then(|v| v.parse().ok())),
                snapshot: Some(s.id.clone()),
                offsite,
                tree_bytes: known.and_then(|m| m.tree_bytes),
                // The snapshot's tags say it too: a host without our NAME.json (a restore
                // from the off-site repository elsewhere) still knows what it needs below.
                storage: known
                    .and_then(|m| m.storage.clone())
                    .or_else(|| s.tag("storage").map(str::to_string)),
                lower: known
                    .and_then(|m| m.lower.clone())
                    .or_else(|| s.tag("lower").map(str::to_string)),
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.created_unix, &a.name).cmp(&(b.created_unix, &b.name)));
    out
}

/// restic's backup summary names the snapshot by its short ID (0.14), `snapshots` by
/// the whole one.
fn same_snapshot(m: &Meta, s: &Snapshot) -> bool {
    m.snapshot
        .as_deref()
        .is_some_and(|id| id.len() >= 8 && s.id.starts_with(id))
}

/// Drops `NAME.json` files of restic backups whose snapshot is gone (forgotten by another
/// host sharing the repository, or a run killed between forget and this removal).
pub fn drop_stale_meta(dir: &Path, snaps: &[Snapshot], offsite: bool) {
    for m in read_meta(dir) {
        if m.kind == RESTIC && m.offsite == offsite && !snaps.iter().any(|s| same_snapshot(&m, s)) {
            let _ = fs::remove_file(meta_path(dir, &m.name, offsite));
        }
    }
}

pub fn sha256_file(p: &Path) -> anyhow::Result<String> {
    let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    archive::pump(f, std::io::sink(), "verified", |c| h.update(c))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// restic's RFC 3339 times (`2026-12-04T14:28:12.388747127+01:00`, or `Z`) as Unix seconds.
pub fn parse_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z') | None => 0,
        Some(sign @ (b'+' | b'-')) => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(t).ok()
}

/// `YYYYMMDD-HHMMSS` in UTC: sorts as time does and is a valid backup name.
pub fn utc_stamp(unix: u64) -> String {
    let (days, secs) = ((unix / 86400) as i64, unix % 86400);
    // Howard Hinnant's civil_from_days.
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

/// What a capture leaves beside `rootfs` in the stage, backed up with it (`slot-os/`):
/// enough to restore it on any host.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct CaptureInfo {
    pub format: u32,
    pub slot: String,
    pub name: String,
    pub freeze_ms: Option<f64>,
    /// Sparse files, as hex of their path bytes relative to rootfs.
    pub sparse_hex: Vec<String>,
}

pub const INFO_DIR: &str = "slot-os";
pub const INFO_FILE: &str = "capture.json";

pub fn hex_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    archive::hex(p.as_os_str().as_bytes())
}

pub fn unhex_path(s: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_795_451_589), "20261123-163309");
    }

    #[test]
    fn restic_times_parse_with_any_offset() {
        assert_eq!(
            parse_time("2026-11-23T16:33:09.123456789Z"),
            Some(1_795_451_589)
        );
        assert_eq!(
            parse_time("2026-11-23T17:33:09.5+01:00"),
            Some(1_795_451_589)
        );
        assert_eq!(parse_time("2026-11-23T16:33:09Z"), Some(1_795_451_589));
        assert_eq!(parse_time("2000-02-29T00:00:00-00:00"), Some(951_782_400));
        assert_eq!(parse_time("garbage"), None);
    }

    #[test]
    fn sparse_paths_survive_hex() {
        use std::os::unix::ffi::OsStrExt;
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(b"var/\xffodd name"));
        assert_eq!(unhex_path(&hex_path(&p)), Some(p));
        assert_eq!(unhex_path("zz"), None);
    }
}
