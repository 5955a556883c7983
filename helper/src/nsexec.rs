//! Running a command inside a running slot, like `nsenter -t LEADER -a`: the command
//! enters the slot's namespaces (user, mount, pid, network, uts, ipc, cgroup), runs as
//! root of the slot, and its exit code comes back to us.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::Context;
use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Uid};

struct Ns {
    file: File,
    flag: CloneFlags,
}

/// The namespaces of `leader` that differ from ours, user namespace first so that the
/// others (owned by it) can be entered with its capabilities.
fn open_namespaces(leader: u32) -> anyhow::Result<(Vec<Ns>, bool)> {
    let mut out = Vec::new();
    let mut userns = false;
    for (name, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let theirs = format!("/proc/{leader}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let t = std::fs::metadata(&theirs)
            .with_context(|| format!("reading {theirs} (is the slot running?)"))?;
        let same = std::fs::metadata(&ours).is_ok_and(|o| o.ino() == t.ino() && o.dev() == t.dev());
        if same {
            continue;
        }
        userns |= name == "user";
        let file = File::open(&theirs).with_context(|| format!("opening {theirs}"))?;
        out.push(Ns { file, flag });
    }
    Ok((out, userns))
}

/// A `Command` that runs `argv` inside the slot whose init is `leader`.
pub fn command(leader: u32, argv: &[String]) -> anyhow::Result<Command> {
    let (namespaces, userns) = open_namespaces(leader)?;
    let (prog, args) = argv.split_first().context("no command given")?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env(
            "LANG",
            std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
        )
        .env(
            "TERM",
            std::env::var("TERM").unwrap_or_else(|_| "dumb".into()),
        )
        .current_dir("/");
    // SAFETY: runs in the forked child before exec; it only makes system calls (setns,
    // setres[ug]id, fork, waitpid, _exit) on file descriptors opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for ns in &namespaces {
                setns(ns.file.as_fd(), ns.flag).map_err(std::io::Error::from)?;
            }
            if userns {
                // Unmapped after entering the user namespace until we become its root.
                nix::unistd::setgroups(&[]).ok();
                nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                    .map_err(std::io::Error::from)?;
                nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                    .map_err(std::io::Error::from)?;
            }
            // A new PID namespace applies to children only: fork once more so the
            // command is a process of the slot, and pass its exit status up.
            match fork().map_err(std::io::Error::from)? {
                ForkResult::Child => {
                    nix::unistd::chdir("/").map_err(std::io::Error::from)?;
                    Ok(())
                }
                ForkResult::Parent { child } => {
                    // Hold nothing but stdio: std's exec-error pipe must reach EOF as
                    // soon as the command has started, or spawn() would wait for it to end.
                    nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                    let code = loop {
                        match waitpid(child, None) {
                            Ok(WaitStatus::Exited(_, c)) => break c,
                            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                            Ok(_) => continue,
                            Err(nix::errno::Errno::EINTR) => continue,
                            Err(_) => break 127,
                        }
                    };
                    nix::libc::_exit(code)
                }
            }
        });
    }
    Ok(cmd)
}

/// Runs `argv` in the slot with our stdio and returns its exit status.
pub fn run(leader: u32, argv: &[String]) -> anyhow::Result<ExitStatus> {
    let mut cmd = command(leader, argv)?;
    cmd.stdin(Stdio::inherit());
    let st = cmd
        .status()
        .with_context(|| format!("running {:?} in the slot", argv[0]))?;
    Ok(st)
}

/// The exit code a shell would report for this status.
pub fn exit_code(st: &ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}
