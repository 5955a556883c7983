//! The host-wide file, `/etc/slot-os/slot-os.toml`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use toml::Table;

use crate::names::{bridge_ifname, check_name, vxlan_ifname, MAX_BRIDGE_NUMBER};
use crate::table::Fields;
use crate::{Cidr, CpuQuota, CpuSet, Limits, Memory, Problem};

/// Fulcon's defaults: CPU% = ncpu*100/slots, all CPUs, 512M.
pub const DEFAULT_MEMORY: Memory = Memory(512 << 20);
pub const DEFAULT_IMAGE: &str = "slot-os";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The base image `build` clones (a machined image name).
    pub image: String,
    pub cpu_quota: CpuQuota,
    /// `None` = all of the host's CPUs.
    pub cpus: Option<CpuSet>,
    pub memory: Memory,
    /// `disk`, `tasks_max` and the IO keys of `[defaults]`.
    pub limits: Limits,
    /// Where slot images live (machined's image directory).
    pub machines_dir: PathBuf,
    /// Where backups are kept.
    pub backup_dir: PathBuf,
    /// What `build` makes new slots' roots with; `None` = auto (btrfs snapshots where the
    /// machines dir is btrfs, else overlay where the kernel can, else a copy).
    pub backend: Option<crate::Storage>,
    pub bridges: Vec<Bridge>,
    pub network: DefaultNetwork,
    pub backup: BackupConfig,
}

/// `[backup]`: how `slot-os backup` stores what it captured, and where else it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupConfig {
    pub engine: BackupEngine,
    /// The local restic repository's password (made on first use, root only).
    pub password_file: PathBuf,
    /// A second restic repository, off the host (`sftp:`, `s3:`, `rest:` or a path).
    pub offsite: Option<String>,
    pub offsite_password_file: Option<PathBuf>,
    /// `KEY=VALUE` lines handed to restic for the off-site repository (S3 keys).
    pub offsite_env_file: Option<PathBuf>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            engine: BackupEngine::Restic,
            password_file: "/var/lib/slot-os/backup.key".into(),
            offsite: None,
            offsite_password_file: None,
            offsite_env_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupEngine {
    /// One deduplicated restic repository per host (the backup dir's `restic/`).
    Restic,
    /// Each backup a NAME.tar.zst of its own (NAME.snap on btrfs): slot-os before 0.2.
    Tar,
}

impl std::str::FromStr for BackupEngine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "restic" => Ok(BackupEngine::Restic),
            "tar" => Ok(BackupEngine::Tar),
            _ => Err(format!(
                "{s:?} is not a backup engine; use \"restic\" or \"tar\""
            )),
        }
    }
}

/// The NIC every slot gets besides its [[nic]] entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultNetwork {
    /// nspawn network zone `vz-slots` with the host's address on it, networkd's DHCP
    /// server and IP masquerading: Fulcon's NAT'ed 172.17.0.0/16.
    Nat { address: Cidr },
    /// nspawn's host-only veth (`ve-NAME`), configured by systemd's stock files.
    Veth,
    /// No NIC but loopback (and the slot's [[nic]]s).
    None,
}

pub const NAT_ZONE: &str = "slots";
pub const DEFAULT_NAT_ADDRESS: &str = "172.17.0.1/16";

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            image: DEFAULT_IMAGE.into(),
            cpu_quota: CpuQuota::Auto,
            cpus: None,
            memory: DEFAULT_MEMORY,
            limits: Limits::default(),
            machines_dir: "/var/lib/machines".into(),
            backup_dir: "/var/lib/slot-os/backups".into(),
            backend: None,
            bridges: Vec::new(),
            network: DefaultNetwork::Nat {
                address: DEFAULT_NAT_ADDRESS.parse().expect("valid default"),
            },
            backup: BackupConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub number: u32,
    pub addresses: Vec<Cidr>,
    /// A host NIC enslaved to the bridge (Fulcon's `br-add N DEVICE`).
    pub devices: Vec<String>,
    /// A VXLAN port, so slots on several hosts share this bridge's L2 network.
    pub vxlan: Option<Vxlan>,
    pub backend: BridgeBackend,
}

/// Who makes the bridge and its ports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BridgeBackend {
    /// A Linux bridge from a generated `.netdev`; ports join it by networkd's `Bridge=`.
    #[default]
    Networkd,
    /// An Open vSwitch bridge the helper keeps in OVSDB; networkd only puts the host's
    /// addresses on its internal interface (docs/ovs.md).
    Ovs,
}

