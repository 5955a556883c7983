//! Files a slot's processes map shared and writable. A write through such a mapping to a
//! page that is already dirty updates no time stamp, so the capture's frozen pass copies
//! these files again whatever their metadata says. Read while the slot is frozen: its
//! processes can neither map nor write anything meanwhile.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The processes of the cgroup subtree that holds `leader` (a slot's PID 1: nspawn's
/// `payload` cgroup, where the slot's systemd makes its own below).
pub fn slot_pids(leader: u32) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{leader}/cgroup")) else {
        return vec![leader];
    };
    // The unified hierarchy ("0::/path"); in hybrid mode it is mounted at .../unified.
    let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return vec![leader];
    };
    let rel = path.trim_start_matches('/');
    let dir = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(|base| Path::new(base).join(rel))
        .find(|d| d.join("cgroup.procs").exists());
    let mut out = Vec::new();
    if let Some(d) = dir {
        procs_below(&d, &mut out, 0);
    }
    if out.is_empty() {
        out.push(leader);
    }
    out
}

fn procs_below(dir: &PathBuf, out: &mut Vec<u32>, depth: usize) {
    if depth > 32 {
        return;
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            procs_below(&e.path(), out, depth + 1);
        }
    }
}

/// (device, inode) of every file mapped shared and writable by one of `pids`.
pub fn shared_writable(pids: &[u32]) -> HashSet<(u64, u64)> {
    let mut out = HashSet::new();
    for pid in pids {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            out.extend(text.lines().filter_map(parse_line));
        }
    }
    out
}

/// `start-end perms offset major:minor inode path` -> (dev, inode) when `perms` is
/// writable and shared (`rw.s`) and the mapping is of a file.
fn parse_line(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_ascii_whitespace();
    let _range = f.next()?;
    let perms = f.next()?.as_bytes();
    let _offset = f.next()?;
    let dev = f.next()?;
    let ino: u64 = f.next()?.parse().ok()?;
    if perms.len() < 4 || perms[1] != b'w' || perms[3] != b's' || ino == 0 {
        return None;
    }
    let (maj, min) = dev.split_once(':')?;
    let (maj, min) = (
        u32::from_str_radix(maj, 16).ok()?,
        u32::from_str_radix(min, 16).ok()?,
    );
    Some((libc::makedev(maj, min), ino))
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn only_shared_writable_file_mappings_count() {
        let dev = libc::makedev(0xfd, 1);
        assert_eq!(
            parse_line("7f00-7f10 rw-s 00000000 fd:01 1234   /var/lib/db/data.mdb"),
            Some((dev, 1234))
        );
        assert_eq!(
            parse_line("7f00-7f10 rw-p 00000000 fd:01 1234 /lib/x.so"),
            None
        );
        assert_eq!(parse_line("7f00-7f10 r--s 00000000 fd:01 1234 /x"), None);
        assert_eq!(
            parse_line("7f00-7f10 rw-s 00000000 00:01 0 /dev/zero (deleted)"),
            None
        );
        assert_eq!(parse_line("7ffd-7ffe rw-p 00000000 00:00 0 [stack]"), None);
    }

    #[test]
    fn a_shared_writable_mapping_of_ours_is_found() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        // SAFETY: a fresh shared mapping of a 4 KiB file we own, unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let m = std::fs::metadata(&p).unwrap();
        let found = super::shared_writable(&[std::process::id()]);
        // SAFETY: addr is the mapping made above.
        unsafe { libc::munmap(addr, 4096) };
        assert!(found.contains(&(m.dev(), m.ino())), "{found:?}");
    }
}
