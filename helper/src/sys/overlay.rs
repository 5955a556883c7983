//! overlayfs roots made with the new mount API, with the layers idmapped for a slot's user
//! namespace.
//!
//! Over 400 lines: the kernel steps of one mount (a user namespace for the idmapping, clones
//! of the layers, a private staging namespace, the overlay, handing it back) only make
//! sense together, and a third of the file is the fork-safe child and its tests.
//!
//! A slot runs in a user namespace that maps its root to host UID `base` (nspawn's
//! `PrivateUsers=base:65536`). nspawn shifts a plain directory root with an idmapped mount,
//! but the kernel refuses to idmap a finished overlay mount (EINVAL); overlayfs accepts
//! idmapped *layers* instead (Linux 5.19). So each layer is cloned (`open_tree`
//! `OPEN_TREE_CLONE`) and idmapped (`mount_setattr` `MOUNT_ATTR_IDMAP`) with a user namespace
//! mapping on-disk 0..65535 to `base`.., and the overlay is built on the clones: the files
//! stay 0:0 on disk and appear as `base`.. above, which is what the slot's user namespace
//! maps back to 0. Like nspawn's own idmapped roots (systemd's `REMOUNT_IDMAPPING_HOST_ROOT`),
//! the upper's idmapping also maps on-disk UID 2^31-2 to host root, so host root (nspawn
//! setting the tree up before it enters the namespace) can create inodes, which nspawn then
//! chowns into the range; the lowers' does not.
//!
//! Before Linux 6.13 overlayfs takes its layers only as paths, and a path to a detached
//! mount is refused (its mount namespace is not the caller's). The clones are therefore
//! attached in a throw-away mount namespace: a forked child unshares one, mounts a private
//! tmpfs over the staging directory, attaches the clones below it, creates the overlay there
//! (`fsopen`/`fsconfig`/`fsmount`) and passes the detached overlay back over a socket. The
//! overlay keeps private clones of its layers; the staging mounts die with the child's
//! namespace, so no kill at any point leaves one in the host's mount table. The caller gets a
//! detached mount: it attaches it (`attach`) or uses it through the descriptor and drops it.
//!
//! The child runs after `fork()` in a multi-threaded process: it only makes system calls on
//! data prepared before the fork (no allocation, no locks).

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Number of IDs a slot's user namespace maps (nspawn's default range).
pub const RANGE: u32 = 0x10000;
/// On-disk UID that the idmapping maps to host root (systemd's UID_MAPPED_ROOT).
const MAPPED_ROOT: u32 = 0x7FFF_FFFE;
/// statfs f_type of an overlayfs mount.
pub const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// Options every slot-os overlay is made with. The upper of a slot is moved onto a new
/// lower version when the slot is rebased; overlayfs allows that offline change of the lower
/// only when index, metacopy, redirect_dir and xino were never used
/// (Documentation/filesystems/overlayfs.rst, "Changes to underlying filesystems").
const FEATURES_OFF: [(&str, &str); 4] = [
    ("index", "off"),
    ("metacopy", "off"),
    ("redirect_dir", "off"),
    ("xino", "off"),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step}: {source}{}", log.as_deref().map(|l| format!(" ({l})")).unwrap_or_default())]
    Kernel {
        step: &'static str,
        source: std::io::Error,
        /// What overlayfs said about a refused `fsconfig` (its fs_context log).
        log: Option<String>,
    },
    #[error("{0} is not a plain name for a staged layer")]
    BadName(String),
    #[error("an overlay needs an upper layer or at least two lower layers")]
    NoLayers,
}

pub type Result<T> = std::result::Result<T, Error>;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn kernel(step: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Kernel {
        step,
        source,
        log: None,
    }
}

