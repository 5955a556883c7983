//! What the host offers (online CPUs, total memory), read from /sys and /proc under the
//! root so tests can supply them.

use std::fs;

use crate::{CpuSet, Paths};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: CpuSet,
    /// Bytes of MemTotal, when /proc/meminfo could be read.
    pub mem_total: Option<u64>,
}

impl HostFacts {
    pub fn read(paths: &Paths) -> Self {
        let cpus = fs::read_to_string(paths.cpu_online())
            .ok()
            .and_then(|s| s.trim().parse::<CpuSet>().ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
                CpuSet::from_cpus(0..n)
            });
        let mem_total = fs::read_to_string(paths.meminfo())
            .ok()
            .and_then(|s| parse_memtotal(&s));
        HostFacts { cpus, mem_total }
    }

    pub fn ncpus(&self) -> u32 {
        self.cpus.len() as u32
    }
}

fn parse_memtotal(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn memtotal() {
        assert_eq!(
            super::parse_memtotal("MemTotal:       2048 kB\nMemFree: 1 kB\n"),
            Some(2048 * 1024)
        );
    }
}
