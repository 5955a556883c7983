//! Typed values of the config (sizes, CPU sets, CPU quotas, addresses): parsing with
//! messages that say what is allowed, and the canonical text each renders to.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Fulcon's CPU%: percent of one CPU (200% = two whole CPUs), or "auto" =
/// ncpu*100/number of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuQuota {
    Auto,
    Percent(u32),
}

impl FromStr for CpuQuota {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "auto" {
            return Ok(CpuQuota::Auto);
        }
        let digits = t.strip_suffix('%').unwrap_or(t).trim();
        match digits.parse::<u32>() {
            Ok(0) => Err(format!(
                "CPU quota {s:?} is 0; use 1% or more (100% = one whole CPU), or \"auto\""
            )),
            Ok(n) => Ok(CpuQuota::Percent(n)),
            Err(_) => Err(format!(
                "{s:?} is not a CPU quota; use a percentage like \"50%\" (100% = one whole CPU) or \"auto\""
            )),
        }
    }
}

impl fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuQuota::Auto => f.write_str("auto"),
            CpuQuota::Percent(n) => write!(f, "{n}%"),
        }
    }
}

/// A set of CPU numbers, written like the kernel's cpulist format: "0-1,3".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuSet(BTreeSet<u32>);

/// The largest CPU number accepted in a set, so a typo like "0-4000000000" cannot make us
/// allocate a huge set before the "beyond this host" check runs.
const MAX_CPU: u32 = 8191;

impl CpuSet {
    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> Self {
        CpuSet(cpus.into_iter().collect())
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }
}

impl FromStr for CpuSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a CPU set; use CPU numbers and ranges like \"0\", \"0-1\" or \"0-1,3\", or \"all\"")
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad());
        }
        let mut set = BTreeSet::new();
        for part in t.split(',') {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let lo: u32 = lo.parse().map_err(|_| bad())?;
            let hi: u32 = hi.parse().map_err(|_| bad())?;
            if lo > hi {
                return Err(format!(
                    "{s:?}: range {lo}-{hi} runs backwards; write the lower CPU first"
                ));
            }
            if hi > MAX_CPU {
                return Err(format!(
                    "{s:?}: CPU {hi} is beyond the largest CPU number slot-os accepts ({MAX_CPU})"
                ));
            }
            set.extend(lo..=hi);
        }
        Ok(CpuSet(set))
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut it = self.0.iter().copied().peekable();
        while let Some(lo) = it.next() {
            let mut hi = lo;
            while it.peek() == Some(&(hi + 1)) {
                hi = it.next().unwrap_or(hi);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// A memory size in bytes, written with Fulcon's K/M/G (and T) suffixes, powers of 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Memory(pub u64);

const UNITS: [(char, u64); 4] = [
    ('T', 1 << 40),
    ('G', 1 << 30),
    ('M', 1 << 20),
    ('K', 1 << 10),
];

/// Below this a slot's systemd cannot even start; refusing it early beats a slot that
/// is OOM-killed during boot.
pub const MIN_MEMORY: u64 = 16 << 20;

/// Bytes of "512M", "2G", "10240" (K, M, G, T: powers of 1024; a trailing B is allowed);
/// `None` if it is not such a size or overflows.
fn size_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let up = c.to_ascii_uppercase();
            let m = UNITS.iter().find(|(u, _)| *u == up).map(|(_, m)| *m)?;
            (&t[..t.len() - 1], m)
        }
        Some(_) => (t, 1),
        None => return None,
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// `size` in the largest unit that states it exactly ("512M" stays "512M").
fn fmt_size(f: &mut fmt::Formatter<'_>, size: u64) -> fmt::Result {
    for (u, m) in UNITS {
        if size >= m && size.is_multiple_of(m) {
            return write!(f, "{}{}", size / m, u);
        }
    }
    write!(f, "{size}")
}

impl FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = size_bytes(s).ok_or_else(|| {
            format!("{s:?} is not a memory size; use a number with a K, M, G or T suffix, like \"512M\" or \"2G\"")
        })?;
        if bytes < MIN_MEMORY {
            return Err(format!(
                "{s:?} is too little memory for a slot; use at least 16M"
            ));
        }
        Ok(Memory(bytes))
    }
}