/// One overlay to make. Every layer is a directory descriptor the caller opened (and
/// checked) itself; nothing here resolves a path of a slot's tree.
pub struct Spec<'a> {
    /// Lower layers, topmost first, each with a name shown in mountinfo.
    pub lowers: Vec<(&'a str, BorrowedFd<'a>)>,
    /// The directory holding `upper/` and `work/` (they must be on one mount), with its
    /// name; `None` makes a read-only overlay of the lowers.
    pub upper: Option<(&'a str, BorrowedFd<'a>)>,
    /// Shift on-disk IDs 0..65535 to `base`.. (idmapped layers); `None`: IDs as on disk.
    pub shift: Option<u32>,
    /// The overlay mount itself read-only.
    pub read_only: bool,
}

/// A name used as a path component under the staging directory and in the overlay's
/// option string, where ',' ':' and '\\' would split it.
fn plain(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string()))
    }
}

fn cstr(s: &str) -> CString {
    // Only plain names and paths built from them reach here.
    CString::new(s).unwrap_or_default()
}

/// A user namespace mapping 0..65535 to `base`.. (and, with `host_root`, MAPPED_ROOT to
/// 0), as a descriptor for `MOUNT_ATTR_IDMAP`. A child unshares it and waits while we
/// write its maps; once we hold the namespace's descriptor the child is killed.
pub fn userns(base: u32, host_root: bool) -> Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    // SAFETY: the child only makes async-signal-safe system calls and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(kernel("fork")(errno()));
    }
    if pid == 0 {
        // SAFETY: raw system calls on descriptors inherited from the parent.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let code: i32 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::write(ready_w.as_raw_fd(), (&code as *const i32).cast(), 4);
            // Killed by the parent once it holds the namespace.
            loop {
                libc::pause();
            }
        }
    }
    drop(ready_w);
    let result = (|| {
        let mut code = [0u8; 4];
        read_exact(ready_r.as_fd(), &mut code).map_err(kernel("waiting for the user namespace"))?;
        let code = i32::from_ne_bytes(code);
        if code != 0 {
            return Err(kernel("unshare(CLONE_NEWUSER)")(
                std::io::Error::from_raw_os_error(code),
            ));
        }
        let mut map = format!("0 {base} {RANGE}\n");
        if host_root {
            map.push_str(&format!("{MAPPED_ROOT} 0 1\n"));
        }
        for f in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{f}"), &map)
                .map_err(kernel("writing the id map"))?;
        }
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map_err(kernel("opening the user namespace"))?;
        Ok(OwnedFd::from(ns))
    })();
    // Not an EOF on a pipe: children forked meanwhile by other threads hold copies of
    // every descriptor, so only a signal ends the child for sure.
    // SAFETY: signalling our own child, reaped right after.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
    result
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(kernel("pipe")(errno()));
    }
    // SAFETY: pipe2 returned two new descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn read_exact(fd: BorrowedFd, buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of buf.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = errno();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => got += n as usize,
        }
    }
    Ok(())
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && errno().kind() == std::io::ErrorKind::Interrupted
    {}
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// A detached copy of the tree at `dir` (not its submounts), optionally read-only and
/// idmapped through `userns`.
fn clone_layer(dir: BorrowedFd, read_only: bool, userns: Option<&OwnedFd>) -> Result<OwnedFd> {
    // SAFETY: open_tree on a descriptor with an empty path; returns a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(kernel("open_tree(OPEN_TREE_CLONE) of a layer")(errno()));
    }
    // SAFETY: open_tree returned a new descriptor we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    if read_only {
        attr.attr_set |= MOUNT_ATTR_RDONLY;
    }
    if let Some(ns) = userns {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = ns.as_raw_fd() as u64;
    }
    if attr.attr_set != 0 {
        // SAFETY: attr is a valid struct mount_attr of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r != 0 {
            return Err(kernel(if userns.is_some() {
                "mount_setattr(MOUNT_ATTR_IDMAP) of a layer"
            } else {
                "mount_setattr(MOUNT_ATTR_RDONLY) of a layer"
            })(errno()));
        }
    }
    Ok(fd)
}

