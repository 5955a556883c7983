//! Reading the whole config directory: the host file, every slot file, and the checks
//! that span files (duplicate numbers, unknown bridges, what the host can give).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::host::parse_host;
use crate::slot::parse_slot;
pub use crate::slot::{auto_cpu_quota, Defaults};
use crate::table::parse_toml;
use crate::{CpuQuota, HostConfig, HostFacts, Paths, Problem, Slot, HOST_FILE};

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub host: HostConfig,
    /// The valid slots, sorted by name.
    pub slots: Vec<Slot>,
    /// Everything wrong, in file order. A file with a problem is skipped as a whole.
    pub problems: Vec<Problem>,
    /// Slot files that were skipped, by slot name.
    pub skipped: Vec<String>,
    /// Whether the host file had problems (its settings were then replaced by defaults).
    pub host_skipped: bool,
    /// The config dir exists but could not be listed (EACCES, EIO, not a directory):
    /// nothing is known about the slots, which is not the same as "no slots", so the
    /// generator must leave what it generated before.
    pub dir_unreadable: bool,
}

impl Config {
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }
    pub fn slot_by_number(&self, number: u32) -> Option<&Slot> {
        self.slots.iter().find(|s| s.number == Some(number))
    }
}

/// One `*.toml` of the config dir, as text, before parsing.
pub struct SourceFile {
    pub name: String,
    pub path: PathBuf,
    /// `None`: not read yet (slot files are read where they are parsed, on the parsing
    /// threads).
    pub text: Option<Result<String, String>>,
}

impl SourceFile {
    fn text(&self) -> std::borrow::Cow<'_, Result<String, String>> {
        match &self.text {
            Some(t) => std::borrow::Cow::Borrowed(t),
            None => std::borrow::Cow::Owned(read_text(&self.path)),
        }
    }
}

/// What `read_dir` found: the host file (if any) and the slot files, sorted by name.
pub type DirFiles = (Option<SourceFile>, Vec<SourceFile>);

/// Lists the config dir: the host file (read) and every slot file (not read yet), sorted
/// by name.
/// Hidden files and editor leftovers (`.slot00.toml.swp`, `slot00.toml~`) are not slots.
/// A missing dir is an empty config; any other error listing it is returned.
pub fn read_dir(dir: &Path) -> std::io::Result<DirFiles> {
    let mut host = None;
    let mut slots = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, slots)),
        Err(e) => return Err(e),
    };
    for e in entries {
        // An error in the middle of the listing leaves slots unknown, like an unreadable dir.
        let e = e?;
        let fname = e.file_name();
        let Some(fname) = fname.to_str() else {
            continue;
        };
        if fname.starts_with('.') {
            continue;
        }
        let Some(name) = fname.strip_suffix(".toml") else {
            continue;
        };
        let path = e.path();
        let f = SourceFile {
            name: name.to_string(),
            path,
            text: None,
        };
        if fname == HOST_FILE {
            host = Some(f);
        } else {
            slots.push(f);
        }
    }
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(h) = host.as_mut() {
        h.text = Some(read_text(&h.path));
    }
    Ok((host, slots))
}

/// Largest config file read; a slot file is a few hundred bytes.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Reads one config file, which must be a regular file (not a symlink, FIFO or device:
/// the generator runs at boot, and boot waits for it) of at most MAX_FILE_SIZE bytes.
/// O_NONBLOCK makes opening a FIFO return at once, so fstat can refuse it.
fn read_text(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("cannot be read: it is a symbolic link, not a regular file".into())
        }
        Err(e) => return Err(format!("cannot be read: {e}")),
    };
    let meta = f.metadata().map_err(|e| format!("cannot be read: {e}"))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "something else"
        };
        return Err(format!("cannot be read: it is {what}, not a regular file"));
    }
    let too_big =
        || "cannot be read: it is larger than 1 MiB, more than a config file may be".to_string();
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_big());
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if buf.len() as u64 > MAX_FILE_SIZE {
        return Err(too_big());
    }
    String::from_utf8(buf).map_err(|_| "cannot be read: it is not UTF-8 text".to_string())
}