impl BridgeBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            BridgeBackend::Networkd => "networkd",
            BridgeBackend::Ovs => "ovs",
        }
    }
}

impl std::str::FromStr for BridgeBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "networkd" => Ok(BridgeBackend::Networkd),
            "ovs" => Ok(BridgeBackend::Ovs),
            _ => Err(format!(
                "{s:?} is not a bridge backend; use \"networkd\" or \"ovs\""
            )),
        }
    }
}

/// `vxlan_*` keys of a `[[bridge]]`: rendered as an independent networkd VXLAN netdev
/// (`slotvxN`) enslaved to the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub id: u32,
    pub peer: VxlanPeer,
    /// Source address of the encapsulated packets; the kernel picks one when unset.
    pub local: Option<IpAddr>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VxlanPeer {
    /// Point to point: one other host.
    Remote(IpAddr),
    /// Any number of hosts joined to a multicast group.
    Group(IpAddr),
}

pub const MAX_VXLAN_ID: u32 = (1 << 24) - 1;
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

impl Bridge {
    pub fn ifname(&self) -> String {
        bridge_ifname(self.number)
    }
    pub fn vxlan_ifname(&self) -> String {
        vxlan_ifname(self.number)
    }
}

impl HostConfig {
    pub fn bridge(&self, number: u32) -> Option<&Bridge> {
        self.bridges.iter().find(|b| b.number == number)
    }
    /// Whether bridge `number` is an Open vSwitch bridge.
    pub fn is_ovs(&self, number: u32) -> bool {
        self.bridge(number).map(|b| b.backend) == Some(BridgeBackend::Ovs)
    }
}

pub const TOP_KEYS: &[&str] = &["defaults", "storage", "network", "bridge", "backup"];
pub const BACKUP_KEYS: &[&str] = &[
    "engine",
    "password_file",
    "offsite",
    "offsite_password_file",
    "offsite_env_file",
];
pub const NETWORK_KEYS: &[&str] = &["default", "nat_address"];
pub const DEFAULT_KEYS: &[&str] = &[
    "image",
    "cpu_quota",
    "cpus",
    "memory",
    "disk",
    "tasks_max",
    "io_weight",
    "io_read_bandwidth_max",
    "io_write_bandwidth_max",
];
pub const STORAGE_KEYS: &[&str] = &["machines", "backups", "backend"];
pub const BRIDGE_KEYS: &[&str] = &[
    "number",
    "address",
    "device",
    "vxlan_id",
    "vxlan_remote",
    "vxlan_group",
    "vxlan_local",
    "vxlan_port",
    "backend",
];