/// Steps of the staging child, by the index it reports.
const STEPS: [&str; 9] = [
    "unshare(CLONE_NEWNS)",
    "making the staging namespace private",
    "mounting the staging tmpfs",
    "making a staging directory",
    "attaching a layer in the staging namespace",
    "fsopen(overlay)",
    "fsconfig(overlay)",
    "fsmount(overlay)",
    "taking the slot root's file system IDs for the overlay",
];

/// Makes the overlay `spec` describes and returns it as a detached mount (its root
/// directory's descriptor). `stage` is an existing directory of the host's (for example
/// /run/slot-os/stage); only the child's private namespace mounts anything on it.
pub fn mount_detached(spec: &Spec<'_>, stage: &Path) -> Result<OwnedFd> {
    if spec.upper.is_none() && spec.lowers.len() < 2 || spec.lowers.is_empty() {
        return Err(Error::NoLayers);
    }
    for (n, _) in spec.lowers.iter().chain(spec.upper.iter()) {
        plain(n)?;
    }
    // The upper's idmapping also maps MAPPED_ROOT to host root, so that host root can
    // create inodes in the root (nspawn's setup, before it chowns them); the read-only
    // lowers need no such entry, and without it nothing on them can appear as host root.
    let ns_lower = spec.shift.map(|b| userns(b, false)).transpose()?;
    let ns_upper = spec.shift.map(|b| userns(b, true)).transpose()?;
    // Layers to attach: (mount descriptor, staging path).
    let stage_s = stage.to_string_lossy().into_owned();
    let mut staged: Vec<(OwnedFd, CString)> = Vec::new();
    let mut lowerdir = Vec::new();
    for (name, fd) in &spec.lowers {
        let at = format!("{stage_s}/{name}");
        staged.push((clone_layer(*fd, true, ns_lower.as_ref())?, cstr(&at)));
        lowerdir.push(at);
    }
    let mut options: Vec<(CString, CString)> = vec![
        (cstr("source"), cstr("slot-os")),
        (cstr("lowerdir"), cstr(&lowerdir.join(":"))),
    ];
    if let Some((name, fd)) = &spec.upper {
        let at = format!("{stage_s}/{name}");
        staged.push((clone_layer(*fd, false, ns_upper.as_ref())?, cstr(&at)));
        options.push((cstr("upperdir"), cstr(&format!("{at}/upper"))));
        options.push((cstr("workdir"), cstr(&format!("{at}/work"))));
    }
    for (k, v) in FEATURES_OFF {
        options.push((cstr(k), cstr(v)));
    }
    let stage_c = cstr(&stage_s);
    let attrs = if spec.read_only { MOUNT_ATTR_RDONLY } else { 0 };

    let (parent_sock, child_sock) = socketpair()?;
    let mut keep: Vec<RawFd> = staged
        .iter()
        .map(|(fd, _)| fd.as_raw_fd())
        .chain([child_sock.as_raw_fd()])
        .collect();
    keep.sort_unstable();
    keep.dedup();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only makes system calls on data prepared above and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(kernel("fork")(errno()));
    }
    if pid == 0 {
        drop(parent_sock);
        // SAFETY: see stage_child.
        unsafe {
            stage_child(
                parent,
                &keep,
                child_sock.as_raw_fd(),
                &stage_c,
                &staged,
                &options,
                attrs,
                spec.shift,
            )
        }
    }
    drop(child_sock);
    drop(staged);
    let got = wait_for_report(parent_sock.as_fd(), pid).and_then(|()| receive(parent_sock.as_fd()));
    // SAFETY: our own child; it has sent its report or is dead already.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
    got
}

