//! Golden tests: each `tests/generator/NN-what/input/` tree is a root (config, /sys and
//! /proc facts, leftovers in /run); the generator runs on a copy of it and the resulting
//! `run/` tree plus its messages must equal `expected/` byte for byte.
//! `UPDATE_GOLDEN=1 cargo test -p slot-os-generator` rewrites the expected trees.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File(String),
    Link(PathBuf),
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_path_buf();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(rel, Entry::Link(fs::read_link(&p).unwrap()));
            } else if ft.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(rel, Entry::File(fs::read_to_string(&p).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &to).unwrap();
        } else if ft.is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn write_tree(dir: &Path, tree: &BTreeMap<PathBuf, Entry>) {
    let _ = fs::remove_dir_all(dir);
    for (rel, e) in tree {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match e {
            Entry::File(s) => fs::write(&p, s).unwrap(),
            Entry::Link(t) => std::os::unix::fs::symlink(t, &p).unwrap(),
        }
    }
}

fn run_case(case: &Path) -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!(
        "slot-os-golden-{}-{}",
        std::process::id(),
        case.file_name().unwrap().to_string_lossy()
    ));
    let _ = fs::remove_dir_all(&tmp);
    copy_tree(&case.join("input"), &tmp);
    let unit_dir = tmp.join("run/systemd/generator");
    let out = Command::new(env!("CARGO_BIN_EXE_slot-os-generator"))
        .arg(&unit_dir)
        .arg(tmp.join("run/systemd/generator.early"))
        .arg(tmp.join("run/systemd/generator.late"))
        .env("SLOT_OS_ROOT", &tmp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(tmp.to_str().unwrap(), "$ROOT");
    let got = snapshot(&tmp.join("run"));
    let _ = fs::remove_dir_all(&tmp);
    if out.status.code() != Some(0) {
        return Err(format!("exit status {:?}, stderr:\n{stderr}", out.status));
    }
    let expected_dir = case.join("expected");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        write_tree(&expected_dir.join("run"), &got);
        fs::create_dir_all(&expected_dir).unwrap();
        fs::write(expected_dir.join("stderr"), &stderr).unwrap();
        return Ok(());
    }
    let want = snapshot(&expected_dir.join("run"));
    let want_stderr = fs::read_to_string(expected_dir.join("stderr")).unwrap_or_default();
    let mut diffs = Vec::new();
    for k in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (want.get(k), got.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => diffs.push(format!(
                "{}:\n  expected {a:?}\n  got      {b:?}",
                k.display()
            )),
        }
    }
    if stderr != want_stderr {
        diffs.push(format!(
            "stderr:\n  expected {want_stderr:?}\n  got      {stderr:?}"
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/generator")
}

fn check_case(name: &str) {
    if let Err(e) = run_case(&fixtures_dir().join(name)) {
        panic!("golden case {name} differs:\n{e}");
    }
}

/// One `#[test]` per fixture directory (zram-generator's tests/test_cases.rs): a failure
/// names its case, and `cargo test case_12` runs one.
macro_rules! golden_cases {
    ($($test:ident => $dir:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check_case($dir);
            }
        )*
        const CASES: &[&str] = &[$($dir),*];
    };
}

golden_cases! {
    case_01_empty_slot_defaults => "01-empty-slot-defaults",
    case_02_full_slot => "02-full-slot",
    case_03_auto_quota_three_slots => "03-auto-quota-three-slots",
    case_04_broken_next_to_good => "04-broken-next-to-good",
    case_05_stale_files_removed => "05-stale-files-removed",
    case_06_single_process_mode => "06-single-process-mode",
    case_07_image_named_differently => "07-image-named-differently",
    case_08_broken_host_file => "08-broken-host-file",
    case_09_duplicate_numbers_and_addresses => "09-duplicate-numbers-and-addresses",
    case_10_no_config_dir => "10-no-config-dir",
    case_11_default_network_none => "11-default-network-none",
    case_11_default_network_veth => "11-default-network-veth",
    case_12_vxlan_bridges => "12-vxlan-bridges",
    case_13_ovs_bridge => "13-ovs-bridge",
    case_14_named_slot_without_number => "14-named-slot-without-number",
    case_15_disk_tasks_io => "15-disk-tasks-io",
    case_16_overlay_slots => "16-overlay-slots",
}

/// A fixture directory without a test above would never run.
#[test]
fn every_fixture_has_a_test() {
    let root = fixtures_dir();
    let mut dirs: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("input").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 8,
        "fixture cases missing under {}",
        root.display()
    );
    assert_eq!(dirs, CASES, "add new fixtures to golden_cases!");
}

/// Running twice over the same config changes nothing and keeps the output identical.
#[test]
fn second_run_is_identical() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/generator/02-full-slot");
    let tmp = std::env::temp_dir().join(format!("slot-os-golden-twice-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    copy_tree(&case.join("input"), &tmp);
    let run = || {
        let st = Command::new(env!("CARGO_BIN_EXE_slot-os-generator"))
            .arg(tmp.join("run/systemd/generator"))
            .env("SLOT_OS_ROOT", &tmp)
            .status()
            .unwrap();
        assert!(st.success());
        snapshot(&tmp.join("run"))
    };
    let a = run();
    let b = run();
    let _ = fs::remove_dir_all(&tmp);
    assert_eq!(a, b);
    assert!(!a.is_empty());
}

#[test]
fn usage_error_without_output_dir() {
    let out = Command::new(env!("CARGO_BIN_EXE_slot-os-generator"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
