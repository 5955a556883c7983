//! Documentation of every configuration key: what slot-os.toml(5) is generated from.
//!
//! A unit test below ties this table to the key lists the parser accepts
//! (`host::*_KEYS`, `slot::*_KEYS`): a key added to the parser without a row here (or a
//! row left behind for a removed key) fails `cargo test`, so the manual cannot drift.

use crate::host::{BACKUP_KEYS, BRIDGE_KEYS, DEFAULT_KEYS, NETWORK_KEYS, STORAGE_KEYS, TOP_KEYS};
use crate::slot::{BIND_KEYS, NIC_KEYS, SLOT_KEYS};

/// Which file a key lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    /// `/etc/slot-os/slot-os.toml`
    Host,
    /// `/etc/slot-os/NAME.toml`
    Slot,
}

#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    pub file: File,
    /// The table the key sits in (`""` = top level of the file). `[[bridge]]`, `[[nic]]`
    /// and `[[bind]]` entries are arrays of tables.
    pub section: &'static str,
    pub key: &'static str,
    /// TOML type and the values allowed.
    pub ty: &'static str,
    /// What applies when the key is absent.
    pub default: &'static str,
    /// The generated setting (or the helper behaviour) the key turns into.
    pub maps_to: &'static str,
    pub description: &'static str,
}

const fn row(
    file: File,
    section: &'static str,
    key: &'static str,
    ty: &'static str,
    default: &'static str,
    maps_to: &'static str,
    description: &'static str,
) -> KeyDoc {
    KeyDoc {
        file,
        section,
        key,
        ty,
        default,
        maps_to,
        description,
    }
}

use File::{Host, Slot};

