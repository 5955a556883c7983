//! The bad-input table: each malformed config is refused with exactly this message
//! (file, key, what is wrong, what is allowed), and the slot is skipped.

use std::fs;
use std::path::PathBuf;

use slot_config::{load_dir, CpuSet, HostFacts, Paths};

struct Case {
    file: &'static str,
    text: &'static str,
    /// Extra host file content, when the case needs one.
    host: Option<&'static str>,
    expected: &'static str,
}

const fn c(file: &'static str, text: &'static str, expected: &'static str) -> Case {
    Case {
        file,
        text,
        host: None,
        expected,
    }
}
const fn h(
    file: &'static str,
    text: &'static str,
    host: &'static str,
    expected: &'static str,
) -> Case {
    Case {
        file,
        text,
        host: Some(host),
        expected,
    }
}

const BRIDGE1: &str = "[[bridge]]\nnumber = 1\naddress = \"10.1.0.1/24\"\n";

fn cases() -> Vec<Case> {
    vec![
        // syntax and types
        c("slot00.toml", "memory = ", "slot00.toml: line 1: not valid TOML: string values must be quoted, expected literal string"),
        c("slot00.toml", "memory = 512", "slot00.toml: memory: expected a string, found an integer"),
        c("slot00.toml", "autostart = \"yes\"", "slot00.toml: autostart: expected true or false, found a string"),
        c("slot00.toml", "privileged = 1", "slot00.toml: privileged: expected true or false, found an integer"),
        c("slot00.toml", "number = \"0\"", "slot00.toml: number: expected an integer, found a string"),
        c("slot00.toml", "cpus = 0", "slot00.toml: cpus: expected a string, found an integer"),
        c("slot00.toml", "cpu_quota = true", "slot00.toml: cpu_quota: expected a string or an integer, found a boolean"),
        c("slot00.toml", "nic = 1", "slot00.toml: nic: expected an array of tables ([[nic]]), found an integer"),
        c("slot00.toml", "environment = \"A=B\"", "slot00.toml: environment: expected a table, found a string"),
        // unknown keys
        c("slot00.toml", "cpu = \"50%\"", "slot00.toml: cpu: unknown key; allowed keys here: number, image, base_image, storage, autostart, boot, command, cpu_quota, cpus, memory, disk, tasks_max, io_weight, io_read_bandwidth_max, io_write_bandwidth_max, privileged, environment, nic, bind"),
        h("slot00.toml", "[[nic]]\nnumber = 1\nbridge = 1\nmask = 24", BRIDGE1, "slot00.toml: nic[0].mask: unknown key; allowed keys here: number, bridge, address"),
        h("slot00.toml", "", "[default]\nmemory = \"1G\"", "slot-os.toml: default: unknown key; allowed keys here: defaults, storage, network, bridge, backup"),
        // resources
        c("slot00.toml", "memory = \"abc\"", "slot00.toml: memory: \"abc\" is not a memory size; use a number with a K, M, G or T suffix, like \"512M\" or \"2G\""),
        c("slot00.toml", "memory = \"512X\"", "slot00.toml: memory: \"512X\" is not a memory size; use a number with a K, M, G or T suffix, like \"512M\" or \"2G\""),
        c("slot00.toml", "memory = \"1M\"", "slot00.toml: memory: \"1M\" is too little memory for a slot; use at least 16M"),
        c("slot00.toml", "memory = \"64G\"", "slot00.toml: memory: 64G is more than this host's memory (4G); use at most that"),
        c("slot00.toml", "cpu_quota = \"0%\"", "slot00.toml: cpu_quota: CPU quota \"0%\" is 0; use 1% or more (100% = one whole CPU), or \"auto\""),
        c("slot00.toml", "cpu_quota = 0", "slot00.toml: cpu_quota: CPU quota \"0\" is 0; use 1% or more (100% = one whole CPU), or \"auto\""),
        c("slot00.toml", "cpu_quota = \"201%\"", "slot00.toml: cpu_quota: 201% is more than this host's 2 CPUs can give; use 1% to 200%"),
        c("slot00.toml", "cpu_quota = \"half\"", "slot00.toml: cpu_quota: \"half\" is not a CPU quota; use a percentage like \"50%\" (100% = one whole CPU) or \"auto\""),
        c("slot00.toml", "cpus = \"0-2\"", "slot00.toml: cpus: CPU 2 is beyond this host's CPUs (0-1); use CPUs from 0-1 or \"all\""),
        c("slot00.toml", "cpus = \"99\"", "slot00.toml: cpus: CPU 99 is beyond this host's CPUs (0-1); use CPUs from 0-1 or \"all\""),
        c("slot00.toml", "cpus = \"1-0\"", "slot00.toml: cpus: \"1-0\": range 1-0 runs backwards; write the lower CPU first"),
        c("slot00.toml", "cpus = \"0,x\"", "slot00.toml: cpus: \"0,x\" is not a CPU set; use CPU numbers and ranges like \"0\", \"0-1\" or \"0-1,3\", or \"all\""),
        h("slot00.toml", "", "[defaults]\ncpus = \"5\"", "slot-os.toml: defaults.cpus: CPU 5 is beyond this host's CPUs (0-1); use CPUs from 0-1 or \"all\""),
        // disk, tasks and IO (issue 13)
        c("slot00.toml", "disk = \"ten\"", "slot00.toml: disk: \"ten\" is not a disk size; use a number with a K, M, G or T suffix, like \"10G\", or \"none\""),
        c("slot00.toml", "disk = \"512K\"", "slot00.toml: disk: \"512K\" is too small a disk limit; use at least 1M, or \"none\""),
        c("slot00.toml", "disk = 10", "slot00.toml: disk: expected a string, found an integer"),
        c("slot00.toml", "disk = \"10G\\rExecStartPre=/bin/sh\"", "slot00.toml: disk: \"10G\\rExecStartPre=/bin/sh\" contains a control character ('\\r'), which a generated systemd file cannot carry"),
        h("slot00.toml", "", "[defaults]\ndisk = \"-1G\"", "slot-os.toml: defaults.disk: \"-1G\" is not a disk size; use a number with a K, M, G or T suffix, like \"10G\", or \"none\""),
        c("slot00.toml", "tasks_max = 0", "slot00.toml: tasks_max: \"0\" is out of range; use 1 to 4194304 tasks, or \"none\""),
        c("slot00.toml", "tasks_max = 4194305", "slot00.toml: tasks_max: \"4194305\" is out of range; use 1 to 4194304 tasks, or \"none\""),
        c("slot00.toml", "tasks_max = \"many\"", "slot00.toml: tasks_max: \"many\" is not a number of tasks; use a number like 512, or \"none\""),
        c("slot00.toml", "tasks_max = \"512\\nTasksMax=infinity\"", "slot00.toml: tasks_max: \"512\\nTasksMax=infinity\" contains a control character ('\\n'), which a generated systemd file cannot carry"),
        c("slot00.toml", "tasks_max = 1.5", "slot00.toml: tasks_max: expected a string or an integer, found a float"),
        c("slot00.toml", "io_weight = 0", "slot00.toml: io_weight: 0 is out of range; use 1 to 10000"),
        c("slot00.toml", "io_weight = 10001", "slot00.toml: io_weight: 10001 is out of range; use 1 to 10000"),
        c("slot00.toml", "io_weight = \"100\"", "slot00.toml: io_weight: expected an integer, found a string"),
        h("slot00.toml", "", "[defaults]\nio_weight = -5", "slot-os.toml: defaults.io_weight: -5 is out of range; use 1 to 10000"),
        c("slot00.toml", "io_read_bandwidth_max = \"fast\"", "slot00.toml: io_read_bandwidth_max: \"fast\" is not a bandwidth; use bytes per second with a K, M, G or T suffix, like \"50M\", or \"none\""),
        c("slot00.toml", "io_write_bandwidth_max = \"100K\"", "slot00.toml: io_write_bandwidth_max: \"100K\" is too little bandwidth; use at least 1M (bytes per second), or \"none\""),
        c("slot00.toml", "io_write_bandwidth_max = \"/dev/sda 5M\"", "slot00.toml: io_write_bandwidth_max: \"/dev/sda 5M\" is not a bandwidth; use bytes per second with a K, M, G or T suffix, like \"50M\", or \"none\""),
        h("slot00.toml", "", "[defaults]\nio_read_bandwidth_max = \"5M\\r[Service]\"", "slot-os.toml: defaults.io_read_bandwidth_max: \"5M\\r[Service]\" contains a control character ('\\r'), which a generated systemd file cannot carry"),
        // names and numbers
        c("Slot00.toml", "number = 0", "Slot00.toml: slot name \"Slot00\" must start with a lowercase letter or a digit (the file name, without .toml, is the slot name)"),
        c("web_1.toml", "number = 1", "web_1.toml: slot name \"web_1\" contains '_'; use lowercase letters, digits and '-' (the file name, without .toml, is the slot name)"),
        c("a..b.toml", "number = 1", "a..b.toml: slot name \"a..b\" contains '/' or '..'; use lowercase letters, digits and '-' (the file name, without .toml, is the slot name)"),
        c("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.toml", "number = 1", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.toml: slot name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is 65 characters long; at most 64 are allowed (the file name, without .toml, is the slot name)"),
        // a named slot needs a number only for NICs (`net-add` assigns one)
        h("web.toml", "[[nic]]\nnumber = 1\nbridge = 1", BRIDGE1, "web.toml: number: missing; a slot with [[nic]] entries needs `number = N` (0 to 9999), which names its host interfaces (vs-N-M): add it to the file, or remove the [[nic]] entries and let `slot-os net-add` pick a free number"),
        c("web.toml", "number = -1", "web.toml: number: -1 is out of range; use 0 to 9999"),
        c("web.toml", "number = 10000", "web.toml: number: 10000 is out of range; use 0 to 9999"),
        c("slot00.toml", "image = \"../etc\"", "slot00.toml: image: image name \"../etc\" contains '/' or '..'; use lowercase letters, digits and '-'"),
        c("slot01.toml", "number = 0", "slot01.toml: number: slot number 0 is already used by slot00; every slot needs its own number"),
        // modes
        c("slot00.toml", "boot = false", "slot00.toml: command: missing; a slot with `boot = false` runs `command` (e.g. [\"/bin/sh\", \"-c\", \"...\"]) as its only process"),
        c("slot00.toml", "command = [\"/bin/true\"]", "slot00.toml: command: only used with `boot = false`; a booted slot runs its own init"),
        // storage backends (issue 13)
        c("slot00.toml", "storage = \"zfs\"", "slot00.toml: storage: \"zfs\" is not a storage backend; use \"btrfs\", \"overlay\" or \"copy\""),
        c("slot00.toml", "storage = \"auto\"", "slot00.toml: storage: \"auto\" is not a storage backend; use \"btrfs\", \"overlay\" or \"copy\""),
        c("slot00.toml", "storage = \"overlay\\r[Exec]\\rPrivateUsers=no\"", "slot00.toml: storage: \"overlay\\r[Exec]\\rPrivateUsers=no\" contains a control character ('\\r'), which a generated systemd file cannot carry"),
        c("slot00.toml", "storage = true", "slot00.toml: storage: expected a string, found a boolean"),
        c("web.toml", "storage = \"overlay\"", "web.toml: storage: an overlay slot needs `number = N` (0 to 4093): its user namespace range is derived from it"),
        c("slot4094.toml", "storage = \"overlay\"", "slot4094.toml: storage: an overlay slot's user namespace range is derived from its number, and slot 4094 has none left; overlay slots use numbers 0 to 4093 (or set privileged = true, which needs no range)"),
        h("slot00.toml", "", "[storage]\nbackend = \"lvm\"", "slot-os.toml: storage.backend: \"lvm\" is not a storage backend; use \"auto\", \"btrfs\", \"overlay\" or \"copy\""),
        h("slot00.toml", "", "[storage]\nbackend = \"overlay\\u0000\"", "slot-os.toml: storage.backend: \"overlay\\0\" contains a control character ('\\0'), which a generated systemd file cannot carry"),
        // storage
        c("slot00.toml", "[[bind]]\nsource = \"data\"\ntarget = \"/DATA\"", "slot00.toml: bind[0].source: \"data\" is not an absolute path; start it with '/'"),
        c("slot00.toml", "[[bind]]\nsource = \"/data/../etc\"\ntarget = \"/DATA\"", "slot00.toml: bind[0].source: \"/data/../etc\" contains '.' or '..'; write the path without them"),
        c("slot00.toml", "[[bind]]\nsource = \"/data\"", "slot00.toml: bind[0].target: missing; use an absolute path"),
        c("slot00.toml", "[[bind]]\nsource = \"/a\"\ntarget = \"/x\"\n[[bind]]\nsource = \"/b\"\ntarget = \"/x\"", "slot00.toml: bind[1].target: /x is already the target of another bind"),
        c("slot00.toml", "[environment]\n\"1X\" = \"y\"", "slot00.toml: environment.1X: not a variable name; use letters, digits and '_', not starting with a digit"),
        // networking
        h("slot00.toml", "[[nic]]\nnumber = 1\nbridge = 1\naddress = \"300.1.1.1/24\"", BRIDGE1, "slot00.toml: nic[0].address: \"300.1.1.1/24\": \"300.1.1.1\" is not an IPv4 or IPv6 address"),
        h("slot00.toml", "[[nic]]\nnumber = 1\nbridge = 1\naddress = \"10.1.0.2/33\"", BRIDGE1, "slot00.toml: nic[0].address: \"10.1.0.2/33\": prefix length /33 is out of range; use /0 to /32"),
        h("slot00.toml", "[[nic]]\nnumber = 1\nbridge = 1\naddress = \"10.1.0.2\"", BRIDGE1, "slot00.toml: nic[0].address: \"10.1.0.2\" has no prefix length; write an address with its mask, like \"192.168.18.2/24\" or \"fd00::2/64\""),
        h("slot00.toml", "[[nic]]\nnumber = 1\nbridge = 2\naddress = \"10.1.0.2/24\"", BRIDGE1, "slot00.toml: nic[0].bridge: bridge 2 is not declared in slot-os.toml; declared bridges: 1"),
        h("slot00.toml", "[[nic]]\nnumber = 1\nbridge = 1\n[[nic]]\nnumber = 1\nbridge = 1", BRIDGE1, "slot00.toml: nic[1].number: NIC 1 is declared twice in this slot"),
        h("slot00.toml", "[[nic]]\nnumber = 0\nbridge = 1", BRIDGE1, "slot00.toml: nic[0].number: 0 is out of range; use 1 to 99"),
        h("slot00.toml", "[[nic]]\nnumber = 1\nbridge = 1\naddress = \"10.1.0.1/24\"", BRIDGE1, "slot00.toml: nic[0].address: 10.1.0.1 is already used on bridge 1 by bridge 1 of the host"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\ndevice = \"eth0/1\"", "slot-os.toml: bridge[0].device: \"eth0/1\" is not a plain interface name; use letters, digits, '-', '_' and '.' (networkd reads '*', '?', '[', ']' and a leading '!' as patterns that match other host NICs)"),
        h("slot00.toml", "", "[[bridge]]\naddress = \"10.0.0.1/24\"", "slot-os.toml: bridge[0].number: missing; every [[bridge]] needs a number from 0 to 9999"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nvxlan_remote = \"10.0.0.2\"", "slot-os.toml: bridge[0].vxlan_id: missing; the vxlan_* keys need a vxlan_id (1 to 16777215)"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nvxlan_id = 0\nvxlan_remote = \"10.0.0.2\"", "slot-os.toml: bridge[0].vxlan_id: 0 is out of range; use 1 to 16777215"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nvxlan_id = 5", "slot-os.toml: bridge[0].vxlan_id: a VXLAN needs vxlan_remote (one peer host) or vxlan_group (a multicast group)"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nvxlan_id = 5\nvxlan_remote = \"10.0.0.2\"\nvxlan_group = \"239.0.0.5\"", "slot-os.toml: bridge[0].vxlan_group: give vxlan_remote (one peer) or vxlan_group (multicast), not both"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nvxlan_id = 5\nvxlan_group = \"10.0.0.5\"", "slot-os.toml: bridge[0].vxlan_group: 10.0.0.5 is not a multicast address (224.0.0.0/4 or ff00::/8)"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nvxlan_id = 5\nvxlan_remote = \"239.0.0.5\"", "slot-os.toml: bridge[0].vxlan_remote: 239.0.0.5 is not a unicast address; for multicast use vxlan_group"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nvxlan_id = 5\nvxlan_remote = \"10.0.0.300\"", "slot-os.toml: bridge[0].vxlan_remote: \"10.0.0.300\" is not an IPv4 or IPv6 address"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nvxlan_id = 5\nvxlan_remote = \"10.0.0.2\"\nvxlan_port = 70000", "slot-os.toml: bridge[0].vxlan_port: 70000 is out of range; use 1 to 65535"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\n[[bridge]]\nnumber = 1", "slot-os.toml: bridge[1].number: bridge 1 is declared twice"),
        // issue 10: what systemd cannot carry is refused, in every key
        c("slot00.toml", "[environment]\nA = \"x\\rPrivateUsers=no\\r[Files]\\rBind=/:/host\\r#\"", "slot00.toml: environment.A: \"x\\rPrivateUsers=no\\r[Files]\\rBind=/:/host\\r#\" contains a control character ('\\r'), which a generated systemd file cannot carry"),
        c("slot00.toml", "[environment]\nA = \"x\\u0000PrivateUsers=no\"", "slot00.toml: environment.A: \"x\\0PrivateUsers=no\" contains a control character ('\\0'), which a generated systemd file cannot carry"),
        c("slot00.toml", "[environment]\nA = \"x\\nB=y\"", "slot00.toml: environment.A: \"x\\nB=y\" contains a control character ('\\n'), which a generated systemd file cannot carry"),
        c("slot00.toml", "[environment]\nA = \"x\\u007f\"", "slot00.toml: environment.A: \"x\\u{7f}\" contains a control character ('\\u{7f}'), which a generated systemd file cannot carry"),
        c("slot00.toml", "boot = false\ncommand = [\"/bin/sh\", \"x\\rPrivateUsers=no\"]", "slot00.toml: command[1]: \"x\\rPrivateUsers=no\" contains a control character ('\\r'), which a generated systemd file cannot carry"),
        c("slot00.toml", "boot = false\ncommand = [\"/bin/sh\\u0000[Files]\"]", "slot00.toml: command[0]: \"/bin/sh\\0[Files]\" contains a control character ('\\0'), which a generated systemd file cannot carry"),
        c("slot00.toml", "[[bind]]\nsource = \"/x\\r[Files]\\rBind=/:/host\"\ntarget = \"/y\"", "slot00.toml: bind[0].source: \"/x\\r[Files]\\rBind=/:/host\" contains a control character ('\\r'), which a generated systemd file cannot carry"),
        c("slot00.toml", "\"a\\rb\" = 1", "slot00.toml: a\\rb: unknown key; allowed keys here: number, image, base_image, storage, autostart, boot, command, cpu_quota, cpus, memory, disk, tasks_max, io_weight, io_read_bandwidth_max, io_write_bandwidth_max, privileged, environment, nic, bind"),
        h("slot00.toml", "", "[storage]\nmachines = \"/x\\r[Service]\\rExecStartPre=/bin/touch /tmp/PWNED\\r#\"", "slot-os.toml: storage.machines: \"/x\\r[Service]\\rExecStartPre=/bin/touch /tmp/PWNED\\r#\" contains a control character ('\\r'), which a generated systemd file cannot carry"),
        h("slot00.toml", "", "[storage]\nmachines = \"/a \"", "slot-os.toml: storage.machines: \"/a \" contains ' '; this path is written into a unit's ExecStart= line, which cannot carry whitespace, quotes, '\\', '$', '%' or ':'"),
        h("slot00.toml", "", "[storage]\nmachines = \"/var/lib/m%i\"", "slot-os.toml: storage.machines: \"/var/lib/m%i\" contains '%'; this path is written into a unit's ExecStart= line, which cannot carry whitespace, quotes, '\\', '$', '%' or ':'"),
        h("slot00.toml", "", "[storage]\nmachines = \"/var/$HOME\"", "slot-os.toml: storage.machines: \"/var/$HOME\" contains '$'; this path is written into a unit's ExecStart= line, which cannot carry whitespace, quotes, '\\', '$', '%' or ':'"),
        h("slot00.toml", "", "[storage]\nbackups = \"/b\\\"k\"", "slot-os.toml: storage.backups: \"/b\\\"k\" contains '\"'; this path is written into a unit's ExecStart= line, which cannot carry whitespace, quotes, '\\', '$', '%' or ':'"),
        // backup
        h("slot00.toml", "", "[backup]\nengine = \"borg\"", "slot-os.toml: backup.engine: \"borg\" is not a backup engine; use \"restic\" or \"tar\""),
        h("slot00.toml", "", "[backup]\npassword_file = \"backup.key\"", "slot-os.toml: backup.password_file: \"backup.key\" is not an absolute path; start it with '/'"),
        h("slot00.toml", "", "[backup]\noffsite = \"sftp:b@h:/srv\"", "slot-os.toml: backup.offsite_password_file: missing; an off-site repository needs the path of its password file (root only), never the password itself"),
        h("slot00.toml", "", "[backup]\noffsite = \"ftp://h/x\"\noffsite_password_file = \"/k\"", "slot-os.toml: backup.offsite: \"ftp://h/x\" is not a restic repository location; use sftp:USER@HOST:/PATH, s3:HOST/BUCKET, rest:URL or an absolute path"),
        h("slot00.toml", "", "[backup]\noffsite = \"rest:https://u:secret@h/r\"\noffsite_password_file = \"/k\"", "slot-os.toml: backup.offsite: \"rest:https://u:secret@h/r\" holds a password; put credentials in offsite_env_file or the password file, not in the location"),
        h("slot00.toml", "", "[backup]\noffsite = \"sftp:b@h:/my repo\"\noffsite_password_file = \"/k\"", "slot-os.toml: backup.offsite: \"sftp:b@h:/my repo\" contains ' '; a repository location has no whitespace"),
        h("slot00.toml", "", "[backup]\noffsite = \"sftp:b@h:/r\\n-o ProxyCommand=x\"\noffsite_password_file = \"/k\"", "slot-os.toml: backup.offsite: \"sftp:b@h:/r\\n-o ProxyCommand=x\" contains a control character ('\\n'), which a generated systemd file cannot carry"),
        h("slot00.toml", "", "[backup]\noffsite_password_file = \"/k\"", "slot-os.toml: backup.offsite: missing; offsite_password_file and offsite_env_file belong to an offsite repository"),
        h("slot00.toml", "", "[storage]\nmachines = \"/var/lib/machines/\"", "slot-os.toml: storage.machines: \"/var/lib/machines/\" contains '//' or ends in '/'; write the path without them"),
        c("slot00.toml", "[[bind]]\nsource = \"/data\"\ntarget = \"//\"", "slot00.toml: bind[0].target: \"//\" contains '//' or ends in '/'; write the path without them"),
        c("slot00.toml", "[[bind]]\nsource = \"/data//x\"\ntarget = \"/x\"", "slot00.toml: bind[0].source: \"/data//x\" contains '//' or ends in '/'; write the path without them"),
        c("slot00.toml", "[[bind]]\nsource = \"/x\\\\\"\ntarget = \"/y\"", "slot00.toml: bind[0].source: \"/x\\\\\" contains '\\\\'; a bind path cannot carry '\\' or ':' (systemd-nspawn's Bind= reads them as an escape and a separator)"),
        c("slot00.toml", "[[bind]]\nsource = \"/a:b\"\ntarget = \"/y\"", "slot00.toml: bind[0].source: \"/a:b\" contains ':'; a bind path cannot carry '\\' or ':' (systemd-nspawn's Bind= reads them as an escape and a separator)"),
        c("slot00.toml", "[[bind]]\nsource = \"/data\"\ntarget = \"/mnt/a \"", "slot00.toml: bind[0].target: \"/mnt/a \" ends in whitespace, which systemd strips from a Bind= line; remove it"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\ndevice = \"e*\"", "slot-os.toml: bridge[0].device: \"e*\" is not a plain interface name; use letters, digits, '-', '_' and '.' (networkd reads '*', '?', '[', ']' and a leading '!' as patterns that match other host NICs)"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\ndevice = [\"eth1\", \"!eth0\"]", "slot-os.toml: bridge[0].device: \"!eth0\" is not a plain interface name; use letters, digits, '-', '_' and '.' (networkd reads '*', '?', '[', ']' and a leading '!' as patterns that match other host NICs)"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\ndevice = \"eth[01]\"", "slot-os.toml: bridge[0].device: \"eth[01]\" is not a plain interface name; use letters, digits, '-', '_' and '.' (networkd reads '*', '?', '[', ']' and a leading '!' as patterns that match other host NICs)"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\ndevice = \"eth0\\r\"", "slot-os.toml: bridge[0].device: \"eth0\\r\" contains a control character ('\\r'), which a generated systemd file cannot carry"),
        // Open vSwitch bridges
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nbackend = \"linux\"", "slot-os.toml: bridge[0].backend: \"linux\" is not a bridge backend; use \"networkd\" or \"ovs\""),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nbackend = true", "slot-os.toml: bridge[0].backend: expected a string, found a boolean"),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nbackend = \"ovs\"\ndevice = \"eth0\"", "slot-os.toml: bridge[0].device: a host device on an Open vSwitch bridge is not supported; share it on a bridge with backend = \"networkd\""),
        h("slot00.toml", "", "[[bridge]]\nnumber = 1\nbackend = \"ovs\"\nvxlan_id = 5\nvxlan_remote = \"10.0.0.2\"", "slot-os.toml: bridge[0].vxlan_id: a VXLAN on an Open vSwitch bridge is not supported; use it on a bridge with backend = \"networkd\""),
        h("slot00.toml", "", "[network]\ndefault = \"docker\"", "slot-os.toml: network.default: \"docker\" is not a default network; use \"nat\", \"veth\" or \"none\""),
        h("slot00.toml", "", "[network]\nnat_address = \"172.17.0.1\"", "slot-os.toml: network.nat_address: \"172.17.0.1\" has no prefix length; write an address with its mask, like \"192.168.18.2/24\" or \"fd00::2/64\""),
    ]
}

fn facts() -> HostFacts {
    HostFacts {
        cpus: CpuSet::from_cpus(0..2),
        mem_total: Some(4 << 30),
    }
}

#[test]
fn bad_input_table() {
    let base = std::env::temp_dir().join(format!("slot-os-bad-input-{}", std::process::id()));
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let root = base.join(i.to_string());
        let dir = root.join("etc/slot-os");
        fs::create_dir_all(&dir).unwrap();
        // The duplicate-number case needs a first holder of the number.
        if case.file == "slot01.toml" {
            fs::write(dir.join("slot00.toml"), "").unwrap();
        }
        fs::write(dir.join(case.file), case.text).unwrap();
        if let Some(hosttext) = case.host {
            fs::write(dir.join("slot-os.toml"), hosttext).unwrap();
        }
        let cfg = load_dir(&Paths::with_root(&root), &facts());
        let prefix = format!("{}/", dir.display());
        let got: Vec<String> = cfg
            .problems
            .iter()
            .map(|p| p.to_string().replacen(&prefix, "", 1))
            .collect();
        let name = case.file.trim_end_matches(".toml");
        let skipped_ok = case.file == "slot-os.toml"
            || case.host.is_some() && cfg.host_skipped
            || cfg.skipped.iter().any(|s| s == name);
        if got != [case.expected.to_string()] || !skipped_ok {
            failures.push(format!("case {i} ({} = {:?}):\n  expected {:?}\n  got      {:?}\n  skipped {:?} host_skipped {}", case.file, case.text, case.expected, got, cfg.skipped, cfg.host_skipped));
        }
    }
    let _ = fs::remove_dir_all(&base);
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn good_config_has_no_problems_and_resolves_fulcon_defaults() {
    let root = std::env::temp_dir().join(format!("slot-os-good-{}", std::process::id()));
    let dir = root.join("etc/slot-os");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..3 {
        fs::write(dir.join(format!("slot0{i}.toml")), "").unwrap();
    }
    let cfg = load_dir(&Paths::with_root(&root), &facts());
    let _ = fs::remove_dir_all(&root);
    assert!(cfg.problems.is_empty(), "{:?}", cfg.problems);
    assert_eq!(cfg.slots.len(), 3);
    let r = &cfg.slots[0].resources;
    assert_eq!(r.cpu_quota, 66, "Fulcon: ncpu*100/slots");
    assert_eq!(r.cpus, None, "all CPUs");
    assert_eq!(r.memory.to_string(), "512M");
    assert_eq!(
        cfg.slots.iter().map(|s| s.number).collect::<Vec<_>>(),
        vec![Some(0), Some(1), Some(2)]
    );
}

/// Every example in conf/ is itself valid (they are documentation users copy).
#[test]
fn conf_examples_are_valid() {
    let conf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let root = std::env::temp_dir().join(format!("slot-os-conf-{}", std::process::id()));
    let dir = root.join("etc/slot-os");
    fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    for e in fs::read_dir(&conf).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            fs::copy(e.path(), dir.join(e.file_name())).unwrap();
            n += 1;
        }
    }
    let cfg = load_dir(
        &Paths::with_root(&root),
        &HostFacts {
            cpus: CpuSet::from_cpus(0..4),
            mem_total: Some(16 << 30),
        },
    );
    let _ = fs::remove_dir_all(&root);
    assert!(
        n >= 2,
        "conf/ should hold the host file and at least one slot example"
    );
    assert!(cfg.problems.is_empty(), "{:#?}", cfg.problems);
    assert!(!cfg.host_skipped);
    assert_eq!(cfg.slots.len(), n - 1);
}
