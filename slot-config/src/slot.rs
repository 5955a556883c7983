//! One slot's file, `/etc/slot-os/<name>.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Table;

use crate::names::{
    check_name, check_slot_name, nic_host_ifname, nic_slot_ifname, number_from_name,
    MAX_BRIDGE_NUMBER, MAX_NIC_NUMBER, MAX_SLOT_NUMBER,
};
use crate::storage::MAX_OVERLAY_NUMBER;
use crate::syntax::{check_path, check_text, PathUse};
use crate::table::Fields;
use crate::{Cidr, CpuQuota, CpuSet, HostConfig, HostFacts, Limits, Memory, Problem, Storage};

/// A slot as configured; `None` means "the host default" so that a changed default
/// reaches every slot that did not set its own value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    /// Fulcon's slot number; `None` for a named slot that has none (it needs one only for
    /// NICs, whose host-side names carry it; parsing guarantees it is set when `nics` is
    /// not empty).
    pub number: Option<u32>,
    pub file: PathBuf,
    /// The machined image the slot boots; `None` = the image named like the slot.
    pub image: Option<String>,
    /// The base image it was built from (shown by `list`), recorded by `build`.
    pub base_image: Option<String>,
    /// How its root is kept, recorded by `build` (or asked for before it): `None` is a
    /// plain image directory (a btrfs subvolume or a directory, as the file system gives).
    pub storage: Option<Storage>,
    pub autostart: bool,
    /// `true`: boot the slot's own init; `false`: run `command` as a single process.
    pub boot: bool,
    pub command: Vec<String>,
    pub cpu_quota: Option<CpuQuota>,
    pub cpus: Option<CpuSet>,
    pub memory: Option<Memory>,
    /// `disk`, `tasks_max` and the IO keys as the file sets them.
    pub limits: Limits,
    pub privileged: bool,
    pub environment: BTreeMap<String, String>,
    pub nics: Vec<Nic>,
    pub binds: Vec<Bind>,
    /// The effective resources after host defaults and "auto" were applied.
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Percent of one CPU.
    pub cpu_quota: u32,
    /// `None` = all CPUs of the host.
    pub cpus: Option<CpuSet>,
    pub memory: Memory,
    /// The file's limits completed by `[defaults]`.
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub number: u32,
    pub bridge: u32,
    pub addresses: Vec<Cidr>,
}