/// Every key of both kinds of file, in the order the manual shows them.
#[rustfmt::skip]
pub const KEYS: &[KeyDoc] = &[
    // ---- /etc/slot-os/slot-os.toml
    row(Host, "", "defaults", "table", "all defaults below", "-",
        "Resources and base image for every slot that does not set its own."),
    row(Host, "", "storage", "table", "the paths below", "-",
        "Where images and backups live."),
    row(Host, "", "network", "table", "NAT network", "-",
        "The NIC every slot gets besides its [[nic]] entries."),
    row(Host, "", "bridge", "array of tables", "no bridges", "-",
        "Bridges slots can join (Fulcon's br-add), one [[bridge]] per bridge."),
    row(Host, "", "backup", "table", "restic, local repository only", "-",
        "How backups are stored: one deduplicated restic repository per host, and optionally one off the host."),
    row(Host, "defaults", "image", "string (image name)", "\"slot-os\"",
        "the machined image `slot-os build` clones (CloneImage); recorded as base_image in each slot",
        "Base image of new slots; `slot-os make-base-image` creates it."),
    row(Host, "defaults", "cpu_quota", "string \"auto\" or \"N%\", or integer N", "\"auto\"",
        "CPUQuota= in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "Fulcon's CPU%: percent of one CPU (100% = one whole CPU). \"auto\" = number of CPUs * 100 / number of slots."),
    row(Host, "defaults", "cpus", "string \"all\" or a CPU set like \"0-1,3\"", "\"all\"",
        "AllowedCPUs= in systemd-nspawn@NAME.service.d/50-slot-os.conf (not written for \"all\")",
        "CPUs the slots may run on."),
    row(Host, "defaults", "memory", "string, a size with K, M, G or T (powers of 1024)", "\"512M\"",
        "MemoryMax= in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "Memory limit per slot."),
    row(Host, "defaults", "disk", "string \"none\" or a size with K, M, G or T (powers of 1024), at least 1M", "\"none\"",
        "a project quota (ext4, xfs) or btrfs qgroup on each slot's directory, kept by the helper (`slot-os disk-apply`, ExecStartPre= in the unit drop-in)",
        "Disk limit per slot: what the slot's own directory may hold. The file system must enforce it: ext4 or xfs with project quotas (the prjquota mount option), or btrfs (a qgroup per slot subvolume, referenced bytes)."),
    row(Host, "defaults", "tasks_max", "integer 1 to 4194304, or string \"none\"", "unset: the stock unit's TasksMax=16384",
        "TasksMax= in systemd-nspawn@NAME.service.d/50-slot-os.conf (\"none\": TasksMax=infinity)",
        "Processes and threads per slot."),
    row(Host, "defaults", "io_weight", "integer 1 to 10000", "unset: systemd's 100",
        "IOWeight= in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "Share of block IO per slot, relative to other units."),
    row(Host, "defaults", "io_read_bandwidth_max", "string \"none\" or bytes per second with K, M, G or T (powers of 1024), at least 1M", "\"none\"",
        "IOReadBandwidthMax=MACHINES BYTES in systemd-nspawn@NAME.service.d/50-slot-os.conf (the device of the machines directory)",
        "Read bandwidth limit per slot."),
    row(Host, "defaults", "io_write_bandwidth_max", "string \"none\" or bytes per second with K, M, G or T (powers of 1024), at least 1M", "\"none\"",
        "IOWriteBandwidthMax=MACHINES BYTES in systemd-nspawn@NAME.service.d/50-slot-os.conf (the device of the machines directory)",
        "Write bandwidth limit per slot."),
    row(Host, "storage", "machines", "string (absolute normalised path; no whitespace, quotes, backslash, $, % or :)", "\"/var/lib/machines\"",
        "--directory= of the slot's ExecStart= when its image is not named like the slot",
        "machined's image directory, where slot images live."),
    row(Host, "storage", "backups", "string (absolute normalised path; no whitespace, quotes, backslash, $, % or :)", "\"/var/lib/slot-os/backups\"",
        "where `slot-os backup` writes NAME.tar.zst or NAME.snap and NAME.json",
        "Backup directory."),
    row(Host, "storage", "backend", "string \"auto\", \"btrfs\", \"overlay\" or \"copy\"", "\"auto\"",
        "how `slot-os build` makes a new slot's root; the choice is written into the slot's file as `storage`",
        "auto: a btrfs snapshot where the machines directory is btrfs, else an overlay where the kernel can idmap overlay layers (Linux 5.19), else a copy (machined CloneImage: reflinks on xfs). overlay: a read-only version of the base image below the slot's own upper directory (MACHINES/.slot-os/), mounted by slot-os-root@NAME.service before the slot starts; slots move to a new version of the base only by `slot-os rebase` or a rebuild."),
    row(Host, "backup", "engine", "string \"restic\" or \"tar\"", "\"restic\"",
        "restic: `restic backup` into BACKUPS/restic (one repository for every slot: only what is not stored yet is added); tar: BACKUPS/NAME.tar.zst (NAME.snap on btrfs), one whole file per backup",
        "Backup engine of `slot-os backup`. Both capture a running slot the same way (frozen only for what changed). Backups of either kind stay listed and restorable."),
    row(Host, "backup", "password_file", "string (absolute normalised path; no whitespace, quotes, backslash, $, % or :)", "\"/var/lib/slot-os/backup.key\"",
        "RESTIC_PASSWORD_FILE of every restic command on the local repository",
        "The local repository's password, made (random, mode 0600) on the first backup. Without it the repository cannot be read: keep a copy off the host."),
    row(Host, "backup", "offsite", "string: sftp:USER@HOST:/PATH, s3:HOST/BUCKET, rest:URL or an absolute path (no whitespace, no password)", "unset: no off-site repository",
        "RESTIC_REPOSITORY of `slot-os backup|backup-list|backup-del|backup-restore --offsite`",
        "A second restic repository, off the host (SFTP uses root's ssh configuration and keys)."),
    row(Host, "backup", "offsite_password_file", "string (absolute normalised path, as above)", "none: required with offsite",
        "RESTIC_PASSWORD_FILE for the off-site repository",
        "Its password, in a root-only file (never in the TOML). Restoring on another host needs this file and the location."),
    row(Host, "backup", "offsite_env_file", "string (absolute normalised path, as above)", "unset",
        "KEY=VALUE lines added to restic's environment for the off-site repository",
        "Credentials of an S3-compatible or other cloud repository (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...), root only."),
    row(Host, "network", "default", "string \"nat\", \"veth\" or \"none\"", "\"nat\"",
        "[Network] Zone=slots (nat), VirtualEthernet=yes (veth) or Private=yes and VirtualEthernet=no (none) in NAME.nspawn",
        "nat: the nspawn zone vz-slots with networkd's DHCP server and IP masquerading; veth: nspawn's host-only veth; none: loopback only."),
    row(Host, "network", "nat_address", "string (address/prefix)", "\"172.17.0.1/16\"",
        "Address= in /run/systemd/network/50-slot-os-zone.network",
        "The host's address on the NAT zone; slots get DHCP addresses from its subnet."),
    row(Host, "bridge", "number", "integer 0 to 9999", "none: required",
        "the bridge slotbrN: /run/systemd/network/50-slot-os-slotbrN.netdev",
        "Bridge number; NICs name it in their `bridge` key."),
    row(Host, "bridge", "address", "string or array of strings (address/prefix)", "no address",
        "Address= in /run/systemd/network/50-slot-os-slotbrN.network",
        "The host's addresses on the bridge."),
    row(Host, "bridge", "device", "string or array of strings (interface names: letters, digits, -, _ and .; no patterns)", "no device",
        "Bridge=slotbrN in /run/systemd/network/50-slot-os-slotbrN-DEV.network",
        "Host NICs enslaved to the bridge, so outside hosts reach the slots (net-nic-add)."),
    row(Host, "bridge", "backend", "string \"networkd\" or \"ovs\"", "\"networkd\"",
        "networkd: 50-slot-os-slotbrN.netdev and Bridge= in the NICs' .network files; ovs: an Open vSwitch bridge slotbrN put into OVSDB by slot-os-ovs.service (which the generator enables), slots' NICs added as its ports, only Address= left to 50-slot-os-slotbrN.network",
        "Who makes the bridge: systemd-networkd, or Open vSwitch (needs openvswitch-switch; no device or vxlan_* keys on such a bridge). See docs/ovs.md."),
    row(Host, "bridge", "vxlan_id", "integer 1 to 16777215", "unset: no VXLAN",
        "VNI= in /run/systemd/network/50-slot-os-slotvxN.netdev (Kind=vxlan), enslaved to slotbrN by 50-slot-os-slotvxN.network",
        "VXLAN network identifier: the bridge gets a VXLAN port slotvxN, so slots on several hosts share one L2 network (br-add --vxlan). Needs vxlan_remote or vxlan_group."),
    row(Host, "bridge", "vxlan_remote", "string (unicast IP address)", "unset",
        "Remote= in [VXLAN] of 50-slot-os-slotvxN.netdev",
        "The one peer host (point to point). Not together with vxlan_group."),
    row(Host, "bridge", "vxlan_group", "string (multicast IP address)", "unset",
        "Group= in [VXLAN] of 50-slot-os-slotvxN.netdev",
        "A multicast group joined by any number of hosts. Not together with vxlan_remote."),
    row(Host, "bridge", "vxlan_local", "string (IP address)", "unset: the kernel picks the source address",
        "Local= in [VXLAN] of 50-slot-os-slotvxN.netdev",
        "Source address of the encapsulated packets."),
    row(Host, "bridge", "vxlan_port", "integer 1 to 65535", "4789",
        "DestinationPort= in [VXLAN] of 50-slot-os-slotvxN.netdev",
        "UDP port of the VXLAN traffic."),
    // ---- /etc/slot-os/NAME.toml
    row(Slot, "", "number", "integer 0 to 9999", "NN of a file named slotNN; none for other names",
        "Description= in the unit drop-in; host-side NIC names vs-NUMBER-N",
        "Fulcon's slot number. A slot without one runs with everything but [[nic]] entries; `net-add` gives it the lowest free number and writes it here."),
    row(Slot, "", "image", "string (image name)", "the slot's name",
        "ExecStart=... --directory=MACHINES/IMAGE in the unit drop-in when it differs from the slot's name",
        "The machined image the slot boots."),
    row(Slot, "", "base_image", "string (image name)", "unset",
        "shown by `slot-os list`; written by `slot-os build`",
        "The base image the slot was cloned from."),
    row(Slot, "", "storage", "string \"btrfs\", \"overlay\" or \"copy\"", "unset: a plain image directory; `build` writes what it chose from [storage] backend",
        "overlay: PrivateUsers=BASE:65536 in [Exec] and PrivateUsersOwnership=off in [Files] of NAME.nspawn (BASE = 0x70000000 + number * 65536; privileged slots: PrivateUsers=no), Requires=/After=slot-os-root@NAME.service in the unit drop-in; btrfs, copy: nothing (the image directory is the root)",
        "How the slot's root is kept. Set before `build` (or `slot-os create`) to override the host's backend for this slot. An unprivileged overlay slot needs a number from 0 to 4093: its user namespace range is derived from it."),
    row(Slot, "", "autostart", "boolean", "false",
        "machines.target.wants/systemd-nspawn@NAME.service (and multi-user.target.wants/machines.target)",
        "Start the slot at boot."),
    row(Slot, "", "boot", "boolean", "true",
        "Boot=yes and NotifyReady=yes, or Boot=no, in [Exec] of NAME.nspawn",
        "true: boot the slot's own init; false: run `command` as its only process."),
    row(Slot, "", "command", "array of strings", "unset (required with boot = false)",
        "Parameters= in [Exec] of NAME.nspawn",
        "The process a slot with boot = false runs."),
    row(Slot, "", "cpu_quota", "string \"auto\" or \"N%\", or integer N", "[defaults] cpu_quota",
        "CPUQuota= in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "Percent of one CPU; `slot-os resource -c` sets it."),
    row(Slot, "", "cpus", "string \"all\" or a CPU set like \"0-1,3\"", "[defaults] cpus",
        "AllowedCPUs= in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "CPUs the slot may run on; `slot-os resource -n` sets it."),
    row(Slot, "", "memory", "string, a size with K, M, G or T", "[defaults] memory",
        "MemoryMax= in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "Memory limit; `slot-os resource -m` sets it."),
    row(Slot, "", "disk", "string \"none\" or a size with K, M, G or T, at least 1M", "[defaults] disk",
        "a project quota (ext4, xfs) or btrfs qgroup on the slot's directory (`slot-os disk-apply`, ExecStartPre= in the unit drop-in)",
        "Disk limit; `slot-os resource -d` sets it live."),
    row(Slot, "", "tasks_max", "integer 1 to 4194304, or string \"none\"", "[defaults] tasks_max",
        "TasksMax= in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "Processes and threads; `slot-os resource --tasks-max` sets it."),
    row(Slot, "", "io_weight", "integer 1 to 10000", "[defaults] io_weight",
        "IOWeight= in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "Share of block IO; `slot-os resource --io-weight` sets it."),
    row(Slot, "", "io_read_bandwidth_max", "string \"none\" or bytes per second with K, M, G or T", "[defaults] io_read_bandwidth_max",
        "IOReadBandwidthMax=MACHINES BYTES in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "Read bandwidth limit; `slot-os resource --io-read-max` sets it."),
    row(Slot, "", "io_write_bandwidth_max", "string \"none\" or bytes per second with K, M, G or T", "[defaults] io_write_bandwidth_max",
        "IOWriteBandwidthMax=MACHINES BYTES in systemd-nspawn@NAME.service.d/50-slot-os.conf",
        "Write bandwidth limit; `slot-os resource --io-write-max` sets it."),
    row(Slot, "", "privileged", "boolean", "false",
        "PrivateUsers=no in [Exec] of NAME.nspawn (otherwise the unit's -U: a user namespace)",
        "true: root in the slot is root on the host (Fulcon's mode)."),
    row(Slot, "", "environment", "table of strings (KEY = \"value\")", "empty",
        "Environment=KEY=value in [Exec] of NAME.nspawn",
        "Environment of the slot's init (or of `command`)."),
    row(Slot, "", "nic", "array of tables", "no extra NIC",
        "see [[nic]] below",
        "Extra NICs on bridges (Fulcon's net-add), one [[nic]] per NIC."),
    row(Slot, "", "bind", "array of tables", "no bind mount",
        "see [[bind]] below",
        "Host directories mounted into the slot (SlapOS-style DATA folders)."),
    row(Slot, "nic", "number", "integer 1 to 99", "none: required",
        "VirtualEthernetExtra=vs-NUMBER-N:ethN in [Network] of NAME.nspawn",
        "NIC number N: ethN in the slot, vs-NUMBER-N on the host."),
    row(Slot, "nic", "bridge", "integer 0 to 9999", "none: required",
        "Bridge=slotbrB in /run/systemd/network/60-slot-os-vs-NUMBER-N.network",
        "The [[bridge]] of slot-os.toml the NIC joins."),
    row(Slot, "nic", "address", "string or array of strings (address/prefix)", "no address",
        "set on ethN inside the slot by `slot-os net-apply` (ExecStartPost= in the unit drop-in)",
        "Static IPv4/IPv6 addresses of the NIC."),
    row(Slot, "bind", "source", "string (absolute normalised path; no backslash or :, no trailing space)", "none: required",
        "Bind=SOURCE:TARGET (or BindReadOnly=) in [Files] of NAME.nspawn",
        "Host directory."),
    row(Slot, "bind", "target", "string (absolute normalised path; no backslash or :, no trailing space)", "none: required",
        "Bind=SOURCE:TARGET (or BindReadOnly=) in [Files] of NAME.nspawn",
        "Where it appears in the slot."),
    row(Slot, "bind", "read_only", "boolean", "false",
        "BindReadOnly= instead of Bind= in [Files] of NAME.nspawn",
        "Mount it read-only."),
];

/// The parser's key list for one (file, section), the other side of the table.
pub fn parser_keys(file: File, section: &str) -> Option<&'static [&'static str]> {
    Some(match (file, section) {
        (Host, "") => TOP_KEYS,
        (Host, "defaults") => DEFAULT_KEYS,
        (Host, "storage") => STORAGE_KEYS,
        (Host, "network") => NETWORK_KEYS,
        (Host, "bridge") => BRIDGE_KEYS,
        (Host, "backup") => BACKUP_KEYS,
        (Slot, "") => SLOT_KEYS,
        (Slot, "nic") => NIC_KEYS,
        (Slot, "bind") => BIND_KEYS,
        _ => return None,
    })
}

/// Every (file, section) the parser knows, in manual order.
pub const SECTIONS: &[(File, &str)] = &[
    (Host, ""),
    (Host, "defaults"),
    (Host, "storage"),
    (Host, "network"),
    (Host, "bridge"),
    (Host, "backup"),
    (Slot, ""),
    (Slot, "nic"),
    (Slot, "bind"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parser_key_has_a_row_and_every_row_a_parser_key() {
        let mut missing = Vec::new();
        for &(file, section) in SECTIONS {
            for key in parser_keys(file, section).unwrap() {
                if !KEYS
                    .iter()
                    .any(|r| r.file == file && r.section == section && r.key == *key)
                {
                    missing.push(format!("{file:?} [{section}] {key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys the parser accepts but slot-config/src/keys.rs does not document (add a row, \
             it becomes slot-os.toml(5)): {missing:?}"
        );
        for r in KEYS {
            let keys = parser_keys(r.file, r.section).unwrap_or_else(|| {
                panic!(
                    "row {:?} [{}] {}: no such section",
                    r.file, r.section, r.key
                )
            });
            assert!(
                keys.contains(&r.key),
                "row {:?} [{}] {} documents a key the parser does not accept",
                r.file,
                r.section,
                r.key
            );
        }
    }

    #[test]
    fn rows_are_unique_and_filled_in() {
        for (i, r) in KEYS.iter().enumerate() {
            assert!(
                !KEYS[..i]
                    .iter()
                    .any(|o| o.file == r.file && o.section == r.section && o.key == r.key),
                "{} documented twice",
                r.key
            );
            for (what, v) in [
                ("type", r.ty),
                ("default", r.default),
                ("maps_to", r.maps_to),
                ("description", r.description),
            ] {
                assert!(!v.trim().is_empty(), "{}: empty {what}", r.key);
            }
        }
    }

    #[test]
    fn documented_defaults_match_the_model() {
        let d = crate::HostConfig::default();
        let find = |section: &str, key: &str| {
            KEYS.iter()
                .find(|r| r.file == Host && r.section == section && r.key == key)
                .unwrap()
                .default
        };
        assert_eq!(find("defaults", "image"), format!("{:?}", d.image));
        assert_eq!(find("defaults", "memory"), format!("\"{}\"", d.memory));
        assert_eq!(
            find("defaults", "cpu_quota"),
            format!("\"{}\"", d.cpu_quota)
        );
        assert_eq!(
            find("storage", "machines"),
            format!("{:?}", d.machines_dir.display().to_string())
        );
        assert_eq!(
            find("storage", "backups"),
            format!("{:?}", d.backup_dir.display().to_string())
        );
        assert_eq!(
            find("bridge", "vxlan_port"),
            crate::host::DEFAULT_VXLAN_PORT.to_string()
        );
        assert_eq!(
            find("network", "nat_address"),
            format!("{:?}", crate::host::DEFAULT_NAT_ADDRESS)
        );
    }
}
