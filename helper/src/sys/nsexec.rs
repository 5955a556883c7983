//! Running a command inside a running slot so that it stays within the slot's limits.
//!
//! Over 400 lines: the two ways into a slot (its own systemd, or a joined process) share the
//! pinned leader and the confinement they must both reproduce.
//!
//! - A booted slot: the command is a transient service of the slot's own systemd, started
//!   over the slot's system bus (what `systemd-run --machine=X --wait --pipe` does), so it
//!   lands in the slot's cgroup with the slot's capability bounding set, and its exit code
//!   comes back from ExecMainCode/ExecMainStatus.
//! - A single-process slot (`boot = false`) has no service manager: the command joins the
//!   leader's cgroup, drops every capability the leader's bounding set lacks, sets
//!   no_new_privs and enters the leader's namespaces.
//!
//! The leader is pinned with a pidfd: it is opened, then machined must still name the same
//! PID, and everything after (namespaces, /proc reads) goes through or is checked against
//! the pidfd, so a PID reused by another process cannot redirect the command.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Uid};
use zbus::{OwnedVariant, Variant};

/// PATH as systemd gives services (and as `nsenter` users expect).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The slot's system bus, as its own processes see it.
const SLOT_BUS: &str = "/run/dbus/system_bus_socket";

/// A slot's leader, held by a pidfd.
pub struct Leader {
    pid: u32,
    pidfd: OwnedFd,
}

impl Leader {
    /// Opens a pidfd on `pid`; `still_leader` must then confirm (from machined) that `pid`
    /// is still the slot's leader, so the pidfd is known to hold that process.
    pub fn pin(
        pid: u32,
        still_leader: impl FnOnce() -> anyhow::Result<bool>,
    ) -> anyhow::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pidfd_open of the slot's leader {pid} (is the slot running? Linux 5.8 or later is needed)"));
        }
        // SAFETY: a new fd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let l = Leader { pid, pidfd };
        if !still_leader()? || !l.alive() {
            bail!("the slot's leader changed while the command was being set up (the slot restarted); run it again");
        }
        Ok(l)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn signal(&self, sig: i32) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal through our own pidfd, no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        match r {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    /// The pinned process still runs (so /proc/PID is still its).
    fn alive(&self) -> bool {
        self.signal(0).is_ok()
    }

    /// SIGKILL to the pinned process (a PID reused since cannot be hit). For a slot's
    /// leader, its init, the kernel then ends every process of the slot's PID namespace,
    /// frozen ones too.
    pub fn kill(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGKILL)
            .with_context(|| format!("killing the slot's leader {}", self.pid))
    }

    /// A file under /proc/PID, known to be the pinned process's (read, then still alive).
    pub fn read_proc(&self, rel: &str) -> anyhow::Result<String> {
        let p = format!("/proc/{}/{rel}", self.pid);
        let mut s = String::new();
        File::open(&p)
            .and_then(|mut f| f.read_to_string(&mut s))
            .with_context(|| format!("reading {p}"))?;
        if !self.alive() {
            bail!("the slot's leader exited while reading {p}");
        }
        Ok(s)
    }

    /// The namespaces of the leader that differ from ours.
    fn namespaces(&self) -> anyhow::Result<CloneFlags> {
        let mut flags = CloneFlags::empty();
        for (name, flag) in [
            ("user", CloneFlags::CLONE_NEWUSER),
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            let theirs = format!("/proc/{}/ns/{name}", self.pid);
            let t = std::fs::metadata(&theirs)
                .with_context(|| format!("reading {theirs} (is the slot running?)"))?;
            let o = std::fs::metadata(format!("/proc/self/ns/{name}"));
            if !o.is_ok_and(|o| o.ino() == t.ino() && o.dev() == t.dev()) {
                flags |= flag;
            }
        }
        if !self.alive() {
            bail!("the slot's leader exited while its namespaces were read");
        }
        Ok(flags)
    }
}