impl fmt::Display for Memory {
    /// The largest unit that states the size exactly, so "512M" stays "512M".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_size(f, self.0)
    }
}

/// A limit that can be lifted: `"none"`, or a size with K, M, G or T (powers of 1024).
/// `disk` and the IO bandwidths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeLimit {
    None,
    Bytes(u64),
}

impl SizeLimit {
    pub fn bytes(self) -> Option<u64> {
        match self {
            SizeLimit::None => None,
            SizeLimit::Bytes(b) => Some(b),
        }
    }
}

impl SizeLimit {
    /// `"none"`, or a size of at least `min` bytes; `small` and `bad` are the messages for
    /// a smaller size and for what is not a size.
    fn parse(
        s: &str,
        min: u64,
        small: impl FnOnce() -> String,
        bad: impl FnOnce() -> String,
    ) -> Result<SizeLimit, String> {
        if s.trim() == "none" {
            return Ok(SizeLimit::None);
        }
        match size_bytes(s) {
            Some(b) if b >= min => Ok(SizeLimit::Bytes(b)),
            Some(_) => Err(small()),
            None => Err(bad()),
        }
    }
}

impl fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeLimit::None => f.write_str("none"),
            SizeLimit::Bytes(b) => fmt_size(f, *b),
        }
    }
}

/// Smallest `disk` limit: below it a quota is a typo, not a limit (a slot's root alone
/// is hundreds of megabytes).
pub const MIN_DISK: u64 = 1 << 20;

/// `disk = "10G"` or `"none"`: the most a slot's own data may take on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk(pub SizeLimit);

impl FromStr for Disk {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SizeLimit::parse(
            s,
            MIN_DISK,
            || format!("{s:?} is too small a disk limit; use at least 1M, or \"none\""),
            || format!("{s:?} is not a disk size; use a number with a K, M, G or T suffix, like \"10G\", or \"none\""),
        )
        .map(Disk)
    }
}

impl fmt::Display for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Smallest IO bandwidth limit, in bytes per second: a slot held below it cannot even
/// boot in reasonable time.
pub const MIN_BANDWIDTH: u64 = 1 << 20;

/// `io_read_bandwidth_max`/`io_write_bandwidth_max`: bytes per second with K, M, G or T
/// (powers of 1024, like every size of the config; rendered in bytes, so systemd's own
/// powers of 1000 never apply), or `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth(pub SizeLimit);

impl FromStr for Bandwidth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SizeLimit::parse(
            s,
            MIN_BANDWIDTH,
            || format!("{s:?} is too little bandwidth; use at least 1M (bytes per second), or \"none\""),
            || format!("{s:?} is not a bandwidth; use bytes per second with a K, M, G or T suffix, like \"50M\", or \"none\""),
        )
        .map(Bandwidth)
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The kernel's largest PID (PID_MAX_LIMIT): no slot can have more tasks.
pub const MAX_TASKS: u64 = 4_194_304;

/// `tasks_max`: how many processes and threads a slot may have (systemd's TasksMax=),
/// or `"none"` (TasksMax=infinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TasksMax {
    None,
    Count(u64),
}

impl FromStr for TasksMax {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "none" || t == "infinity" {
            return Ok(TasksMax::None);
        }
        match t.parse::<u64>() {
            Ok(n) if (1..=MAX_TASKS).contains(&n) => Ok(TasksMax::Count(n)),
            Ok(_) => Err(format!(
                "{s:?} is out of range; use 1 to {MAX_TASKS} tasks, or \"none\""
            )),
            Err(_) => Err(format!(
                "{s:?} is not a number of tasks; use a number like 512, or \"none\""
            )),
        }
    }
}

impl fmt::Display for TasksMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TasksMax::None => f.write_str("none"),
            TasksMax::Count(n) => write!(f, "{n}"),
        }
    }
}