/// Parses the host file; `problems` receives everything wrong, and the result holds what
/// could be read (defaults for the rest).
pub fn parse_host(table: &Table, file: &Path, problems: &mut Vec<Problem>) -> HostConfig {
    let mut host = HostConfig::default();
    let mut f = Fields::new(table, file, "", TOP_KEYS, problems);
    let defaults = f.table("defaults");
    let storage = f.table("storage");
    let network = f.table("network");
    let bridges = f.tables("bridge");
    let backup = f.table("backup");
    drop(f);
    if let Some(t) = backup {
        host.backup = parse_backup(t, file, problems);
    }

    if let Some(t) = defaults {
        let mut d = Fields::new(t, file, "defaults", DEFAULT_KEYS, problems);
        if let Some(img) = d.string("image") {
            match check_name("image", &img) {
                Ok(()) => host.image = img,
                Err(e) => d.problem("image", e.to_string()),
            }
        }
        if let Some(q) = d.parsed_or_int("cpu_quota") {
            host.cpu_quota = q;
        }
        if let Some(s) = d.string("cpus") {
            if s.trim() != "all" {
                match s.parse::<CpuSet>() {
                    Ok(c) => host.cpus = Some(c),
                    Err(e) => d.problem("cpus", e),
                }
            }
        }
        if let Some(m) = d.parsed("memory") {
            host.memory = m;
        }
        host.limits = Limits::parse(&mut d);
    }
    if let Some(t) = storage {
        let mut s = Fields::new(t, file, "storage", STORAGE_KEYS, problems);
        if let Some(p) = absolute_path(&mut s, "machines") {
            host.machines_dir = p;
        }
        if let Some(p) = absolute_path(&mut s, "backups") {
            host.backup_dir = p;
        }
        if let Some(b) = s.string("backend") {
            match crate::storage::parse_backend(&b) {
                Ok(b) => host.backend = b,
                Err(e) => s.problem("backend", e),
            }
        }
    }
    if let Some(t) = network {
        let mut n = Fields::new(t, file, "network", NETWORK_KEYS, problems);
        let address = n.parsed::<Cidr>("nat_address");
        match n.string("default").as_deref() {
            None | Some("nat") => {
                if let Some(address) = address {
                    host.network = DefaultNetwork::Nat { address };
                }
            }
            Some("veth") => host.network = DefaultNetwork::Veth,
            Some("none") => host.network = DefaultNetwork::None,
            Some(other) => n.problem(
                "default",
                format!("{other:?} is not a default network; use \"nat\", \"veth\" or \"none\""),
            ),
        }
    }
    for (i, t) in bridges.into_iter().enumerate() {
        let prefix = format!("bridge[{i}]");
        let mut b = Fields::new(t, file, prefix, BRIDGE_KEYS, problems);
        let number = match b.get("number") {
            None => {
                b.problem(
                    "number",
                    format!(
                        "missing; every [[bridge]] needs a number from 0 to {MAX_BRIDGE_NUMBER}"
                    ),
                );
                None
            }
            Some(_) => b.integer("number", 0, MAX_BRIDGE_NUMBER),
        };
        let mut addresses = Vec::new();
        for a in b.strings("address").unwrap_or_default() {
            match a.parse::<Cidr>() {
                Ok(c) => addresses.push(c),
                Err(e) => b.problem("address", e),
            }
        }
        let mut devices = Vec::new();
        for d in b.strings("device").unwrap_or_default() {
            match check_ifname(&d) {
                Ok(()) => devices.push(d),
                Err(e) => b.problem("device", e),
            }
        }
        let vxlan = parse_vxlan(&mut b);
        let backend = b.parsed::<BridgeBackend>("backend").unwrap_or_default();
        if backend == BridgeBackend::Ovs && !devices.is_empty() {
            b.problem(
                "device",
                "a host device on an Open vSwitch bridge is not supported; share it on a bridge with backend = \"networkd\"",
            );
        }
        if backend == BridgeBackend::Ovs && vxlan.is_some() {
            b.problem(
                "vxlan_id",
                "a VXLAN on an Open vSwitch bridge is not supported; use it on a bridge with backend = \"networkd\"",
            );
        }
        if let Some(number) = number {
            if host.bridges.iter().any(|x| x.number == number) {
                b.problem("number", format!("bridge {number} is declared twice"));
            } else {
                host.bridges.push(Bridge {
                    number,
                    addresses,
                    devices,
                    vxlan,
                    backend,
                });
            }
        }
    }
    host.bridges.sort_by_key(|b| b.number);
    host
}

fn parse_backup(t: &Table, file: &Path, problems: &mut Vec<Problem>) -> BackupConfig {
    let mut b = Fields::new(t, file, "backup", BACKUP_KEYS, problems);
    let mut out = BackupConfig::default();
    if let Some(e) = b.parsed::<BackupEngine>("engine") {
        out.engine = e;
    }
    if let Some(p) = absolute_path(&mut b, "password_file") {
        out.password_file = p;
    }
    if let Some(s) = b.string("offsite") {
        match check_repository(&s) {
            Ok(()) => out.offsite = Some(s),
            Err(e) => b.problem("offsite", e),
        }
    }
    out.offsite_password_file = absolute_path(&mut b, "offsite_password_file");
    out.offsite_env_file = absolute_path(&mut b, "offsite_env_file");
    if out.offsite.is_some() && out.offsite_password_file.is_none() {
        b.problem(
            "offsite_password_file",
            "missing; an off-site repository needs the path of its password file (root only), never the password itself",
        );
    }
    if b.get("offsite").is_none()
        && (b.get("offsite_password_file").is_some() || b.get("offsite_env_file").is_some())
    {
        b.problem(
            "offsite",
            "missing; offsite_password_file and offsite_env_file belong to an offsite repository",
        );
    }
    out
}

