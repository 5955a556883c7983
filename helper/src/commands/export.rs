//! `export SLOT FILE` / `import FILE [NAME]`: a slot (root and TOML) as one file, to move
//! it to another host (fog05's migration).
//!
//! The file is a zstd-compressed tar: first `slot-os-export/manifest.json` and
//! `slot-os-export/slot.toml`, then the root under `rootfs/`. The metadata comes first so
//! `import` can check everything (name, number, bridges, addresses) by reading a few
//! kilobytes before it unpacks anything. zstd's frame checksums make a damaged file fail
//! to unpack. Both directions write under a temporary name and rename when complete.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use slot_config::names::{check_slot_name, number_from_name};
use toml_edit::{value, DocumentMut};

use super::Ctx;
use crate::config::edit::{validate_change, write_atomic};
use crate::config::targets;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::archive::tar_zstd;
use crate::storage::freeze;
use crate::storage::hostkeys::HostKeys;
use crate::storage::image;
use crate::storage::layout;
use crate::sys::lock;

const FORMAT: u32 = 1;
const META_DIR: &str = "slot-os-export";
const MANIFEST: &str = "slot-os-export/manifest.json";
const SLOT_TOML: &str = "slot-os-export/slot.toml";

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Manifest {
    format: u32,
    slot: String,
    /// `None` (null) for a slot without a number.
    number: Option<u32>,
    created_unix: u64,
    exported_by: String,
}

