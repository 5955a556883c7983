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
    render_all, OutDir, Output, DROPIN_NAME, MACHINES_TARGET, NETWORKD_UNIT, NETWORKD_UNIT_PATH,
};
use slot_config::{load_dir, HostFacts, Paths};

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

impl Dirs {
    fn of(&self, d: OutDir) -> &Path {
        match d {
            OutDir::Nspawn => &self.nspawn,
            OutDir::Network => &self.network,
            OutDir::Units => &self.units,
        }
    }
    fn all(&self) -> [&Path; 3] {
        [&self.nspawn, &self.network, &self.units]
    }
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

    let written = write_all(&render_all(&cfg), dirs, log);

    // Slots and bridges removed since the last run: /run/systemd/{nspawn,network} outlive
    // daemon-reload, so their old files would otherwise still configure a removed slot.
    let mut errors = write::remove_stale(&dirs.nspawn, &written, |n| n.ends_with(".nspawn"));
    errors.extend(write::remove_stale(&dirs.network, &written, |n| {
        n.contains("-slot-os-")
    }));
    errors.extend(remove_stale_units(&dirs.units, &written));
    for (path, e) in errors {
        log.log(
            Level::Error,
            &format!("cannot remove stale {}: {e}", path.display()),
        );
    }
}

/// Writes every output, on as many threads as there are CPUs (the files are independent),
/// and returns the paths that now hold current content.
fn write_all(outputs: &[Output], dirs: &Dirs, log: &Log) -> HashSet<PathBuf> {
    // One listing per directory says which files and drop-in dirs already exist, so
    // absent files are not opened for comparison (at boot /run is empty, and with a
    // thousand slots every system call counts).
    let existing: HashSet<PathBuf> = dirs
        .all()
        .iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .collect();
    let mut parents: Vec<PathBuf> = outputs
        .iter()
        .map(|o| dirs.of(o.dir).join(&o.path))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    parents.sort();
    parents.dedup();
    let mut usable: HashSet<PathBuf> = HashSet::new();
    for p in parents {
        match fs::create_dir_all(&p) {
            Ok(()) => {
                usable.insert(p);
            }
            Err(e) => log.log(Level::Error, &format!("cannot create {}: {e}", p.display())),
        }
    }
    let may_exist = |path: &Path| -> bool {
        let parent = path.parent().unwrap_or(Path::new("/"));
        if dirs.all().contains(&parent) {
            existing.contains(path)
        } else {
            existing.contains(parent)
        }
    };

    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = outputs.len().div_ceil(threads).max(1);
    let results: Vec<(Vec<PathBuf>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = outputs
            .chunks(chunk)
            .map(|part| {
                let (usable, may_exist) = (&usable, &may_exist);
                scope.spawn(move || {
                    let mut ok = Vec::with_capacity(part.len());
                    let mut errs = Vec::new();
                    for o in part {
                        let path = dirs.of(o.dir).join(&o.path);
                        if !path.parent().is_some_and(|p| usable.contains(p)) {
                            continue;
                        }
                        match write::write_atomic(&path, &o.content, may_exist(&path)) {
                            Ok(_) => ok.push(path),
                            Err(e) => errs.push(format!("cannot write {}: {e}", path.display())),
                        }
                    }
                    (ok, errs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut written = HashSet::with_capacity(outputs.len());
    for (ok, errs) in results {
        written.extend(ok);
        for e in errs {
            log.log(Level::Error, &e);
        }
    }
    written
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