/// Waits until the child's report is there, or the child is gone without one. Not an EOF
/// on the socket: children forked meanwhile by other threads hold copies of it.
fn wait_for_report(sock: BorrowedFd, pid: libc::pid_t) -> Result<()> {
    // SAFETY: pidfd_open of our own child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(kernel("pidfd_open")(errno()));
    }
    // SAFETY: a new descriptor we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    loop {
        let mut fds = [
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if errno().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(kernel("poll")(errno()));
        }
        // A report may arrive together with the child's exit: the socket is read first.
        if fds[0].revents & libc::POLLIN != 0 {
            return Ok(());
        }
        if fds[1].revents != 0 {
            return Err(kernel("staging the overlay")(std::io::Error::other(
                "the staging process ended without a report",
            )));
        }
    }
}

fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(kernel("socketpair")(errno()));
    }
    // SAFETY: socketpair returned two new descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Size of the report the child sends: step, errno, length and text of overlayfs's log.
const REPORT: usize = 1 + 4 + 2 + 250;

/// The staging child (see the module comment). Sends the overlay's descriptor, or a report
/// of the step that failed, then exits.
///
/// SAFETY: call only in a forked child; it never returns.
#[allow(clippy::too_many_arguments)]
unsafe fn stage_child(
    parent: libc::pid_t,
    keep: &[RawFd],
    sock: RawFd,
    stage: &CStr,
    staged: &[(OwnedFd, CString)],
    options: &[(CString, CString)],
    attrs: u64,
    shift: Option<u32>,
) -> ! {
    let mut report = [0u8; REPORT];
    let fail = |report: &mut [u8; REPORT], step: u8| -> ! {
        report[0] = step;
        report[1..5].copy_from_slice(&(*libc::__errno_location()).to_ne_bytes());
        libc::send(sock, report.as_ptr().cast(), REPORT, 0);
        libc::_exit(1)
    };
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    // The helper was killed between fork and prctl: no signal would end us then.
    if libc::getppid() != parent {
        libc::_exit(1);
    }
    // Hold nothing of the helper's but the socket and the layers. A copy of a lock's
    // descriptor (flock locks belong to the open file) would keep a slot's image locked
    // after the helper was killed, until this child is gone too.
    let mut from: libc::c_uint = 0;
    for &fd in keep {
        let fd = fd as libc::c_uint;
        if fd > from {
            libc::syscall(libc::SYS_close_range, from, fd - 1, 0);
        }
        from = fd + 1;
    }
    libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0);
    if libc::unshare(libc::CLONE_NEWNS) != 0 {
        fail(&mut report, 0);
    }
    if libc::mount(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) != 0
    {
        fail(&mut report, 1);
    }
    if libc::mount(
        c"slot-os-stage".as_ptr(),
        stage.as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        c"mode=0700".as_ptr().cast(),
    ) != 0
    {
        fail(&mut report, 2);
    }
    for (fd, at) in staged {
        if libc::mkdir(at.as_ptr(), 0o700) != 0 {
            fail(&mut report, 3);
        }
        if libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            at.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) != 0
        {
            fail(&mut report, 4);
        }
    }
    // overlayfs does its work on the layers with the credentials of the task that creates
    // it, and makes whiteouts and its work directory's entries as their fsuid/fsgid: as
    // host root they would land on disk as MAPPED_ROOT through the idmapped upper. As the
    // slot root's host IDs (`base`) they land as 0:0, like every other file of the upper.
    // SECBIT_NO_SETUID_FIXUP keeps the file system capabilities a change of fsuid away
    // from 0 would otherwise drop.
    if let Some(base) = shift {
        const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
        if libc::prctl(libc::PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP) != 0 {
            fail(&mut report, 8);
        }
        libc::setfsuid(base);
        libc::setfsgid(base);
        // Both return the previous value; an invalid ID (-1) changes nothing and tells.
        if libc::setfsuid(u32::MAX) as u32 != base || libc::setfsgid(u32::MAX) as u32 != base {
            *libc::__errno_location() = libc::EPERM;
            fail(&mut report, 8);
        }
    }
    let fs = libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) as RawFd;
    if fs < 0 {
        fail(&mut report, 5);
    }
    let with_log = |report: &mut [u8; REPORT], step: u8| -> ! {
        let e = *libc::__errno_location();
        // The fs_context log: lines like "e overlay: ...".
        let n = libc::read(fs, report[7..].as_mut_ptr().cast(), REPORT - 7);
        if n > 0 {
            report[5..7].copy_from_slice(&(n as u16).to_ne_bytes());
        }
        *libc::__errno_location() = e;
        fail(report, step)
    };
    for (k, v) in options {
        if libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        ) != 0
        {
            with_log(&mut report, 6);
        }
    }
    if libc::syscall(
        libc::SYS_fsconfig,
        fs,
        FSCONFIG_CMD_CREATE,
        std::ptr::null::<libc::c_char>(),
        std::ptr::null::<libc::c_char>(),
        0,
    ) != 0
    {
        with_log(&mut report, 6);
    }
    let m = libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs) as RawFd;
    if m < 0 {
        fail(&mut report, 7);
    }
    // The descriptor goes as SCM_RIGHTS; the payload byte 0xff says "success".
    let mut ok = [0xffu8];
    let mut iov = libc::iovec {
        iov_base: ok.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = [0u64; 4];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = libc::CMSG_SPACE(4) as _;
    let c = libc::CMSG_FIRSTHDR(&msg);
    (*c).cmsg_level = libc::SOL_SOCKET;
    (*c).cmsg_type = libc::SCM_RIGHTS;
    (*c).cmsg_len = libc::CMSG_LEN(4) as _;
    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), m);
    if libc::sendmsg(sock, &msg, 0) < 0 {
        libc::_exit(1);
    }
    libc::_exit(0)
}