/// Enters the leader's namespaces `ns` through its pidfd (all at once) and becomes root of
/// its user namespace. Runs in a forked child: system calls only.
fn enter(pidfd: &OwnedFd, ns: CloneFlags) -> std::io::Result<()> {
    setns(pidfd.as_fd(), ns).map_err(std::io::Error::from)?;
    if ns.contains(CloneFlags::CLONE_NEWUSER) {
        // Unmapped after entering the user namespace until we become its root.
        nix::unistd::setgroups(&[]).ok();
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(std::io::Error::from)?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// A stream connected to the slot's system bus, as one of the slot's root processes:
/// sd-bus's "container" transport. The socket is made here; a forked child enters the
/// leader's user and mount namespaces and connects it, so the slot's bus sees its own root
/// as the peer (SO_PEERCRED is taken at connect).
fn connect_slot_bus(leader: &Leader) -> anyhow::Result<UnixStream> {
    let ns = leader.namespaces()? & (CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS);
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("creating a socket")?;
    let addr = UnixAddr::new(SLOT_BUS).context("socket address")?;
    // SAFETY: the child only makes system calls (setns, set*id, connect, _exit) on what
    // was prepared before the fork.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let r = enter(&leader.pidfd, ns)
                .and_then(|()| connect(sock.as_raw_fd(), &addr).map_err(std::io::Error::from));
            let code = match r {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO).clamp(1, 255),
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => break c,
                    Ok(WaitStatus::Signaled(..)) => break libc::EIO,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("waiting for the connecting child"),
                }
            };
            if code != 0 {
                return Err(std::io::Error::from_raw_os_error(code)).with_context(|| {
                    format!("connecting to the slot's system bus {SLOT_BUS} (is dbus running in the slot?)")
                });
            }
            Ok(UnixStream::from(sock))
        }
    }
}