/// The dir's listing, or a config that says it could not be listed.
fn listed(dir: &Path) -> Result<DirFiles, Box<Config>> {
    read_dir(dir).map_err(|e| {
        Box::new(Config {
            problems: vec![Problem::new(
                dir,
                "",
                format!("cannot list the config directory: {e}"),
            )],
            dir_unreadable: true,
            ..Config::default()
        })
    })
}

/// Runs `f` over `items` on as many threads as there are CPUs: with a thousand slots,
/// reading and parsing their files is a third of the generator's work.
fn for_each_parallel<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    if threads == 1 || items.len() < 64 {
        items.iter_mut().for_each(f);
        return;
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for part in items.chunks_mut(chunk) {
            let f = &f;
            scope.spawn(move || part.iter_mut().for_each(f));
        }
    });
}

/// Loads and validates everything. Never fails: problems are collected in the result.
pub fn load_dir(paths: &Paths, facts: &HostFacts) -> Config {
    match listed(&paths.config_dir()) {
        Ok((host_file, slot_files)) => load_files(host_file, slot_files, facts),
        Err(cfg) => *cfg,
    }
}

/// Loads the config as it would be with some files replaced (`Some(text)`), added, or
/// removed (`None`): the helper validates every change this way before writing it.
pub fn load_dir_with(
    paths: &Paths,
    facts: &HostFacts,
    changes: &[(PathBuf, Option<String>)],
) -> Config {
    let (mut host_file, mut slot_files) = match listed(&paths.config_dir()) {
        Ok(files) => files,
        Err(cfg) => return *cfg,
    };
    for (path, text) in changes {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"))
        else {
            continue;
        };
        if format!("{name}.toml") == HOST_FILE {
            host_file = text.as_ref().map(|t| SourceFile {
                name: name.into(),
                path: path.clone(),
                text: Some(Ok(t.clone())),
            });
            continue;
        }
        slot_files.retain(|f| f.name != name);
        if let Some(t) = text {
            slot_files.push(SourceFile {
                name: name.into(),
                path: path.clone(),
                text: Some(Ok(t.clone())),
            });
        }
    }
    slot_files.sort_by(|a, b| a.name.cmp(&b.name));
    load_files(host_file, slot_files, facts)
}

fn load_files(
    host_file: Option<SourceFile>,
    slot_files: Vec<SourceFile>,
    facts: &HostFacts,
) -> Config {
    let mut cfg = Config::default();

    if let Some(hf) = host_file {
        let mut problems = Vec::new();
        let host = match hf.text().as_ref() {
            Ok(text) => match parse_toml(text, &hf.path) {
                Ok(t) => parse_host(&t, &hf.path, &mut problems),
                Err(p) => {
                    problems.push(p);
                    HostConfig::default()
                }
            },
            Err(e) => {
                problems.push(Problem::new(&hf.path, "", e.clone()));
                HostConfig::default()
            }
        };
        check_host_against_facts(&host, &hf.path, facts, &mut problems);
        if problems.is_empty() {
            cfg.host = host;
        } else {
            cfg.host_skipped = true;
            cfg.problems.extend(problems);
        }
    }

    let nslots = slot_files.len().max(1) as u32;
    let mut parsed: Vec<(&SourceFile, Option<Slot>, Vec<Problem>)> =
        slot_files.iter().map(|sf| (sf, None, Vec::new())).collect();
    let defaults = Defaults {
        host: &cfg.host,
        facts,
        nslots,
    };
    for_each_parallel(&mut parsed, |(sf, slot, problems)| {
        match sf.text().as_ref() {
            Ok(text) => match parse_toml(text, &sf.path) {
                Ok(t) => *slot = Some(parse_slot(&sf.name, &t, &sf.path, &defaults, problems)),
                Err(p) => problems.push(p),
            },
            Err(e) => problems.push(Problem::new(&sf.path, "", e.clone())),
        }
    });
    let mut numbers: BTreeMap<u32, String> = BTreeMap::new();
    for (sf, slot, mut problems) in parsed {
        if let Some(slot) = slot {
            check_slot_against_host(&slot, &cfg.host, facts, &mut problems);
            let other = slot.number.and_then(|n| numbers.get(&n));
            if let (Some(other), Some(n)) = (other.filter(|_| problems.is_empty()), slot.number) {
                problems.push(Problem::new(
                    &sf.path,
                    "number",
                    format!("slot number {n} is already used by {other}; every slot needs its own number"),
                ));
            }
            if problems.is_empty() {
                if let Some(n) = slot.number {
                    numbers.insert(n, slot.name.clone());
                }
                cfg.slots.push(slot);
                continue;
            }
        }
        cfg.skipped.push(sf.name.clone());
        cfg.problems.extend(problems);
    }
    check_bridge_addresses(&mut cfg);
    cfg
}

