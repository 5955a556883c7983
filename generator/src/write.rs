//! Writing generated files so that no reader ever sees half of one (write a temporary
//! file, then rename), skipping files whose content is already right, and removing
//! files of ours that the current config no longer produces.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use slot_config::render::Content;
use slot_config::GENERATED_HEADER;

/// `may_exist` false means the caller knows the file is absent (from one directory
/// listing), which saves opening it for comparison: at boot /run is empty and every
/// system call counts when there are a thousand slots.
pub fn write_atomic(path: &Path, content: &Content, may_exist: bool) -> io::Result<bool> {
    match content {
        Content::Text(text) => {
            if may_exist && fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
                return Ok(false);
            }
            let tmp = tmp_path(path);
            let r = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, path));
            if r.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            r.map(|()| true)
        }
        Content::Link(target) => {
            if may_exist && fs::read_link(path).is_ok_and(|old| &old == target) {
                return Ok(false);
            }
            let tmp = tmp_path(path);
            if may_exist {
                let _ = fs::remove_file(&tmp);
            }
            let r = symlink(target, &tmp).and_then(|()| fs::rename(&tmp, path));
            if r.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            r.map(|()| true)
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.slot-os-tmp"))
}

/// True when the file's first line is our header (only then may we delete it).
pub fn is_ours(path: &Path) -> bool {
    let mut buf = [0u8; GENERATED_HEADER.len()];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok_and(|()| buf == GENERATED_HEADER.as_bytes())
}

/// Removes generated files in `dir` that `keep` does not list; `candidate` says which
/// names could be ours at all, so other files are not even opened.
pub fn remove_stale(
    dir: &Path,
    keep: &HashSet<PathBuf>,
    candidate: impl Fn(&str) -> bool,
) -> Vec<(PathBuf, io::Error)> {
    let mut errors = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return errors;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".slot-os-tmp") {
            // Left behind by an interrupted earlier run.
            let _ = fs::remove_file(&path);
            continue;
        }
        if !candidate(&name) || keep.contains(&path) || !is_ours(&path) {
            continue;
        }
        if let Err(err) = fs::remove_file(&path) {
            errors.push((path, err));
        }
    }
    errors
}