impl Nic {
    pub fn slot_ifname(&self) -> String {
        nic_slot_ifname(self.number)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

impl Slot {
    pub fn image_name(&self) -> &str {
        self.image.as_deref().unwrap_or(&self.name)
    }
    pub fn unit(&self) -> String {
        crate::names::unit_name(&self.name)
    }
    /// Host side of one of this slot's NICs (`vs-<slot number>-<nic number>`).
    pub fn nic_host_ifname(&self, nic: u32) -> String {
        // Parsing refuses NICs on a slot without a number (see `parse_slot`), so every
        // caller that has a NIC of a loaded slot has a number here.
        nic_host_ifname(self.number.unwrap_or(u32::MAX), nic)
    }
    /// How a command line names it: its number, or its name if it has none.
    pub fn arg(&self) -> String {
        self.number
            .map_or_else(|| self.name.clone(), |n| n.to_string())
    }
    pub fn is_overlay(&self) -> bool {
        self.storage == Some(Storage::Overlay)
    }
    /// First host UID of the slot's user namespace when it is fixed by slot-os (an
    /// unprivileged overlay slot: its layers are idmapped before nspawn starts); `None`
    /// leaves it to nspawn (`pick`) or to no user namespace (privileged).
    pub fn uid_base(&self) -> Option<u32> {
        if !self.is_overlay() || self.privileged {
            return None;
        }
        crate::storage::uid_base(self.number?)
    }
    /// The unit that mounts an overlay slot's root.
    pub fn root_unit(&self) -> String {
        crate::names::root_unit_name(&self.name)
    }
    /// "7", or "-" for a slot without a number (for tables and messages).
    pub fn number_text(&self) -> String {
        self.number
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    }
}

pub const SLOT_KEYS: &[&str] = &[
    "number",
    "image",
    "base_image",
    "storage",
    "autostart",
    "boot",
    "command",
    "cpu_quota",
    "cpus",
    "memory",
    "disk",
    "tasks_max",
    "io_weight",
    "io_read_bandwidth_max",
    "io_write_bandwidth_max",
    "privileged",
    "environment",
    "nic",
    "bind",
];
pub const NIC_KEYS: &[&str] = &["number", "bridge", "address"];
pub const BIND_KEYS: &[&str] = &["source", "target", "read_only"];

/// Parses a slot file. What could not be read is left at its default and reported in
/// `problems` (the caller skips a slot with problems, but still checks the rest of it so
/// that every problem is listed at once). `defaults` completes what the file leaves out.
pub fn parse_slot(
    name: &str,
    table: &Table,
    file: &Path,
    defaults: &Defaults<'_>,
    problems: &mut Vec<Problem>,
) -> Slot {
    if let Err(e) = check_slot_name(name) {
        problems.push(Problem::new(
            file,
            "",
            format!("{e} (the file name, without .toml, is the slot name)"),
        ));
    }
    let mut f = Fields::new(table, file, "", SLOT_KEYS, problems);
    let number = match f.get("number") {
        Some(_) => f.integer("number", 0, MAX_SLOT_NUMBER),
        None => match number_from_name(name) {
            Some(n) if n <= MAX_SLOT_NUMBER => Some(n),
            Some(n) => {
                f.problem(
                    "number",
                    format!("{n} (from the name) is out of range; use 0 to {MAX_SLOT_NUMBER}"),
                );
                None
            }
            // A named slot needs no number until it has NICs (checked below).
            None => None,
        },
    };
    let number_given = f.get("number").is_some();
    let image = image_name(&mut f, "image");
    let base_image = image_name(&mut f, "base_image");
    let autostart = f.boolean("autostart").unwrap_or(false);
    let boot = f.boolean("boot").unwrap_or(true);
    let command = f.strings("command");
    // A command refused for its content is not also reported as missing.
    let refused = command.is_none() && f.get("command").is_some();
    let command = command.unwrap_or_default();
    if !boot && command.is_empty() && !refused {
        f.problem("command", "missing; a slot with `boot = false` runs `command` (e.g. [\"/bin/sh\", \"-c\", \"...\"]) as its only process");
    }
    if boot && !command.is_empty() {
        f.problem(
            "command",
            "only used with `boot = false`; a booted slot runs its own init",
        );
    }
    let cpu_quota = f.parsed_or_int("cpu_quota");
    let cpus = match f.string("cpus") {
        Some(s) if s.trim() == "all" => None,
        Some(s) => match s.parse::<CpuSet>() {
            Ok(c) => Some(c),
            Err(e) => {
                f.problem("cpus", e);
                None
            }
        },
        None => None,
    };
    let cpus_all_or_unset = cpus.is_none();
    let memory = f.parsed("memory");
    let limits = Limits::parse(&mut f);
    let privileged = f.boolean("privileged").unwrap_or(false);
    let storage = f.parsed::<Storage>("storage");
    if storage == Some(Storage::Overlay) && !privileged {
        match number {
            Some(n) if n > MAX_OVERLAY_NUMBER => f.problem(
                "storage",
                format!(
                    "an overlay slot's user namespace range is derived from its number, and slot {n} has none left; overlay slots use numbers 0 to {MAX_OVERLAY_NUMBER} (or set privileged = true, which needs no range)"
                ),
            ),
            None if !number_given => f.problem(
                "storage",
                format!(
                    "an overlay slot needs `number = N` (0 to {MAX_OVERLAY_NUMBER}): its user namespace range is derived from it"
                ),
            ),
            _ => {}
        }
    }

    let mut environment = BTreeMap::new();
    if let Some(t) = f.table("environment") {
        for (k, v) in t {
            let key = format!("environment.{k}");
            if k.is_empty()
                || k.starts_with(|c: char| c.is_ascii_digit())
                || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                f.problems.push(Problem::new(
                    file,
                    key,
                    "not a variable name; use letters, digits and '_', not starting with a digit",
                ));
                continue;
            }
            match v {
                toml::Value::String(s) => match check_text(s) {
                    Ok(()) => {
                        environment.insert(k.clone(), s.clone());
                    }
                    Err(e) => f.problems.push(Problem::new(file, key, e)),
                },
                _ => f
                    .problems
                    .push(Problem::new(file, key, "expected a string")),
            }
        }
    }

    let nic_tables = f.tables("nic");
    let bind_tables = f.tables("bind");
    drop(f);

    let mut nics: Vec<Nic> = Vec::new();
    for (i, t) in nic_tables.into_iter().enumerate() {
        let mut n = Fields::new(t, file, format!("nic[{i}]"), NIC_KEYS, problems);
        let number = required(&mut n, "number", 1, MAX_NIC_NUMBER);
        let bridge = required(&mut n, "bridge", 0, MAX_BRIDGE_NUMBER);
        let mut addresses = Vec::new();
        for a in n.strings("address").unwrap_or_default() {
            match a.parse::<Cidr>() {
                Ok(c) if addresses.contains(&c) => {
                    n.problem("address", format!("{c} is listed twice"))
                }
                Ok(c) => addresses.push(c),
                Err(e) => n.problem("address", e),
            }
        }
        if let (Some(number), Some(bridge)) = (number, bridge) {
            if nics.iter().any(|x| x.number == number) {
                n.problem(
                    "number",
                    format!("NIC {number} is declared twice in this slot"),
                );
            } else {
                nics.push(Nic {
                    number,
                    bridge,
                    addresses,
                });
            }
        }
    }
    nics.sort_by_key(|n| n.number);
    if number.is_none() && !number_given && !nics.is_empty() {
        problems.push(Problem::new(
            file,
            "number",
            format!(
                "missing; a slot with [[nic]] entries needs `number = N` (0 to {MAX_SLOT_NUMBER}), \
                 which names its host interfaces (vs-N-M): add it to the file, or remove the \
                 [[nic]] entries and let `slot-os net-add` pick a free number"
            ),
        ));
    }

    let mut binds: Vec<Bind> = Vec::new();
    for (i, t) in bind_tables.into_iter().enumerate() {
        let mut b = Fields::new(t, file, format!("bind[{i}]"), BIND_KEYS, problems);
        let source = bind_path(&mut b, "source");
        let target = bind_path(&mut b, "target");
        let read_only = b.boolean("read_only").unwrap_or(false);
        if let (Some(source), Some(target)) = (source, target) {
            if binds.iter().any(|x| x.target == target) {
                b.problem(
                    "target",
                    format!("{} is already the target of another bind", target.display()),
                );
            } else {
                binds.push(Bind {
                    source,
                    target,
                    read_only,
                });
            }
        }
    }

    let cpus = if cpus_all_or_unset { None } else { cpus };
    let resources = defaults.resources(cpu_quota, cpus.as_ref(), memory, limits);
    Slot {
        name: name.to_string(),
        number,
        file: file.to_path_buf(),
        image,
        base_image,
        storage,
        autostart,
        boot,
        command,
        cpu_quota,
        cpus,
        memory,
        limits,
        privileged,
        environment,
        nics,
        binds,
        resources,
    }
}

fn required(f: &mut Fields<'_, '_>, k: &str, lo: u32, hi: u32) -> Option<u32> {
    if f.get(k).is_none() {
        f.problem(k, format!("missing; use a number from {lo} to {hi}"));
        return None;
    }
    f.integer(k, lo, hi)
}

fn image_name(f: &mut Fields<'_, '_>, k: &str) -> Option<String> {
    let s = f.string(k)?;
    match check_name("image", &s) {
        Ok(()) => Some(s),
        Err(e) => {
            f.problem(k, e.to_string());
            None
        }
    }
}

fn bind_path(f: &mut Fields<'_, '_>, k: &str) -> Option<PathBuf> {
    let Some(s) = f.string(k) else {
        if f.get(k).is_none() {
            f.problem(k, "missing; use an absolute path");
        }
        return None;
    };
    match check_path(&s, PathUse::Bind) {
        Ok(()) if s == "/" && k == "target" => {
            f.problem(k, "cannot bind over the slot's root directory");
            None
        }
        Ok(()) => Some(PathBuf::from(s)),
        Err(e) => {
            f.problem(k, e);
            None
        }
    }
}

/// Fulcon's "auto" CPU%: all CPUs shared evenly, ncpu*100/number of slots.
pub fn auto_cpu_quota(facts: &HostFacts, nslots: u32) -> u32 {
    (facts.ncpus() * 100 / nslots.max(1)).max(1)
}

/// What a slot gets where its file says nothing: the host's defaults, "auto" resolved
/// against this host and the number of slots.
pub struct Defaults<'a> {
    pub host: &'a HostConfig,
    pub facts: &'a HostFacts,
    pub nslots: u32,
}

impl Defaults<'_> {
    /// The effective resources of a slot whose file asks for these.
    pub fn resources(
        &self,
        cpu_quota: Option<CpuQuota>,
        cpus: Option<&CpuSet>,
        memory: Option<Memory>,
        limits: Limits,
    ) -> Resources {
        let quota = match cpu_quota.unwrap_or(self.host.cpu_quota) {
            CpuQuota::Auto => auto_cpu_quota(self.facts, self.nslots),
            CpuQuota::Percent(p) => p,
        };
        Resources {
            cpu_quota: quota,
            cpus: cpus.cloned().or_else(|| self.host.cpus.clone()),
            memory: memory.unwrap_or(self.host.memory),
            limits: limits.or(self.host.limits),
        }
    }
}
