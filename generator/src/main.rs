//! slot-os-generator: a systemd generator (man systemd.generator) that turns
//! /etc/slot-os/*.toml into .nspawn files, networkd files and unit drop-ins.
//!
//! It must never fail boot: a bad file is logged and skipped, every other slot still gets
//! its units, and the exit code is 0 whatever happened after the arguments were read.

mod log;
mod write;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use slot_config::render::{
    render_host, render_slot, OutDir, Output, DROPIN_NAME, MACHINES_TARGET, NETWORKD_UNIT,
    NETWORKD_UNIT_PATH,
};
use slot_config::{load_dir, Config, HostFacts, Paths};

use crate::log::{Level, Log};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 1 && args.len() != 3 {
        eprintln!("usage: slot-os-generator NORMAL_DIR [EARLY_DIR LATE_DIR]");
        return ExitCode::from(2);
    }
    let paths = Paths::from_env();
    let log = Log::open(paths.is_real_root());
    let dirs = Dirs {
        nspawn: paths.nspawn_dir(),
        network: paths.network_dir(),
        units: PathBuf::from(&args[0]),
    };
    run(&paths, &dirs, &log);
    ExitCode::SUCCESS
}

struct Dirs {
    nspawn: PathBuf,
    network: PathBuf,
    units: PathBuf,
}

fn run(paths: &Paths, dirs: &Dirs, log: &Log) {
    let facts = HostFacts::read(paths);
    let cfg = load_dir(paths, &facts);
    for p in &cfg.problems {
        log.log(Level::Error, &p.to_string());
    }
    if cfg.dir_unreadable {
        // Not knowing the slots is not "no slots": removing their files would stop every
        // slot at the next start. What is already in /run stays as it is.
        log.log(
            Level::Error,
            "config directory unreadable: generated files left as they are, nothing written or removed",
        );
        return;
    }
    if cfg.host_skipped {
        log.log(
            Level::Warning,
            "host-wide settings skipped because of the errors above; built-in defaults used",
        );
    }
    for name in &cfg.skipped {
        log.log(
            Level::Error,
            &format!(
                "slot {name} skipped because of the errors above; its units were not generated"
            ),
        );
    }

    let (open, written) = write_all(&cfg, dirs, log);

    // Slots and bridges removed since the last run: /run/systemd/{nspawn,network} outlive
    // daemon-reload, so their old files would otherwise still configure a removed slot.
    // A directory that was empty when this run began (at boot: all of them) holds only
    // what this run wrote, so it is not listed again.
    let had_files = |d: &Option<write::OpenDir>| d.as_ref().is_none_or(|d| !d.existing.is_empty());
    let mut errors = Vec::new();
    if had_files(&open.nspawn) {
        errors.extend(write::remove_stale(&dirs.nspawn, &written, |n| {
            n.ends_with(".nspawn")
        }));
    }
    if had_files(&open.network) {
        errors.extend(write::remove_stale(&dirs.network, &written, |n| {
            n.contains("-slot-os-")
        }));
    }
    if had_files(&open.units) {
        errors.extend(remove_stale_units(&dirs.units, &written));
    }
    for (path, e) in errors {
        log.log(
            Level::Error,
            &format!("cannot remove stale {}: {e}", path.display()),
        );
    }
}

/// The open output directories, by kind.
struct Open {
    nspawn: Option<write::OpenDir>,
    network: Option<write::OpenDir>,
    units: Option<write::OpenDir>,
}

impl Open {
    fn of(&self, d: OutDir) -> Option<&write::OpenDir> {
        match d {
            OutDir::Nspawn => self.nspawn.as_ref(),
            OutDir::Network => self.network.as_ref(),
            OutDir::Units => self.units.as_ref(),
        }
    }
}

