//! `import FILE|- [NAME]`: a slot exported by `export` (export.rs), from a file or from
//! standard input, read once: the stream's checksum trailer is checked as it passes, the
//! manifest and the slot's TOML at its front are checked against this host's config before
//! anything is unpacked, and the root is unpacked through the member check into a hidden
//! directory that is renamed into place only once the whole stream proved whole. The
//! TOML, written last, is what makes the slot exist.
//!
//! The stream is untrusted, whoever made it: host access its TOML asks for is refused
//! unless `--trust-config` (docs/security.md).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use slot_config::names::{check_slot_name, number_from_name};
use toml_edit::DocumentMut;

use super::Ctx;
use crate::config::edit::{arriving, validate_change, write_atomic};
use crate::config::trust::host_access;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::hostkeys::HostKeys;
use crate::storage::image;
use crate::storage::stream::{Manifest, FORMAT, MANIFEST, SLOT_TOML};
use crate::storage::unpack::{self, Source};
use crate::sys::lock;

/// How the export is named in messages and in the hint to run it again.
fn shown(file: &Path) -> String {
    if file.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        file.display().to_string()
    }
}

pub fn import(
    ctx: &Ctx,
    file: &Path,
    name: Option<&str>,
    trust_config: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(n) = name {
        check_slot_name(n)?;
    }
    let what = shown(file);
    let source = if file.as_os_str() == "-" {
        Source::Stdin
    } else {
        if !file.is_file() {
            return Err(bad_input(format!("{} is not a file", file.display())));
        }
        Source::File(fs::File::open(file).with_context(|| format!("opening {}", file.display()))?)
    };
    let not_export = |why: String| {
        bad_input(format!(
            "{what} is not a slot-os export ({why}); nothing was changed"
        ))
    };
    let stream = unpack::open(source, 2).map_err(|e| not_export(format!("{e:#}")))?;
    // GNU tar lists slot-os-export/ in directory order: the two are found by name.
    let member = |expect: &str| -> anyhow::Result<String> {
        match stream.members().iter().find(|(n, _)| n == expect) {
            Some((_, data)) => String::from_utf8(data.clone())
                .map_err(|_| not_export(format!("{expect} is not UTF-8"))),
            None => Err(not_export(format!(
                "{expect} is not among its first members"
            ))),
        }
    };
    let manifest: Manifest = serde_json::from_str(&member(MANIFEST)?)
        .map_err(|e| bad_input(format!("{what}: bad manifest: {e}")))?;
    if manifest.format > FORMAT || manifest.format == 0 {
        return Err(bad_input(format!(
            "{what} has export format {}, this slot-os reads formats 1 to {FORMAT}",
            manifest.format
        )));
    }
    if manifest.format >= 2 && !stream.checked {
        return Err(bad_input(format!(
            "{what} ends without its checksum trailer: it was cut short or damaged; nothing was changed"
        )));
    }
    let new = name.unwrap_or(&manifest.slot).to_string();
    check_slot_name(&new)?;
    let mut doc: DocumentMut = member(SLOT_TOML)?
        .parse()
        .map_err(|e| bad_input(format!("{what}: bad slot.toml: {e}")))?;

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
    arriving(&mut doc, &new, number);
    // The root becomes the image of the new slot's own name, a plain image whatever it was
    // on the exporting host (an export holds the whole tree).
    let had_storage = doc.remove("storage").is_some();
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
                "{what}: its slot.toml asks for access to the host:\n  {}\nan export file is not trusted; if you trust this one, run: slot-os import --trust-config {} {new}\nnothing was changed",
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
    let layer = crate::storage::layer::path(&machines, &new);
    if layer.symlink_metadata().is_ok() {
        return Err(bad_input(format!(
            "an overlay layer named {new} exists at {}",
            layer.display()
        )));
    }

    let tmp = image::sibling(&dest, ".slot-os-import-");
    image::remove_any(&tmp)?;
    fs::create_dir_all(&machines)?;
    image::create_image_dir(&tmp)?;
    let unpacked = stream.extract(&tmp, &["--strip-components=1", "rootfs"], &what);
    if let Err(e) = unpacked {
        let _ = image::remove_any(&tmp);
        return Err(e.context(format!(
            "importing {what}: it may be damaged or crafted; nothing was changed"
        )));
    }
    // Moved, it is the same machine and keeps its ID; copied under a new name, it is a
    // new machine and needs its own (networkd and nspawn derive MACs from it).
    let prepared = image::refuse_devices(&tmp, &what).and_then(|()| {
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
        // An import is no restore, whatever mark the file's root carried.
        image::clear_restored(&tmp)?;
        image::sync_fs(&tmp)
    });
    if let Err(e) = prepared {
        let _ = image::remove_any(&tmp);
        return Err(e.context(format!("importing {what}; nothing was changed")));
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
        doc["storage"] = toml_edit::value(storage.as_str());
        doc.to_string()
    } else {
        text
    };
    fs::rename(&tmp, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
    // The config file, written last, is what makes the slot exist.
    write_atomic(&new_file, &text)?;
    Bus::system()?.reload_config()?;
    if let Some(s) = after.slot(&new) {
        super::disk_apply::reapply(ctx, &machines, s);
    }
    if name.is_none() {
        // With a NAME, dispatch logs it; without, only now is the slot's name known.
        crate::sys::journal::record("import", &new, true, "done");
    }
    println!(
        "{new}: imported from {what} (exported as {} on {})",
        manifest.slot, manifest.created_unix
    );
    if dropped_autostart {
        println!("{new}: the file asked for autostart, which import does not carry over; turn it on with: slot-os autostart on {new}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// An export file, or `-` to read the export from standard input.
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
