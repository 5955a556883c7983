//! `slot-os list | head` and the like: a reader that stops early closes the pipe. The
//! helper then ends as every Unix tool does (by SIGPIPE, after its cleanups ran), never
//! with a panic and a backtrace on the terminal.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_the_helper_by_sigpipe_without_a_panic() {
    let root = std::env::temp_dir().join(format!("slot-os-epipe-{}", std::process::id()));
    let etc = root.join("etc/slot-os");
    std::fs::create_dir_all(&etc).unwrap();
    for i in 0..3 {
        std::fs::write(etc.join(format!("slot{i:03}.toml")), "memory = \"1G\"\n").unwrap();
    }
    // A pipe whose reading end is closed before the helper writes: the first write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_slot-os"))
        .args(["render", "slot000"])
        .env("SLOT_OS_ROOT", &root)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "no panic: {err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "ended by SIGPIPE ({:?}); stderr: {err}",
        out.status
    );
}
