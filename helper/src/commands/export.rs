//! `export SLOT FILE|-`: a slot (root and TOML) as one file or stream, to move it to another
//! host (fog05's migration); `import` (import.rs) reads it back.
//!
//! The stream is a zstd-compressed tar: first `slot-os-export/manifest.json` and
//! `slot-os-export/slot.toml`, then the root under `rootfs/`, then the SHA-256 of the
//! compressed bytes as a zstd skippable frame (`storage::stream`), so a stream piped from
//! host to host is checked end to end without being stored first. The metadata comes first
//! so `import` can check everything (name, number, bridges, addresses) before it unpacks
//! anything. A file is written under a temporary name and renamed when complete.

use std::fs;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::Ctx;
use crate::config::targets;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::storage::archive::{hex, tar_zstd_into};
use crate::storage::freeze;
use crate::storage::image;
use crate::storage::layout;
use crate::storage::stream::{trailer, Manifest, FORMAT, MANIFEST, META_DIR, SLOT_TOML};
use crate::sys::lock;

/// Where the export goes: a new file (never overwritten), or standard output.
enum Dest {
    File { path: PathBuf, tmp: PathBuf },
    Stdout,
}

fn dest(file: &Path) -> anyhow::Result<Dest> {
    if file.as_os_str() == "-" {
        if std::io::stdout().is_terminal() {
            return Err(bad_input(
                "export to - writes the slot to standard output, which is a terminal; pipe it (slot-os export N - | ssh HOST slot-os import -) or redirect it",
            ));
        }
        return Ok(Dest::Stdout);
    }
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
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    Ok(Dest::File {
        path: file.to_path_buf(),
        tmp,
    })
}

pub fn export(ctx: &Ctx, slot: &str, file: &Path) -> anyhow::Result<ExitCode> {
    let _lock = lock::exclusive(&ctx.paths)?;
    let cfg = ctx.load();
    let s = targets::resolve_one(&cfg, slot)?.clone();
    let dest = dest(file)?;
    let machines = layout::machines_dir(&ctx.paths, &cfg.host);
    let lay = layout::Layout::existing(&machines, &s)?;
    // An overlay slot is exported as its merged tree (base version and upper, IDs as on
    // disk), read through a read-only overlay of its own that only this process sees: the
    // file then boots on any host, which need not have this host's base versions. tar
    // reaches it through our descriptor of its root.
    let merged = match lay.is_overlay() {
        true => Some(
            crate::storage::layer::ReadOnlyTree::mount(
                &machines,
                s.image_name(),
                &layout::stage_dir(&ctx.paths),
            )
            .with_context(|| format!("mounting {}'s merged tree for the export", s.name))?,
        ),
        false => None,
    };
    let root = merged
        .as_ref()
        .map_or(lay.image.as_path(), |t| t.path())
        .to_path_buf();

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
    let mut out: Box<dyn Write> = match &dest {
        // Root only from the first byte: an export holds every file of a slot.
        Dest::File { tmp, .. } => Box::new(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp)
                .with_context(|| format!("creating {}", tmp.display()))?,
        ),
        Dest::Stdout => Box::new(std::io::stdout().lock()),
    };
    let written = tar_zstd_into(tar, &mut out, "exported");
    drop(frozen);
    let _ = image::remove_tree(&meta);
    let finished = written.and_then(|(size, digest)| {
        out.write_all(&trailer(&digest))?;
        out.flush()?;
        Ok((size, digest))
    });
    drop(out);
    let (size, digest) = match finished {
        Ok(v) => v,
        Err(e) => {
            if let Dest::File { tmp, .. } = &dest {
                let _ = fs::remove_file(tmp);
            }
            return Err(e.context("nothing was written"));
        }
    };
    let frozen_note = if running {
        ", slot frozen meanwhile"
    } else {
        ""
    };
    match &dest {
        Dest::File { path, tmp } => {
            fs::File::open(tmp)?.sync_all()?;
            fs::rename(tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
            println!(
                "{}: exported to {} ({:.1} MB, sha256 {}){frozen_note}",
                s.name,
                path.display(),
                size as f64 / 1e6,
                hex(&digest)
            );
        }
        Dest::Stdout => eprintln!(
            "{}: exported to standard output ({:.1} MB, sha256 {}){frozen_note}",
            s.name,
            size as f64 / 1e6,
            hex(&digest)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    pub slot: String,
    /// The file to write (never overwritten), or `-` for standard output.
    pub file: PathBuf,
}

impl ExportArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        export(ctx, &self.slot, &self.file)
    }
}
