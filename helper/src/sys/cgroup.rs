//! A slot's resource counters, read from its unit's cgroup: the files systemd-cgtop and
//! systemd's own `CPUUsageNSec`/`MemoryCurrent`/`IOReadBytes` read, without a process.
//!
//! The unit's cgroup is found from its leader's `/proc/PID/cgroup` (the leader sits in
//! `…/systemd-nspawn@NAME.service/payload/…`): the path is cut after the component named
//! for the unit, so the counters cover the whole unit (nspawn itself and the payload). A
//! hierarchy whose path for the leader does not name the unit (a cgroup-v1 controller
//! systemd does not manage there: the process sits in that hierarchy's root) gives no
//! value rather than the whole host's.
//!
//! | counter | cgroup v2 (unified, or hybrid's `unified` mount) | cgroup v1 |
//! |---|---|---|
//! | CPU time | `cpu.stat` `usage_usec` (every v2 cgroup has it, controller or not) | `cpuacct.usage` |
//! | memory | `memory.current` (memory controller) | `memory.usage_in_bytes` |
//! | I/O bytes | `io.stat` `rbytes`/`wbytes`, summed over devices (io controller) | — |

use std::fs;
use std::path::{Path, PathBuf};

/// One slot's counters; `None` where this host's cgroup setup does not count it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of every process of the unit, microseconds.
    pub cpu_usec: Option<u64>,
    /// Memory charged to the unit (page cache included, as systemd's MemoryCurrent).
    pub memory_bytes: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

/// Where the cgroup file systems are mounted (`/sys/fs/cgroup`; tests use a copy).
pub struct Hierarchies {
    root: PathBuf,
}