/// The overlay's descriptor from the staging child, or the error it reported.
fn receive(sock: BorrowedFd) -> Result<OwnedFd> {
    let mut buf = [0u8; REPORT];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: REPORT,
    };
    let mut cbuf = [0u64; 4];
    // SAFETY: a zeroed msghdr pointing at buffers that live through the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: msg describes valid buffers.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 || errno().kind() != std::io::ErrorKind::Interrupted {
            break n;
        }
    };
    if n < 0 {
        return Err(kernel("receiving the overlay")(errno()));
    }
    if n == 1 && buf[0] == 0xff {
        // SAFETY: reading the control message the child built.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            if !c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                return Ok(OwnedFd::from_raw_fd(fd));
            }
        }
    }
    if (n as usize) < 7 {
        return Err(kernel("staging the overlay")(std::io::Error::other(
            "the staging process ended without a report",
        )));
    }
    let step = STEPS.get(buf[0] as usize).copied().unwrap_or("staging");
    let code = i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let len = u16::from_ne_bytes([buf[5], buf[6]]) as usize;
    let log = (len > 0).then(|| {
        String::from_utf8_lossy(&buf[7..7 + len.min(REPORT - 7)])
            .trim()
            .to_string()
    });
    Err(Error::Kernel {
        step,
        source: std::io::Error::from_raw_os_error(code),
        log,
    })
}

/// A regular directory descriptor of a detached mount's root (fsmount returns an O_PATH
/// one), for reading and writing inside it.
pub fn root_dir(mnt: &OwnedFd) -> Result<OwnedFd> {
    // SAFETY: openat relative to a valid descriptor.
    let fd = unsafe {
        libc::openat(
            mnt.as_raw_fd(),
            c".".as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(kernel("opening the overlay's root")(errno()));
    }
    // SAFETY: a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches the detached mount `mnt` on the directory `target` (a descriptor the caller
/// resolved without following symlinks).
pub fn attach(mnt: OwnedFd, target: BorrowedFd) -> Result<()> {
    // SAFETY: move_mount between two valid descriptors with empty paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(kernel("move_mount of the overlay onto its mount point")(
            errno(),
        ));
    }
    Ok(())
}

