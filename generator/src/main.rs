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

use slot_config::render::{render_all, OutDir, Output, DROPIN_NAME, MACHINES_TARGET};
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
    run(&paths, Path::new(&args[0]), &log);
    ExitCode::SUCCESS
}

fn run(paths: &Paths, unit_dir: &Path, log: &Log) {
    let facts = HostFacts::read(paths);
    let cfg = load_dir(paths, &facts);
    for p in &cfg.problems {
        log.log(Level::Error, &p.to_string());
    }
    if cfg.host_skipped {
        log.log(Level::Warning, "host-wide settings skipped because of the errors above; built-in defaults used");
    }
    for name in &cfg.skipped {
        log.log(Level::Error, &format!("slot {name} skipped because of the errors above; its units were not generated"));
    }

    let dirs = [
        (OutDir::Nspawn, paths.nspawn_dir()),
        (OutDir::Network, paths.network_dir()),
        (OutDir::Units, unit_dir.to_path_buf()),
    ];
    let dir_of = |d: OutDir| -> &Path { &dirs.iter().find(|(k, _)| *k == d).map(|(_, p)| p).expect("all dirs listed").as_path() };

    let outputs = render_all(&cfg);
    let written = write_all(&outputs, &dir_of, log);

    // Slots and bridges removed since the last run: /run/systemd/{nspawn,network} outlive
    // daemon-reload, so their old files would otherwise still configure a removed slot.
    let mut errors = write::remove_stale(dir_of(OutDir::Nspawn), &written, |n| n.ends_with(".nspawn"));
    errors.extend(write::remove_stale(dir_of(OutDir::Network), &written, |n| n.contains("-slot-os-")));
    errors.extend(remove_stale_units(dir_of(OutDir::Units), &written));
    for (path, e) in errors {
        log.log(Level::Error, &format!("cannot remove stale {}: {e}", path.display()));
    }
}

/// Writes every output, on as many threads as there are CPUs (each file is independent),
/// and returns the paths that now hold current content.
fn write_all<'a>(outputs: &[Output], dir_of: &(dyn Fn(OutDir) -> &'a Path + Sync), log: &Log) -> HashSet<PathBuf> {
    // One listing per directory tells which files already exist.
    let mut existing: HashSet<PathBuf> = HashSet::new();
    let mut parents: Vec<PathBuf> = Vec::new();
    for d in [OutDir::Nspawn, OutDir::Network, OutDir::Units] {
        let dir = dir_of(d);
        if let Ok(rd) = fs::read_dir(dir) {
            existing.extend(rd.flatten().map(|e| e.path()));
        }
    }
    for o in outputs {
        let path = dir_of(o.dir).join(&o.path);
        if let Some(p) = path.parent() {
            if parents.last().is_none_or(|l| l != p) {
                parents.push(p.to_path_buf());
            }
        }
    }
    parents.sort();
    parents.dedup();
    // A file may exist only if its parent is listed (or is one of the listed dirs).
    let listed_dirs: HashSet<&Path> = [OutDir::Nspawn, OutDir::Network, OutDir::Units].map(|d| dir_of(d)).into_iter().collect();
    let mut usable_parents: HashSet<PathBuf> = HashSet::new();
    let mut preexisting_parents: HashSet<PathBuf> = HashSet::new();
    for p in &parents {
        let existed = listed_dirs.contains(p.as_path()) && p.is_dir() || existing.contains(p);
        if existed {
            preexisting_parents.insert(p.clone());
        }
        match fs::create_dir_all(p) {
            Ok(()) => {
                usable_parents.insert(p.clone());
            }
            Err(e) => log.log(Level::Error, &format!("cannot create {}: {e}", p.display())),
        }
    }

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let chunk = outputs.len().div_ceil(threads).max(1);
    let results: Vec<(Vec<PathBuf>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = outputs
            .chunks(chunk)
            .map(|part| {
                let existing = &existing;
                let usable_parents = &usable_parents;
                let preexisting_parents = &preexisting_parents;
                scope.spawn(move || {
                    let mut ok = Vec::with_capacity(part.len());
                    let mut errs = Vec::new();
                    for o in part {
                        let path = dir_of(o.dir).join(&o.path);
                        let parent = path.parent().unwrap_or(Path::new("/"));
                        if !usable_parents.contains(parent) {
                            continue;
                        }
                        let may_exist = if listed_dirs_contains(parent, dir_of) {
                            existing.contains(&path)
                        } else {
                            preexisting_parents.contains(parent)
                        };
                        match write::write_atomic(&path, &o.content, may_exist) {
                            Ok(_) => ok.push(path),
                            Err(e) => errs.push(format!("cannot write {}: {e}", path.display())),
                        }
                    }
                    (ok, errs)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
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

fn listed_dirs_contains<'a>(p: &Path, dir_of: &(dyn Fn(OutDir) -> &'a Path + Sync)) -> bool {
    [OutDir::Nspawn, OutDir::Network, OutDir::Units].iter().any(|d| dir_of(*d) == p)
}

/// systemd empties the generator directory before each run, but a manual run (tests,
/// `slot-os render`) reuses it: clear drop-ins and links of slots that are gone.
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
                    || (ln == "machines.target" && fs::read_link(&p).is_ok_and(|t| t == Path::new(MACHINES_TARGET)));
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