pub fn export(ctx: &Ctx, slot: &str, file: &Path) -> anyhow::Result<ExitCode> {
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?.clone();
    if file.symlink_metadata().is_ok() {
        return Err(bad_input(format!(
            "{} exists; export never overwrites a file",
            file.display()
        )));
    }
    let name = file
        .file_name()
        .with_context(|| format!("{} is not a file name", file.display()))?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(bad_input(format!(
            "{} is not a directory",
            parent.display()
        )));
    }
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let lay = layout::Layout::of(&machines, &s);
    if !lay.exists() {
        bail!(
            "{} has no image at {}",
            s.name,
            lay.restore_target().display()
        );
    }
    // An overlay slot is exported as its merged tree (base version and upper, IDs as on
    // disk), read through a read-only overlay of its own that only this process sees: the
    // file then boots on any host, which need not have this host's base versions. tar
    // reaches it through our descriptor of its root.
    let merged = match lay.is_overlay() {
        true => {
            let stage = layout::stage_dir(&ctx.paths);
            let m = crate::storage::layer::mount_read_only(&machines, s.image_name(), &stage)
                .with_context(|| format!("mounting {}'s merged tree for the export", s.name))?;
            Some(crate::sys::overlay::root_dir(&m)?)
        }
        false => None,
    };
    let root = match &merged {
        Some(dir) => PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(dir)
        )),
        None => lay.image.clone(),
    };

    let meta = ctx
        .paths
        .run_dir()
        .join(format!("export-{}", std::process::id()));
    let _ = image::remove_tree(&meta);
    fs::create_dir_all(ctx.paths.run_dir())?;
    // The slot's TOML may hold secrets (environment): root only, as the export itself.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(meta.join(META_DIR))
        .with_context(|| format!("creating {}", meta.display()))?;
    let manifest = Manifest {
        format: FORMAT,
        slot: s.name.clone(),
        number: s.number,
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        exported_by: format!("slot-os {}", env!("CARGO_PKG_VERSION")),
    };
    fs::write(
        meta.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    fs::copy(&s.file, meta.join(SLOT_TOML))
        .with_context(|| format!("reading {}", s.file.display()))?;

    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut tar = crate::storage::archive::tar_create(&meta);
    // Only member names and hard-link targets move under rootfs/; symlink targets
    // (which may start with "../") must stay as they are.
    tar.arg("--transform=s,^\\.,rootfs,S")
        .arg(META_DIR)
        .arg("--directory")
        .arg(&root)
        .arg(".");

    let bus = Bus::system()?;
    let frozen = freeze::for_capture(&bus, &ctx.paths, &s, "export")?;
    let running = frozen.is_some();
    let written = tar_zstd(tar, &tmp, "exported");
    drop(frozen);
    let _ = image::remove_tree(&meta);
    let (size, sha) = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e.context("nothing was written"));
        }
    };
    fs::rename(&tmp, file).with_context(|| format!("renaming into {}", file.display()))?;
    println!(
        "{}: exported to {} ({:.1} MB, sha256 {sha}){}",
        s.name,
        file.display(),
        size as f64 / 1e6,
        if running {
            ", slot frozen meanwhile"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// One member of the export, read from the front of the file only.
fn read_member(file: &Path, member: &str) -> anyhow::Result<String> {
    let out = crate::sys::tool("tar")
        .args(["--extract", "--to-stdout", "--occurrence=1", "--file"])
        .arg(file)
        .arg(member)
        .output()
        .context("running tar")?;
    if !out.status.success() {
        return Err(bad_input(format!(
            "{} is not a slot-os export (no {member} in it): {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout).with_context(|| format!("{member} is not UTF-8"))
}

/// Keys of an imported slot.toml that give the slot the host (a privileged slot's root
/// is the host's root; a bind mounts any host path into it): the file is untrusted, so
/// they need `--trust-config`.
fn host_access(s: &slot_config::Slot) -> Vec<String> {
    let mut keys = Vec::new();
    if s.privileged {
        keys.push("privileged = true".to_string());
    }
    for b in &s.binds {
        keys.push(format!(
            "[[bind]] source = {:?} (host path, mounted at {:?})",
            b.source.display().to_string(),
            b.target.display().to_string()
        ));
    }
    keys
}

pub fn import(
    ctx: &Ctx,
    file: &Path,
    name: Option<&str>,
    trust_config: bool,
) -> anyhow::Result<ExitCode> {
    if !file.is_file() {
        return Err(bad_input(format!("{} is not a file", file.display())));
    }
    if let Some(n) = name {
        check_slot_name(n)?;
    }
    let manifest: Manifest = serde_json::from_str(&read_member(file, MANIFEST)?)
        .map_err(|e| bad_input(format!("{}: bad manifest: {e}", file.display())))?;
    if manifest.format != FORMAT {
        return Err(bad_input(format!(
            "{} has export format {}, this slot-os reads format {FORMAT}",
            file.display(),
            manifest.format
        )));
    }
    let new = name.unwrap_or(&manifest.slot).to_string();
    check_slot_name(&new)?;
    let mut doc: DocumentMut = read_member(file, SLOT_TOML)?
        .parse()
        .map_err(|e| bad_input(format!("{}: bad slot.toml: {e}", file.display())))?;

    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let new_file = ctx.paths.config_dir().join(format!("{new}.toml"));
    if cfg.slot(&new).is_some() || new_file.exists() {
        return Err(bad_input(format!(
            "a slot named {new} exists; import under another name: slot-os import {} NAME",
            file.display()
        )));
    }
    let number = number_from_name(&new).or(manifest.number);
    if let Some(other) = number.and_then(|n| cfg.slot_by_number(n)) {
        let number = number.unwrap_or_default();
        return Err(bad_input(format!(
            "slot number {number} is taken by {}; import under another name, e.g. slot-os import {} slotNN",
            other.name,
            file.display()
        )));
    }
    // The root becomes the image of the new slot's own name, a plain image whatever it was
    // on the exporting host (an export holds the whole tree).
    doc.remove("image");
    let had_storage = doc.remove("storage").is_some();
    match number {
        Some(n) if number_from_name(&new) != Some(n) => doc["number"] = value(i64::from(n)),
        _ => {
            doc.remove("number");
        }
    }
    // Starting at boot is the admin's decision, not the file's: not carried over.
    let dropped_autostart = !trust_config
        && doc
            .get("autostart")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
    if !trust_config {
        doc.remove("autostart");
    }
    let text = doc.to_string();
    let after = validate_change(ctx, &new_file, &text)?;
    if !trust_config {
        let asks = after.slot(&new).map(host_access).unwrap_or_default();
        if !asks.is_empty() {
            return Err(bad_input(format!(
                "{}: its slot.toml asks for access to the host:\n  {}\nan export file is not trusted; if you trust this one, run: slot-os import --trust-config {} {new}\nnothing was changed",
                file.display(),
                asks.join("\n  "),
                file.display()
            )));
        }
    }
    let machines = ctx.paths.under(&cfg.host.machines_dir);
    let dest = machines.join(&new);
    if dest.symlink_metadata().is_ok() {
        return Err(bad_input(format!(
            "an image named {new} exists at {}",
            dest.display()
        )));
    }

    let tmp = image::sibling(&dest, ".slot-os-import-");
    image::remove_any(&tmp)?;
    fs::create_dir_all(&machines)?;
    image::create_image_dir(&tmp)?;
    let unpacked = crate::storage::archive::tar_extract(&tmp, file.as_os_str())
        .args(["--strip-components=1", "rootfs"])
        .status()
        .context("running tar");
    match unpacked {
        Ok(st) if st.success() => {}
        other => {
            let _ = image::remove_any(&tmp);
            let why = match other {
                Ok(st) => format!("tar {st}"),
                Err(e) => format!("{e:#}"),
            };
            bail!(
                "unpacking {} failed ({why}); the file may be damaged; nothing was changed",
                file.display()
            );
        }
    }
    // Moved, it is the same machine and keeps its ID; copied under a new name, it is a
    // new machine and needs its own (networkd and nspawn derive MACs from it).
    let prepared = image::refuse_devices(&tmp, &file.display().to_string()).and_then(|()| {
        let (id, keys) = match new == manifest.slot {
            true => (
                image::machine_id(&tmp)
                    .map(Ok)
                    .unwrap_or_else(image::new_machine_id)?,
                HostKeys::Keep,
            ),
            false => (image::new_machine_id()?, HostKeys::New),
        };
        image::set_identity(&tmp, &new, Some(&id), keys)?;
        image::sync_fs(&tmp)
    });
    if let Err(e) = prepared {
        let _ = image::remove_any(&tmp);
        return Err(e.context(format!("importing {}; nothing was changed", file.display())));
    }
    // A file that recorded its storage (an overlay slot's, say) now records what this host
    // made; one that did not stays a plain image without the key, as it was.
    let text = if had_storage {
        let storage = if image::is_subvolume(&tmp) {
            slot_config::Storage::Btrfs
        } else {
            slot_config::Storage::Copy
        };
        let mut doc: DocumentMut = text.parse().context("re-reading the slot's file")?;
        doc["storage"] = value(storage.as_str());
        doc.to_string()
    } else {
        text
    };
    fs::rename(&tmp, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
    // The config file, written last, is what makes the slot exist.
    write_atomic(&new_file, &text)?;
    Bus::system()?.reload_config()?;
    if name.is_none() {
        // With a NAME, dispatch logs it; without, only now is the slot's name known.
        crate::sys::journal::record("import", &new, true, "done");
    }
    println!(
        "{new}: imported from {} (exported as {} on {})",
        file.display(),
        manifest.slot,
        manifest.created_unix
    );
    if dropped_autostart {
        println!("{new}: the file asked for autostart, which import does not carry over; turn it on with: slot-os autostart on {new}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    pub slot: String,
    pub file: PathBuf,
}

impl ExportArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        export(ctx, &self.slot, &self.file)
    }
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    pub file: PathBuf,
    pub name: Option<String>,
    /// Keep what the file's slot.toml asks for that reaches the host (privileged,
    /// bind mounts) or starts it unasked (autostart). Without it those keys are
    /// refused (autostart: not carried over).
    #[arg(long)]
    pub trust_config: bool,
}

impl ImportArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        import(ctx, &self.file, self.name.as_deref(), self.trust_config)
    }
}