/// A restic repository location handed to restic as one argument: `sftp:`, `s3:`,
/// `rest:` or an absolute path, no whitespace, and no password in it (a `rest:` URL
/// with `user:password@` would put the secret into the config and into `ps`).
pub fn check_repository(s: &str) -> Result<(), String> {
    crate::syntax::check_text(s)?;
    if let Some(c) = s.chars().find(|c| c.is_whitespace()) {
        return Err(format!(
            "{s:?} contains {c:?}; a repository location has no whitespace"
        ));
    }
    let rest = ["sftp:", "s3:", "rest:", "b2:", "azure:", "gs:", "swift:"]
        .iter()
        .find_map(|p| s.strip_prefix(p));
    let userinfo = s
        .split_once("://")
        .and_then(|(_, a)| a.split('/').next())
        .and_then(|auth| auth.rsplit_once('@'))
        .map(|(user, _)| user);
    if userinfo.is_some_and(|u| u.contains(':')) {
        return Err(format!(
            "{s:?} holds a password; put credentials in offsite_env_file or the password file, not in the location"
        ));
    }
    match rest {
        Some("") => Err(format!("{s:?} names no location after the scheme")),
        Some(_) => Ok(()),
        None if s.starts_with('/') => Ok(()),
        None => Err(format!(
            "{s:?} is not a restic repository location; use sftp:USER@HOST:/PATH, s3:HOST/BUCKET, rest:URL or an absolute path"
        )),
    }
}

fn ip(f: &mut Fields<'_, '_>, k: &str) -> Option<IpAddr> {
    let s = f.string(k)?;
    match s.parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            f.problem(k, format!("{s:?} is not an IPv4 or IPv6 address"));
            None
        }
    }
}

fn parse_vxlan(b: &mut Fields<'_, '_>) -> Option<Vxlan> {
    let id = b
        .get("vxlan_id")
        .and(b.integer("vxlan_id", 1, MAX_VXLAN_ID));
    let remote = ip(b, "vxlan_remote");
    let group = ip(b, "vxlan_group");
    let local = ip(b, "vxlan_local");
    let port = b
        .get("vxlan_port")
        .and(b.integer("vxlan_port", 1, 65535))
        .map_or(DEFAULT_VXLAN_PORT, |p| p as u16);
    let any = ["vxlan_remote", "vxlan_group", "vxlan_local", "vxlan_port"]
        .iter()
        .any(|k| b.get(k).is_some());
    if b.get("vxlan_id").is_none() {
        if any {
            b.problem(
                "vxlan_id",
                "missing; the vxlan_* keys need a vxlan_id (1 to 16777215)",
            );
        }
        return None;
    }
    let peer = match (remote, group) {
        (Some(_), Some(_)) => {
            b.problem(
                "vxlan_group",
                "give vxlan_remote (one peer) or vxlan_group (multicast), not both",
            );
            return None;
        }
        (Some(r), None) if r.is_multicast() || r.is_unspecified() => {
            b.problem(
                "vxlan_remote",
                format!("{r} is not a unicast address; for multicast use vxlan_group"),
            );
            return None;
        }
        (Some(r), None) => VxlanPeer::Remote(r),
        (None, Some(g)) if !g.is_multicast() => {
            b.problem(
                "vxlan_group",
                format!("{g} is not a multicast address (224.0.0.0/4 or ff00::/8)"),
            );
            return None;
        }
        (None, Some(g)) => VxlanPeer::Group(g),
        (None, None) => {
            if b.get("vxlan_remote").is_none() && b.get("vxlan_group").is_none() {
                b.problem(
                    "vxlan_id",
                    "a VXLAN needs vxlan_remote (one peer host) or vxlan_group (a multicast group)",
                );
            }
            return None;
        }
    };
    Some(Vxlan {
        id: id?,
        peer,
        local,
        port,
    })
}

fn absolute_path(f: &mut Fields<'_, '_>, k: &str) -> Option<PathBuf> {
    let s = f.string(k)?;
    match crate::syntax::check_path(&s, crate::syntax::PathUse::Exec) {
        Ok(()) => Some(PathBuf::from(s)),
        Err(e) => {
            f.problem(k, e);
            None
        }
    }
}

/// An absolute, normalised path that a `.nspawn` `Bind=` can carry (syntax::check_path).
pub fn check_abs_path(s: &str) -> Result<(), String> {
    crate::syntax::check_path(s, crate::syntax::PathUse::Bind)
}

/// A host interface name, taken literally by networkd (syntax::check_ifname).
pub fn check_ifname(s: &str) -> Result<(), String> {
    crate::syntax::check_ifname(s)
}