impl Default for Hierarchies {
    fn default() -> Self {
        Hierarchies {
            root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// The part of `path` up to and including the component `unit`, if it has one.
fn cut_at_unit<'a>(path: &'a str, unit: &str) -> Option<&'a str> {
    let mut end = 0;
    for comp in path.split('/') {
        end += comp.len();
        if comp == unit {
            return Some(&path[..end]);
        }
        end += 1;
    }
    None
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`cpu.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `io.stat`: one line per device, `MAJ:MIN rbytes=… wbytes=… rios=…`; summed.
fn io_bytes(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            r += v.parse::<u64>().unwrap_or(0);
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            w += v.parse::<u64>().unwrap_or(0);
        }
    }
    (r, w)
}

impl Hierarchies {
    #[cfg(test)]
    pub fn at(root: &Path) -> Self {
        Hierarchies {
            root: root.to_path_buf(),
        }
    }

    /// The v2 hierarchy: the root itself (unified), or its `unified` mount (hybrid).
    fn v2(&self) -> Option<PathBuf> {
        if self.root.join("cgroup.controllers").exists() {
            Some(self.root.clone())
        } else {
            let u = self.root.join("unified");
            u.join("cgroup.controllers").exists().then_some(u)
        }
    }

    /// The counters of `unit`, whose leader's `/proc/PID/cgroup` reads `proc_cgroup`.
    pub fn usage(&self, proc_cgroup: &str, unit: &str) -> Usage {
        let mut u = Usage::default();
        let mut v1: Vec<(&str, &str)> = Vec::new();
        let mut v2_path = None;
        for line in proc_cgroup.lines() {
            let mut f = line.splitn(3, ':');
            let (Some(_id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Some(cut) = cut_at_unit(path, unit) else {
                continue;
            };
            if ctrls.is_empty() {
                v2_path = Some(cut);
            } else {
                v1.push((ctrls, cut));
            }
        }
        let rel = |p: &str| p.trim_start_matches('/').to_string();
        if let (Some(base), Some(p)) = (self.v2(), v2_path) {
            let dir = base.join(rel(p));
            if let Ok(stat) = fs::read_to_string(dir.join("cpu.stat")) {
                u.cpu_usec = keyed(&stat, "usage_usec");
            }
            u.memory_bytes = read_u64(&dir.join("memory.current"));
            if let Ok(io) = fs::read_to_string(dir.join("io.stat")) {
                let (r, w) = io_bytes(&io);
                u.io_read_bytes = Some(r);
                u.io_write_bytes = Some(w);
            }
        }
        for (ctrls, p) in v1 {
            // The mount is named for its controllers as the kernel lists them
            // ("cpu,cpuacct"), and Debian adds a link per controller.
            let dir = self.root.join(ctrls).join(rel(p));
            let has = |c: &str| ctrls.split(',').any(|x| x == c);
            if u.cpu_usec.is_none() && has("cpuacct") {
                u.cpu_usec = read_u64(&dir.join("cpuacct.usage")).map(|ns| ns / 1000);
            }
            if u.memory_bytes.is_none() && has("memory") {
                u.memory_bytes = read_u64(&dir.join("memory.usage_in_bytes"));
            }
        }
        u
    }
}

impl Hierarchies {
    /// The directory of `unit`'s `payload` cgroup (where nspawn puts the container's
    /// processes) in the v2 hierarchy or systemd's own v1 one (`name=systemd`).
    fn payload_dir(&self, proc_cgroup: &str, unit: &str) -> Option<PathBuf> {
        proc_cgroup.lines().find_map(|line| {
            let mut f = line.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let base = match ctrls {
                "" => self.v2()?,
                "name=systemd" => self.root.join("systemd"),
                _ => return None,
            };
            let dir = base
                .join(cut_at_unit(path, unit)?.trim_start_matches('/'))
                .join("payload");
            dir.is_dir().then_some(dir)
        })
    }
}

/// Every PID in `dir`'s cgroup and those below it.
fn pids_below(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pids_below(&e.path(), out);
        }
    }
}

/// The processes of the slot whose unit is `unit` and whose leader is `leader`: those in
/// the unit's `payload` cgroup. `None` when it cannot be found (the caller looks elsewhere).
pub fn payload_pids(leader: u32, unit: &str) -> Option<Vec<u32>> {
    let text = fs::read_to_string(format!("/proc/{leader}/cgroup")).ok()?;
    let dir = Hierarchies::default().payload_dir(&text, unit)?;
    let mut pids = Vec::new();
    pids_below(&dir, &mut pids);
    pids.contains(&leader).then_some(pids)
}

/// The counters of the slot whose unit is `unit` and whose leader is `leader`.
pub fn usage_of(leader: u32, unit: &str) -> Usage {
    match fs::read_to_string(format!("/proc/{leader}/cgroup")) {
        Ok(text) => Hierarchies::default().usage(&text, unit),
        Err(_) => Usage::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "systemd-nspawn@slot00.service";

    #[test]
    fn the_unit_is_cut_from_the_leaders_path() {
        assert_eq!(
            cut_at_unit(
                "/machine.slice/systemd-nspawn@slot00.service/payload/init.scope",
                UNIT
            ),
            Some("/machine.slice/systemd-nspawn@slot00.service")
        );
        assert_eq!(cut_at_unit("/", UNIT), None);
        // A name that only starts like the unit is not it.
        assert_eq!(
            cut_at_unit(
                "/machine.slice/systemd-nspawn@slot00.service-x/payload",
                UNIT
            ),
            None
        );
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let unit = t.path().join("machine.slice").join(UNIT);
        fs::create_dir_all(&unit).unwrap();
        fs::write(t.path().join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        fs::write(
            unit.join("cpu.stat"),
            "usage_usec 354577\nuser_usec 185839\nsystem_usec 168738\n",
        )
        .unwrap();
        t
    }

    #[test]
    fn unified_counters() {
        let t = tree();
        let unit = t.path().join("machine.slice").join(UNIT);
        let proc = format!("0::/machine.slice/{UNIT}/payload/init.scope\n");
        // Controllers not enabled (as in the test hosts): CPU time only.
        let u = Hierarchies::at(t.path()).usage(&proc, UNIT);
        assert_eq!(
            u,
            Usage {
                cpu_usec: Some(354577),
                ..Default::default()
            }
        );
        fs::write(unit.join("memory.current"), "52428800\n").unwrap();
        fs::write(
            unit.join("io.stat"),
            "254:0 rbytes=1000 wbytes=20 rios=3 wios=1 dbytes=0 dios=0\n8:0 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n",
        )
        .unwrap();
        let u = Hierarchies::at(t.path()).usage(&proc, UNIT);
        assert_eq!(u.memory_bytes, Some(52428800));
        assert_eq!((u.io_read_bytes, u.io_write_bytes), (Some(1005), Some(27)));
        // A leader not in the unit's cgroup (PID reused): nothing, not the root's totals.
        assert_eq!(
            Hierarchies::at(t.path()).usage("0::/user.slice\n", UNIT),
            Usage::default()
        );
    }

    #[test]
    fn hybrid_and_v1_counters() {
        let t = tempfile::tempdir().unwrap();
        let v2 = t.path().join("unified/machine.slice").join(UNIT);
        fs::create_dir_all(&v2).unwrap();
        fs::write(t.path().join("unified/cgroup.controllers"), "").unwrap();
        fs::write(v2.join("cpu.stat"), "usage_usec 10\n").unwrap();
        let mem = t.path().join("memory/machine.slice").join(UNIT);
        fs::create_dir_all(&mem).unwrap();
        fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        let acct = t.path().join("cpu,cpuacct/machine.slice").join(UNIT);
        fs::create_dir_all(&acct).unwrap();
        fs::write(acct.join("cpuacct.usage"), "99000\n").unwrap();
        let proc = format!(
            "9:name=systemd:/machine.slice/{UNIT}/payload\n4:memory:/machine.slice/{UNIT}\n\
             2:cpu,cpuacct:/machine.slice/{UNIT}\n1:blkio:/\n0::/machine.slice/{UNIT}/payload\n"
        );
        let u = Hierarchies::at(t.path()).usage(&proc, UNIT);
        // v2's cpu.stat wins over cpuacct; memory from v1.
        assert_eq!(u.cpu_usec, Some(10));
        assert_eq!(u.memory_bytes, Some(4096));
        assert_eq!(u.io_read_bytes, None);
        // No v2 path: cpuacct (ns → µs).
        let proc = format!("4:memory:/\n2:cpu,cpuacct:/machine.slice/{UNIT}\n");
        let u = Hierarchies::at(t.path()).usage(&proc, UNIT);
        assert_eq!((u.cpu_usec, u.memory_bytes), (Some(99), None));
    }

    #[test]
    fn the_payload_cgroup_holds_the_slots_processes() {
        let t = tree();
        let unit = t.path().join("machine.slice").join(UNIT);
        fs::create_dir_all(unit.join("payload/init.scope")).unwrap();
        fs::create_dir_all(unit.join("supervisor")).unwrap();
        fs::write(
            unit.join("payload/init.scope/cgroup.procs"),
            "42
",
        )
        .unwrap();
        fs::write(
            unit.join("payload/cgroup.procs"),
            "43
44
",
        )
        .unwrap();
        fs::write(
            unit.join("supervisor/cgroup.procs"),
            "7
",
        )
        .unwrap();
        let h = Hierarchies::at(t.path());
        let proc = format!("0::/machine.slice/{UNIT}/payload/init.scope\n");
        let dir = h.payload_dir(&proc, UNIT).unwrap();
        let mut pids = Vec::new();
        pids_below(&dir, &mut pids);
        pids.sort();
        // nspawn itself (the supervisor) is not one of the slot's processes
        assert_eq!(pids, [42, 43, 44]);
        assert!(h.payload_dir("0::/user.slice\n", UNIT).is_none());
    }
}
