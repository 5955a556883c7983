//! The generated manual pages and completions against what the binary really accepts:
//! every subcommand of `slot-os --help` in slot-os(1) and the completions, every config
//! key in slot-os.toml(5), and every page rendered by man(1) without a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

fn slot_os() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slot-os"))
}

fn generate() -> PathBuf {
    // One directory per test: the tests of this file run in parallel.
    let dir = std::env::temp_dir().join(format!(
        "slot-os-docs-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let out = slot_os().arg("generate-docs").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "generate-docs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The names under "Commands:" in `slot-os --help`.
fn help_subcommands() -> Vec<String> {
    let out = slot_os().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut names = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            if let Some(name) = line.split_whitespace().next() {
                // continuation lines of a long description are indented further
                if line.starts_with("  ") && !line.starts_with("   ") {
                    names.push(name.to_string());
                }
            }
        }
    }
    names
}

#[test]
fn every_subcommand_of_help_is_in_the_manual_and_the_completions() {
    let dir = generate();
    let page = read(&dir.join("man/slot-os.1"));
    let names = help_subcommands();
    assert!(names.len() > 30, "parsed too few subcommands: {names:?}");
    for must in [
        "make-base-image",
        "backup-restore",
        "net-nic-del",
        "completions",
    ] {
        assert!(names.iter().any(|n| n == must), "{must} not in --help");
    }
    let bash = read(&dir.join("completions/slot-os.bash"));
    let zsh = read(&dir.join("completions/_slot-os"));
    let fish = read(&dir.join("completions/slot-os.fish"));
    for n in &names {
        assert!(
            page.contains(&format!(".SS \"slot-os {n}\"")),
            "subcommand {n} has no section in slot-os(1)"
        );
        for (shell, text) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
            assert!(
                text.contains(n.as_str()),
                "{n} missing from the {shell} completions"
            );
        }
    }
    // hidden subcommands stay out of the manual, as they are out of --help
    assert!(!page.contains("net-apply") && !page.contains("generate-docs"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_config_key_is_in_slot_os_toml_5() {
    use slot_config::keys::{parser_keys, SECTIONS};
    let dir = generate();
    let page = read(&dir.join("man/slot-os.toml.5"));
    for &(file, section) in SECTIONS {
        if !section.is_empty() {
            let heading = if section == "bridge" || section == "nic" || section == "bind" {
                format!(".SS \"[[{section}]]\"")
            } else {
                format!(".SS \"[{section}]\"")
            };
            assert!(page.contains(&heading), "{heading} missing");
        }
        for key in parser_keys(file, section).unwrap() {
            let entry = format!(".TP\n\\fB{}\\fR\n", key.replace('-', "\\-"));
            assert!(
                page.contains(&entry),
                "{file:?} [{section}] {key} missing from slot-os.toml(5)"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Needs man-db (tests/install-deps.sh installs it). Without it the check is reported as
/// skipped on stderr rather than failing a bare `cargo test` on a minimal machine.
#[test]
fn man_renders_every_page_without_warnings() {
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("SKIPPED: man(1) not installed (tests/install-deps.sh installs man-db)");
        return;
    }
    let dir = generate();
    let mut pages = 0;
    for entry in std::fs::read_dir(dir.join("man")).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new("man")
            .args(["-l", "--warnings"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "man -l --warnings {}: {stderr}",
            path.display()
        );
        assert!(
            out.stdout.len() > 1000,
            "{} rendered almost nothing",
            path.display()
        );
        pages += 1;
    }
    assert_eq!(pages, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_subcommand_prints_a_script() {
    let out = slot_os().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("complete -F"));
    let out = slot_os().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "unknown shell is bad usage");
}

/// Fulcon's README types `slot-os deploy all : FILE /root`: the alias parses, and both
/// `--help` and slot-os(1) name it.
#[test]
fn fulcon_deploy_alias() {
    let out = slot_os().args(["deploy", "--help"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8(slot_os().arg("--help").output().unwrap().stdout).unwrap();
    assert!(help.contains("[alias: deploy]"), "{help}");
    let dir = generate();
    let man = read(&dir.join("man/slot-os.1"));
    assert!(man.contains("deploy"), "slot-os(1) does not name `deploy`");
    let _ = std::fs::remove_dir_all(dir);
}