fn check_resources(
    quota: Option<CpuQuota>,
    cpus: Option<&crate::CpuSet>,
    memory: Option<crate::Memory>,
    file: &Path,
    prefix: &str,
    facts: &HostFacts,
    problems: &mut Vec<Problem>,
) {
    let key = |k: &str| crate::table::join_key(prefix, k);
    let max = facts.ncpus() * 100;
    if let Some(CpuQuota::Percent(p)) = quota {
        if p > max {
            problems.push(Problem::new(
                file,
                key("cpu_quota"),
                format!(
                    "{p}% is more than this host's {} CPUs can give; use 1% to {max}%",
                    facts.ncpus()
                ),
            ));
        }
    }
    if let Some(c) = cpus {
        let beyond = c.difference(&facts.cpus);
        if !beyond.is_empty() {
            problems.push(Problem::new(
                file,
                key("cpus"),
                format!(
                    "CPU {beyond} is beyond this host's CPUs ({}); use CPUs from {} or \"all\"",
                    facts.cpus, facts.cpus
                ),
            ));
        }
    }
    if let (Some(m), Some(total)) = (memory, facts.mem_total) {
        if m.0 > total {
            problems.push(Problem::new(
                file,
                key("memory"),
                format!(
                    "{m} is more than this host's memory ({}); use at most that",
                    crate::Memory(total)
                ),
            ));
        }
    }
}

fn check_host_against_facts(
    host: &HostConfig,
    file: &Path,
    facts: &HostFacts,
    problems: &mut Vec<Problem>,
) {
    check_resources(
        Some(host.cpu_quota),
        host.cpus.as_ref(),
        Some(host.memory),
        file,
        "defaults",
        facts,
        problems,
    );
}

fn check_slot_against_host(
    slot: &Slot,
    host: &HostConfig,
    facts: &HostFacts,
    problems: &mut Vec<Problem>,
) {
    check_resources(
        slot.cpu_quota,
        slot.cpus.as_ref(),
        slot.memory,
        &slot.file,
        "",
        facts,
        problems,
    );
    for (i, nic) in slot.nics.iter().enumerate() {
        if !host.bridges.iter().any(|b| b.number == nic.bridge) {
            let known: Vec<String> = host.bridges.iter().map(|b| b.number.to_string()).collect();
            problems.push(Problem::new(
                &slot.file,
                format!("nic[{i}].bridge"),
                format!(
                    "bridge {} is not declared in {HOST_FILE}; declared bridges: {}",
                    nic.bridge,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
}

/// An address may be used once per bridge, by the host or by one slot NIC. A slot that
/// reuses one is skipped (the first holder, in name order, keeps it).
fn check_bridge_addresses(cfg: &mut Config) {
    let mut owners: BTreeMap<(u32, std::net::IpAddr), String> = BTreeMap::new();
    for b in &cfg.host.bridges {
        for a in &b.addresses {
            owners.insert(
                (b.number, a.addr),
                format!("bridge {} of the host", b.number),
            );
        }
    }
    let mut keep = Vec::new();
    for slot in std::mem::take(&mut cfg.slots) {
        let mut problems = Vec::new();
        let mut mine = Vec::new();
        for (i, nic) in slot.nics.iter().enumerate() {
            for a in &nic.addresses {
                match owners.get(&(nic.bridge, a.addr)) {
                    Some(o) => problems.push(Problem::new(
                        &slot.file,
                        format!("nic[{i}].address"),
                        format!("{} is already used on bridge {} by {o}", a.addr, nic.bridge),
                    )),
                    None => mine.push((nic.bridge, a.addr)),
                }
            }
        }
        if problems.is_empty() {
            for k in mine {
                owners.insert(k, slot.name.clone());
            }
            keep.push(slot);
        } else {
            cfg.skipped.push(slot.name.clone());
            cfg.problems.extend(problems);
        }
    }
    cfg.slots = keep;
}