/// systemd's bus path escaping of a unit name (sd_bus_path_encode).
fn unit_path(unit: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for b in unit.bytes() {
        if b.is_ascii_alphanumeric() {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

fn var<'a>(v: impl Into<Variant<'a>>) -> anyhow::Result<OwnedVariant> {
    OwnedVariant::try_from(v.into()).context("encoding a unit property")
}

/// Where the command's stdio goes: the caller's fds (duplicated) or pipes.
pub struct Stdio3 {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Stdio3 {
    /// Our own stdin, stdout and stderr.
    pub fn inherit() -> anyhow::Result<Self> {
        let dup = |fd: i32| -> anyhow::Result<OwnedFd> {
            // SAFETY: fds 0-2 are open for the life of the process.
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            b.try_clone_to_owned()
                .with_context(|| format!("duplicating fd {fd}"))
        };
        Ok(Stdio3 {
            stdin: dup(0)?,
            stdout: dup(1)?,
            stderr: dup(2)?,
        })
    }
}

/// Runs `argv` as a transient service of the booted slot's systemd and returns its exit
/// code (128 + signal when killed by one). `label` names the slot in messages.
pub fn run_in_slot_manager(leader: &Leader, argv: &[String], stdio: Stdio3) -> anyhow::Result<i32> {
    let (prog, _) = argv.split_first().context("no command given")?;
    let stream = connect_slot_bus(leader)?;
    // A unique name: the helper's PID and the time cannot repeat on this host.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let unit = format!("slot-os-exec-{}-{nanos}.service", std::process::id());
    let path = unit_path(&unit);
    let mut env = vec![format!("PATH={PATH}"), "HOME=/root".to_string()];
    for (k, dflt) in [("LANG", "C.UTF-8"), ("TERM", "dumb")] {
        env.push(format!(
            "{k}={}",
            std::env::var(k).unwrap_or_else(|_| dflt.into())
        ));
    }
    let props: Vec<(String, OwnedVariant)> = vec![
        ("Description".into(), var(format!("slot-os exec {prog}"))?),
        // Pinned while we are connected, and unloaded when it ends (failed too): nothing
        // accumulates in the slot's systemd.
        ("AddRef".into(), var(true)?),
        ("CollectMode".into(), var("inactive-or-failed")?),
        // The start job fails if the command cannot be executed at all.
        ("Type".into(), var("exec")?),
        ("IgnoreSIGPIPE".into(), var(false)?),
        ("Environment".into(), var(env)?),
        ("WorkingDirectory".into(), var("/")?),
        // ExecStartEx with no-env-expand: the arguments reach the command as given
        // (ExecStart would expand `$VAR` and `$$` in them).
        (
            "ExecStartEx".into(),
            var(vec![(
                prog.clone(),
                argv.to_vec(),
                vec!["no-env-expand".to_string()],
            )])?,
        ),
        (
            "StandardInputFileDescriptor".into(),
            var(zbus::Fd::from(stdio.stdin))?,
        ),
        (
            "StandardOutputFileDescriptor".into(),
            var(zbus::Fd::from(stdio.stdout))?,
        ),
        (
            "StandardErrorFileDescriptor".into(),
            var(zbus::Fd::from(stdio.stderr))?,
        ),
    ];
    zbus::block_on(async move {
        let conn = zbus::connection::Builder::unix_stream(stream)
            .method_timeout(Duration::from_secs(25))
            .build()
            .await
            .context("authenticating on the slot's system bus")?;
        let m = zbus_systemd::systemd1::ManagerProxy::new(&conn).await?;
        // Units only send PropertiesChanged to subscribers; JobRemoved goes to the client
        // that queued the job. Both streams exist before the unit does: nothing is missed.
        m.subscribe()
            .await
            .context("Subscribe on the slot's systemd")?;
        let jobs = m.receive_job_removed().await?;
        let props_proxy = zbus::fdo::PropertiesProxy::builder(&conn)
            .destination("org.freedesktop.systemd1")
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let mut changes = props_proxy.receive_properties_changed().await?;
        let job = m
            .start_transient_unit(unit.clone(), "fail".into(), props, Vec::new())
            .await
            .context("StartTransientUnit in the slot")?;
        // The start job's end: the command has been executed (Type=exec) or could not be.
        let mut jobs = std::pin::pin!(jobs);
        let job_result = loop {
            let Some(sig) = jobs.next().await else {
                bail!("the slot's system bus went away");
            };
            if let Ok(a) = sig.args() {
                if *a.job() == job {
                    break a.result().to_string();
                }
            }
        };
        let unit_proxy = zbus_systemd::systemd1::UnitProxy::builder(&conn)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let mut state = unit_proxy.active_state().await?;
        while state != "inactive" && state != "failed" {
            let Some(sig) = changes.next().await else {
                bail!("the slot's system bus went away while {prog:?} ran");
            };
            let Ok(a) = sig.args() else { continue };
            if a.interface_name().as_str() != "org.freedesktop.systemd1.Unit" {
                continue;
            }
            let ended = a
                .changed_properties()
                .get("ActiveState")
                .and_then(|v| <&str>::try_from(v).ok())
                .is_some_and(|s| s == "inactive" || s == "failed");
            if ended {
                // A queued signal may predate the start (the unit's load): the state as
                // of now, read after every signal sent before it, decides.
                state = unit_proxy.active_state().await?;
            }
        }
        let svc = zbus_systemd::systemd1::ServiceProxy::builder(&conn)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let (code, status, result) = (
            svc.exec_main_code().await?,
            svc.exec_main_status().await?,
            svc.result().await.unwrap_or_default(),
        );
        if job_result != "done" && code == 0 {
            bail!("{prog:?} could not be started in the slot (start job {job_result}, {result})");
        }
        Ok(match code {
            // CLD_EXITED; systemd's 203/EXEC: not executable, as a shell says 127
            1 if status == 203 && job_result != "done" => {
                eprintln!("slot-os: {prog}: cannot be executed in the slot");
                127
            }
            1 => status,
            // CLD_KILLED, CLD_DUMPED
            2 | 3 => 128 + status,
            _ => 1,
        })
    })
}

/// Where a confined command goes: the leader's cgroup (as /sys/fs/cgroup paths of ours)
/// and its capability bounding set.
struct Confinement {
    cgroup_procs: Vec<File>,
    keep_caps: u64,
}

/// The cgroup.procs files of the leader's cgroups on the hierarchies systemd tracks
/// processes with (v2; on a hybrid host also name=systemd), as we see them.
fn confinement(leader: &Leader) -> anyhow::Result<Confinement> {
    let cg = leader.read_proc("cgroup")?;
    let unified = std::path::Path::new("/sys/fs/cgroup/cgroup.procs").exists();
    let mut cgroup_procs = Vec::new();
    for line in cg.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(id), Some(ctl), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        // The kernel lists every hierarchy, also those not mounted here.
        let base = match (id, ctl) {
            ("0", "") if unified => "/sys/fs/cgroup",
            ("0", "") => "/sys/fs/cgroup/unified",
            (_, "name=systemd") if !unified => "/sys/fs/cgroup/systemd",
            _ => continue,
        };
        if !unified && !std::path::Path::new(base).join("cgroup.procs").exists() {
            continue;
        }
        if path.split('/').any(|c| c == "..") {
            bail!("the slot's cgroup {path} is outside our view of the cgroup tree");
        }
        let procs = format!("{base}{path}/cgroup.procs");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .with_context(|| format!("opening {procs}"))?;
        cgroup_procs.push(f);
    }
    if cgroup_procs.is_empty() {
        bail!(
            "no cgroup of the slot's leader found in /proc/{}/cgroup",
            leader.pid
        );
    }
    let status = leader.read_proc("status")?;
    let keep_caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("reading the slot leader's CapBnd")?;
    Ok(Confinement {
        cgroup_procs,
        keep_caps,
    })
}

/// A `Command` that runs `argv` in the single-process slot whose leader is `leader`,
/// confined to its cgroup and bounding set (see the module comment).
pub fn command(leader: &Leader, argv: &[String]) -> anyhow::Result<Command> {
    let ns = leader.namespaces()?;
    let conf = confinement(leader)?;
    let pidfd = leader
        .pidfd
        .try_clone()
        .context("duplicating the leader's pidfd")?;
    let (prog, args) = argv.split_first().context("no command given")?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env("PATH", PATH)
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
    // SAFETY: runs in the forked child before exec; it only makes system calls (write,
    // prctl, setns, setres[ug]id, fork, waitpid, _exit) on fds opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // The cgroup first, while its path is still the one we computed in our view.
            for f in &conf.cgroup_procs {
                if libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            enter(&pidfd, ns)?;
            // Every capability the slot cannot have leaves the bounding set, so exec cannot
            // give it back. After setns: entering a user namespace resets the bounding set
            // to full (and gives us CAP_SETPCAP there).
            for cap in 0..64u64 {
                if conf.keep_caps & (1 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                    && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
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
                    libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                    let code = loop {
                        match waitpid(child, None) {
                            Ok(WaitStatus::Exited(_, c)) => break c,
                            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                            Ok(_) => continue,
                            Err(nix::errno::Errno::EINTR) => continue,
                            Err(_) => break 127,
                        }
                    };
                    libc::_exit(code)
                }
            }
        });
    }
    Ok(cmd)
}

/// The exit code a shell would report for this status.
pub fn exit_code(st: &ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_paths_are_escaped_as_systemd_does() {
        assert_eq!(
            super::unit_path("slot-os-exec-12.service"),
            "/org/freedesktop/systemd1/unit/slot_2dos_2dexec_2d12_2eservice"
        );
    }
}
