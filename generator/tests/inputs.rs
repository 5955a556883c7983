//! Issue 10, item 10: what the generator reads. A FIFO or a device named `*.toml` must not
//! hang it (boot waits for generators), a huge file is not read into memory, and a config
//! dir that cannot be listed leaves every generated file in place instead of being taken
//! for "no slots". Each case runs the real binary with a deadline and must exit 0.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

fn root(name: &str) -> PathBuf {
    let r = std::env::temp_dir().join(format!("slot-os-inputs-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&r);
    fs::create_dir_all(r.join("etc/slot-os")).unwrap();
    fs::create_dir_all(r.join("sys/devices/system/cpu")).unwrap();
    fs::create_dir_all(r.join("proc")).unwrap();
    fs::write(r.join("sys/devices/system/cpu/online"), "0-1\n").unwrap();
    fs::write(r.join("proc/meminfo"), "MemTotal:        4000000 kB\n").unwrap();
    r
}

/// Runs the generator on `root`; fails the test if it has not ended by the deadline
/// (then it is killed, by its own PID).
fn run(root: &Path) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_slot-os-generator"))
        .arg(root.join("run/systemd/generator"))
        .env("SLOT_OS_ROOT", root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("the generator hung for {DEADLINE:?} on {}", root.display());
        }
    }
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().unwrap();
    assert!(st.success(), "mkfifo {}", p.display());
}

#[test]
fn fifo_device_symlink_and_huge_file_are_skipped_without_hanging() {
    let r = root("special");
    let dir = r.join("etc/slot-os");
    fs::write(dir.join("slot00.toml"), "memory = \"256M\"\n").unwrap();
    mkfifo(&dir.join("slot01.toml"));
    symlink("/dev/zero", dir.join("slot02.toml")).unwrap();
    // A real character device, as root (CI and the e2e hosts); /dev/zero's numbers.
    let is_root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        let st = Command::new("mknod")
            .arg(dir.join("slot03.toml"))
            .args(["c", "1", "5"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let mut big = fs::File::create(dir.join("slot04.toml")).unwrap();
    let line = format!("# {}\n", "x".repeat(1021));
    for _ in 0..1100 {
        big.write_all(line.as_bytes()).unwrap();
    }
    drop(big);
    mkfifo(&dir.join("slot-os.toml"));

    let out = run(&r);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let nspawn = r.join("run/systemd/nspawn");
    let good = nspawn.join("slot00.nspawn").is_file();
    let written: Vec<String> = fs::read_dir(&nspawn)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let _ = fs::remove_dir_all(&r);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        good,
        "the regular slot still gets its units; stderr: {stderr}"
    );
    assert_eq!(written, ["slot00.nspawn"], "only the regular file's slot");
    for (file, why) in [
        (
            "slot01.toml",
            "cannot be read: it is a FIFO, not a regular file",
        ),
        (
            "slot02.toml",
            "cannot be read: it is a symbolic link, not a regular file",
        ),
        (
            "slot-os.toml",
            "cannot be read: it is a FIFO, not a regular file",
        ),
        (
            "slot04.toml",
            "cannot be read: it is larger than 1 MiB, more than a config file may be",
        ),
    ] {
        assert!(
            stderr.contains(&format!("{file}: {why}")),
            "{file}: expected {why:?} in stderr:\n{stderr}"
        );
    }
    if is_root {
        assert!(
            stderr.contains(
                "slot03.toml: cannot be read: it is a character device, not a regular file"
            ),
            "{stderr}"
        );
    }
}

#[test]
fn unreadable_config_dir_leaves_generated_files_in_place() {
    let r = root("unreadable");
    let dir = r.join("etc/slot-os");
    fs::write(dir.join("slot00.toml"), "memory = \"256M\"\n").unwrap();
    let first = run(&r);
    assert_eq!(first.status.code(), Some(0));
    let nspawn = r.join("run/systemd/nspawn/slot00.nspawn");
    let dropin = r.join("run/systemd/generator/systemd-nspawn@slot00.service.d/50-slot-os.conf");
    assert!(nspawn.is_file() && dropin.is_file());
    let before = (fs::read(&nspawn).unwrap(), fs::read(&dropin).unwrap());

    // As root no permission bit keeps the generator out; a file where the directory
    // should be makes listing it fail (ENOTDIR) the same way EACCES or EIO would.
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, "not a directory").unwrap();
    let out = run(&r);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let after = (fs::read(&nspawn).ok(), fs::read(&dropin).ok());
    let _ = fs::remove_dir_all(&r);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(
        after,
        (Some(before.0), Some(before.1)),
        "generated files must stay when the config dir cannot be read; stderr: {stderr}"
    );
    assert!(
        stderr.contains("cannot list the config directory")
            && stderr.contains("generated files left as they are"),
        "{stderr}"
    );
}