/// Whether the directory `dir` is the root of a mount, and of an overlay.
pub fn mounted_at(dir: BorrowedFd) -> Result<(bool, bool)> {
    let st = rustix::fs::statx(
        dir,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::BASIC_STATS,
    )
    .map_err(|e| kernel("statx")(e.into()))?;
    let mount_root = rustix::fs::StatxAttributes::MOUNT_ROOT;
    let root =
        st.stx_attributes_mask.contains(mount_root) && st.stx_attributes.contains(mount_root);
    let fs = rustix::fs::fstatfs(dir).map_err(|e| kernel("statfs")(e.into()))?;
    Ok((root, root && fs.f_type as i64 == OVERLAYFS_MAGIC))
}

/// Unmounts everything mounted at `path` (stacked mounts a killed run left too). A mount
/// still in use is detached (lazy unmount): its users keep it, new lookups see the
/// directory beneath.
pub fn unmount_all(path: &Path) -> Result<usize> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::BadName(path.display().to_string()))?;
    let mut n = 0;
    loop {
        // SAFETY: umount2 of a NUL-terminated path.
        let r = unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW) };
        if r == 0 {
            n += 1;
            continue;
        }
        match errno().raw_os_error() {
            // Not a mount point (any more).
            Some(libc::EINVAL) | Some(libc::ENOENT) => return Ok(n),
            Some(libc::EBUSY) => {
                // SAFETY: as above.
                if unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW | libc::MNT_DETACH) }
                    != 0
                {
                    return Err(kernel("detaching the overlay")(errno()));
                }
                n += 1;
            }
            _ => return Err(kernel("unmounting the overlay")(errno())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn dir(p: &Path) -> OwnedFd {
        OwnedFd::from(fs::File::open(p).unwrap())
    }

    /// A tempdir with `lower/`, `layer/{upper,work}/` and `stage/`; `None` (test skipped)
    /// unless we are root.
    struct Tree {
        t: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Option<Tree> {
            if !root() {
                eprintln!("skipped: needs root");
                return None;
            }
            let t = tempfile::tempdir_in("/var/tmp").unwrap();
            for d in ["lower", "layer/upper", "layer/work", "stage"] {
                fs::create_dir_all(t.path().join(d)).unwrap();
            }
            Some(Tree { t })
        }
        fn p(&self, rel: &str) -> std::path::PathBuf {
            self.t.path().join(rel)
        }
    }

    #[test]
    fn names_that_would_split_options_are_refused() {
        for bad in ["", ".", "..", "a:b", "a,b", "a/b", "a\\b", "a b"] {
            assert!(plain(bad).is_err(), "{bad:?}");
        }
        assert!(plain("slot-os@3").is_ok());
    }

    /// The whole path on this machine's kernel: idmapped layers, an overlay over them,
    /// writes shifted back to 0 on disk, whiteouts in the upper, nothing left mounted.
    #[test]
    fn idmapped_overlay_shifts_and_keeps_disk_ids() {
        let Some(t) = Tree::new() else { return };
        let (lower, layer, stage) = (t.p("lower"), t.p("layer"), t.p("stage"));
        fs::write(lower.join("base-file"), "from the base\n").unwrap();
        fs::write(lower.join("gone"), "deleted in the slot\n").unwrap();
        fs::write(lower.join("mapped"), "").unwrap();
        std::os::unix::fs::chown(lower.join("mapped"), Some(MAPPED_ROOT), Some(MAPPED_ROOT))
            .unwrap();
        let base = 0x7000_0000 + 5 * RANGE;
        let (l, u) = (dir(&lower), dir(&layer));
        let spec = Spec {
            lowers: vec![("lower", l.as_fd())],
            upper: Some(("slot05", u.as_fd())),
            shift: Some(base),
            read_only: false,
        };
        let mnt = mount_detached(&spec, &stage).unwrap();
        let r = root_dir(&mnt).unwrap();
        let st = rustix::fs::statat(&r, "base-file", rustix::fs::AtFlags::empty()).unwrap();
        assert_eq!((st.st_uid, st.st_gid), (base, base), "lower shown shifted");
        let st = rustix::fs::statat(&r, "mapped", rustix::fs::AtFlags::empty()).unwrap();
        assert_ne!(st.st_uid, 0, "nothing of a lower appears as host root");
        // Host root creates as MAPPED_ROOT on disk, like nspawn before it chowns.
        let f = rustix::fs::openat(
            &r,
            "new",
            rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::fs::fchown(
            &f,
            Some(rustix::fs::Uid::from_raw(base)),
            Some(rustix::fs::Gid::from_raw(base + 5)),
        )
        .unwrap();
        drop(f);
        rustix::fs::unlinkat(&r, "gone", rustix::fs::AtFlags::empty()).unwrap();
        drop(r);
        drop(mnt);
        let m = fs::metadata(layer.join("upper/new")).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 5), "upper stays unshifted on disk");
        let w = fs::symlink_metadata(layer.join("upper/gone")).unwrap();
        assert_eq!(w.rdev(), 0, "whiteout is a 0/0 device");
        assert_eq!((w.uid(), w.gid()), (0, 0), "whiteouts are 0:0 on disk too");
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &w.file_type()
        ));
        // Nothing was left mounted on the staging directory in our namespace.
        assert!(fs::read_dir(&stage).unwrap().next().is_none());
        assert!(!fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&stage.display().to_string()));
    }

    #[test]
    fn a_read_only_view_of_upper_and_lower_honours_whiteouts() {
        let Some(t) = Tree::new() else { return };
        let (lower, layer, stage) = (t.p("lower"), t.p("layer"), t.p("stage"));
        fs::write(lower.join("gone"), "x").unwrap();
        fs::write(lower.join("kept"), "x").unwrap();
        let (l, u) = (dir(&lower), dir(&layer));
        let rw = Spec {
            lowers: vec![("lower", l.as_fd())],
            upper: Some(("layer", u.as_fd())),
            shift: None,
            read_only: false,
        };
        let mnt = mount_detached(&rw, &stage).unwrap();
        rustix::fs::unlinkat(
            root_dir(&mnt).unwrap(),
            "gone",
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        drop(mnt);
        let up = dir(&layer.join("upper"));
        let ro = Spec {
            lowers: vec![("upper", up.as_fd()), ("lower", l.as_fd())],
            upper: None,
            shift: None,
            read_only: true,
        };
        let mnt = mount_detached(&ro, &stage).unwrap();
        let names = crate::sys::inroot::list_fd(root_dir(&mnt).unwrap().as_fd()).unwrap();
        assert_eq!(names, vec!["kept".to_string()]);
    }

    #[test]
    fn attach_and_unmount_leave_no_mount() {
        let Some(t) = Tree::new() else { return };
        let (lower, layer, stage, target) =
            (t.p("lower"), t.p("layer"), t.p("stage"), t.p("target"));
        fs::create_dir_all(&target).unwrap();
        fs::write(lower.join("f"), "x").unwrap();
        let (l, u, tg) = (dir(&lower), dir(&layer), dir(&target));
        let spec = Spec {
            lowers: vec![("lower", l.as_fd())],
            upper: Some(("layer", u.as_fd())),
            shift: Some(0x7000_0000),
            read_only: false,
        };
        assert_eq!(mounted_at(tg.as_fd()).unwrap(), (false, false));
        attach(mount_detached(&spec, &stage).unwrap(), tg.as_fd()).unwrap();
        let now = dir(&target);
        assert_eq!(mounted_at(now.as_fd()).unwrap(), (true, true));
        assert_eq!(fs::metadata(target.join("f")).unwrap().uid(), 0x7000_0000);
        drop(now);
        assert_eq!(unmount_all(&target).unwrap(), 1);
        assert!(!target.join("f").exists());
        assert_eq!(unmount_all(&target).unwrap(), 0);
    }
}