/// systemd's IOWeight= range (the io controller's io.weight).
pub const MIN_IO_WEIGHT: u32 = 1;
pub const MAX_IO_WEIGHT: u32 = 10_000;

/// An interface address with its prefix length: "192.168.18.2/24", "fd77::10/64".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn max_prefix(addr: &IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.trim().split_once('/').ok_or_else(|| {
            format!("{s:?} has no prefix length; write an address with its mask, like \"192.168.18.2/24\" or \"fd00::2/64\"")
        })?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 or IPv6 address"))?;
        let max = Cidr::max_prefix(&addr);
        let prefix: u8 = p.parse().ok().filter(|n| *n <= max).ok_or_else(|| {
            format!("{s:?}: prefix length /{p} is out of range; use /0 to /{max}")
        })?;
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(format!("{s:?}: {addr} cannot be an interface address"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_roundtrip_and_normalises() {
        let s: CpuSet = "3,0-1, 2".parse().unwrap();
        assert_eq!(s.to_string(), "0-3");
        let s: CpuSet = "0,2,4-5".parse().unwrap();
        assert_eq!(s.to_string(), "0,2,4-5");
        assert!("1-0".parse::<CpuSet>().is_err());
        assert!("".parse::<CpuSet>().is_err());
        assert!("a".parse::<CpuSet>().is_err());
    }

    #[test]
    fn memory_units() {
        assert_eq!("512M".parse::<Memory>().unwrap(), Memory(512 << 20));
        assert_eq!("2g".parse::<Memory>().unwrap().to_string(), "2G");
        assert_eq!("1024M".parse::<Memory>().unwrap().to_string(), "1G");
        assert_eq!("512MB".parse::<Memory>().unwrap().to_string(), "512M");
        assert!("abc".parse::<Memory>().is_err());
        assert!("1K".parse::<Memory>().is_err());
        assert!("99999999999999T".parse::<Memory>().is_err());
    }

    #[test]
    fn limits_with_none() {
        assert_eq!(
            "10G".parse::<Disk>().unwrap(),
            Disk(SizeLimit::Bytes(10 << 30))
        );
        assert_eq!("none".parse::<Disk>().unwrap().to_string(), "none");
        assert_eq!("1536M".parse::<Disk>().unwrap().to_string(), "1536M");
        assert!("512K".parse::<Disk>().is_err());
        assert!("ten".parse::<Disk>().is_err());
        assert!("99999999999999T".parse::<Disk>().is_err());
        assert_eq!(
            "50M".parse::<Bandwidth>().unwrap().0.bytes(),
            Some(50 << 20)
        );
        assert!("0".parse::<Bandwidth>().is_err());
        assert_eq!("512".parse::<TasksMax>().unwrap(), TasksMax::Count(512));
        assert_eq!("infinity".parse::<TasksMax>().unwrap(), TasksMax::None);
        assert!("0".parse::<TasksMax>().is_err());
        assert!("4194305".parse::<TasksMax>().is_err());
        assert!("-1".parse::<TasksMax>().is_err());
    }

    #[test]
    fn cpu_quota() {
        assert_eq!("50%".parse::<CpuQuota>().unwrap(), CpuQuota::Percent(50));
        assert_eq!("50".parse::<CpuQuota>().unwrap(), CpuQuota::Percent(50));
        assert_eq!("auto".parse::<CpuQuota>().unwrap(), CpuQuota::Auto);
        assert!("0%".parse::<CpuQuota>().is_err());
        assert!("x%".parse::<CpuQuota>().is_err());
    }

    #[test]
    fn cidr() {
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.1/8"
        );
        assert_eq!("fd77::1/64".parse::<Cidr>().unwrap().prefix, 64);
        assert!("10.0.0.1/33".parse::<Cidr>().is_err());
        assert!("300.1.1.1/24".parse::<Cidr>().is_err());
        assert!("10.0.0.1".parse::<Cidr>().is_err());
        assert!("fd77::1/129".parse::<Cidr>().is_err());
    }
}