/// Renders and writes every output, the slots spread over as many threads as there are
/// CPUs (each slot's files are its own), and returns the directories as they were found
/// and the paths that now hold current content.
fn write_all(cfg: &Config, dirs: &Dirs, log: &Log) -> (Open, HashSet<PathBuf>) {
    let open = |p: &Path| match write::open_dir(p) {
        Ok(d) => Some(d),
        Err(e) => {
            log.log(Level::Error, &format!("cannot create {}: {e}", p.display()));
            None
        }
    };
    let open = Open {
        nspawn: open(&dirs.nspawn),
        network: open(&dirs.network),
        units: open(&dirs.units),
    };

    let mut written = HashSet::with_capacity(cfg.slots.len() * 4);
    let (ok, errs) = write_outputs(&open, &render_host(cfg));
    written.extend(ok);
    for e in errs {
        log.log(Level::Error, &e);
    }
    // Below this, spawning threads costs more than it saves.
    let threads = if cfg.slots.len() < 64 {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
    };
    let chunk = cfg.slots.len().div_ceil(threads).max(1);
    let results: Vec<(Vec<PathBuf>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cfg
            .slots
            .chunks(chunk)
            .map(|part| {
                let open = &open;
                scope.spawn(move || {
                    let outs: Vec<Output> = part.iter().flat_map(|s| render_slot(cfg, s)).collect();
                    write_outputs(open, &outs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (ok, errs) in results {
        written.extend(ok);
        for e in errs {
            log.log(Level::Error, &e);
        }
    }
    (open, written)
}

/// Writes `outs` (paths `NAME` or `SUBDIR/NAME` relative to their directory); returns the
/// paths written or already right, and the error messages.
fn write_outputs(open: &Open, outs: &[Output]) -> (Vec<PathBuf>, Vec<String>) {
    let mut ok = Vec::with_capacity(outs.len());
    let mut errs = Vec::new();
    // Subdirectories (drop-in dirs, .wants) made once each: whether that worked.
    let mut made: std::collections::BTreeMap<(OutDir, &str), bool> = Default::default();
    for o in outs {
        let Some(d) = open.of(o.dir) else { continue };
        let path = d.path.join(&o.path);
        let Some(rel) = o.path.to_str() else { continue };
        let may_exist = match rel.split_once('/') {
            None => d.existing.contains(rel),
            Some((sub, _)) => {
                let usable = *made.entry((o.dir, sub)).or_insert_with(|| {
                    write::ensure_subdir(write::fd(d), sub)
                        .map_err(|e| {
                            errs.push(format!("cannot create {}: {e}", d.path.join(sub).display()))
                        })
                        .is_ok()
                });
                if !usable {
                    continue;
                }
                d.existing.contains(sub)
            }
        };
        match write::write_atomic(write::fd(d), rel, &o.content, may_exist) {
            Ok(_) => ok.push(path),
            Err(e) => errs.push(format!("cannot write {}: {e}", path.display())),
        }
    }
    (ok, errs)
}

/// systemd empties the generator directory before each run, but a manual run (tests)
/// reuses it: clear drop-ins and links of slots that are gone.
fn remove_stale_units(unit_dir: &Path, keep: &HashSet<PathBuf>) -> Vec<(PathBuf, std::io::Error)> {
    let mut errors = Vec::new();
    let Ok(entries) = fs::read_dir(unit_dir) else {
        return errors;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("systemd-nspawn@") && name.ends_with(".service.d") {
            let dropin = e.path().join(DROPIN_NAME);
            if !keep.contains(&dropin) && write::is_ours(&dropin) {
                if let Err(err) = fs::remove_file(&dropin) {
                    errors.push((dropin, err));
                }
                let _ = fs::remove_dir(e.path());
            }
        } else if name == "machines.target.wants" || name == "multi-user.target.wants" {
            for l in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                let p = l.path();
                let ln = l.file_name();
                let ln = ln.to_string_lossy();
                // Other generators share this directory: touch only our own links.
                let ours = (name == "machines.target.wants" && ln.starts_with("systemd-nspawn@"))
                    || (ln == "machines.target"
                        && fs::read_link(&p).is_ok_and(|t| t == Path::new(MACHINES_TARGET)))
                    || (ln == NETWORKD_UNIT
                        && fs::read_link(&p).is_ok_and(|t| t == Path::new(NETWORKD_UNIT_PATH)));
                if ours && !keep.contains(&p) && p.is_symlink() {
                    if let Err(err) = fs::remove_file(&p) {
                        errors.push((p, err));
                    }
                }
            }
            let _ = fs::remove_dir(e.path());
        }
    }
    errors
}
