//! The command line: Fulcon's subcommands with Fulcon's arguments, then the additions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "slot-os",
    version,
    about = "Divide one Linux host into slots: full-OS systemd-nspawn machines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Slots to act on: `all`, slot numbers (`0`), or slot names (`slot00`).
#[derive(Args, Debug, Clone)]
pub struct Targets {
    #[arg(required = true, value_name = "all | NUMBER | NAME")]
    pub targets: Vec<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ForwardAction {
    On,
    Off,
    Status,
}

/// A bridge's VXLAN port (`br-add N … --vxlan VNI --remote PEER`).
#[derive(Args, Debug, Clone, Default)]
pub struct VxlanArgs {
    /// VXLAN network identifier (1 to 16777215), the same on every host.
    #[arg(long, value_name = "VNI")]
    pub vxlan: Option<u32>,
    /// The other host's address (point to point).
    #[arg(long, value_name = "IP", requires = "vxlan", conflicts_with = "group")]
    pub remote: Option<String>,
    /// A multicast group joining any number of hosts.
    #[arg(long, value_name = "IP", requires = "vxlan")]
    pub group: Option<String>,
    /// This host's source address for the tunnel (default: chosen by routing).
    #[arg(long, value_name = "IP", requires = "vxlan")]
    pub local: Option<String>,
    /// UDP port (default 4789).
    #[arg(long, requires = "vxlan")]
    pub port: Option<u16>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate every file in /etc/slot-os and print each problem; changes nothing.
    Check,
    /// Print what the generator writes for a slot (or for the bridges, with `host`).
    Render {
        #[arg(value_name = "NAME | NUMBER | host")]
        slot: String,
    },
    /// Make the base image from the host's root filesystem (or a tarball, or a bootstrap).
    MakeBaseImage(crate::commands::make_base_image::Args),
    /// Divide the host into N slots (slot00..); `build 0` removes all slots.
    Build {
        #[arg(value_name = "NUMBER")]
        count: String,
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List slots: number, state, name, CPU%, CPUs, memory, autostart, image, addresses.
    List {
        /// Keep refreshing the list until ^C.
        #[arg(short = 'c', long = "continuous")]
        continuous: bool,
        #[arg(long)]
        json: bool,
        #[arg(value_name = "NAME | NUMBER")]
        name: Option<String>,
    },
    /// Start slots (returns once each has booted).
    Start(Targets),
    /// Stop slots.
    Stop(Targets),
    /// Freeze slots (needs a cgroup-v2 host).
    Suspend(Targets),
    /// Thaw slots frozen by `suspend`.
    Resume(Targets),
    /// Start slots at boot (on) or not (off): `autostart on|off (all | NUMBER...)`.
    Autostart {
        #[arg(required = true, num_args = 1.., value_name = "[NAME] on|off all|NUMBER...")]
        args: Vec<String>,
    },
    /// Show (no option) or set the CPU%, CPU set and memory of slots, live and persisted.
    Resource(crate::commands::resource::Args),
    /// A root shell in a running slot (no password needed; ^] three times to leave).
    Console {
        #[arg(value_name = "NUMBER | NAME")]
        slot: String,
        /// Log in on the slot's getty instead (machinectl login): for slots whose users
        /// have passwords of their own.
        #[arg(long)]
        login: bool,
    },
    /// Upgrade the packages of slots with each slot's own package manager.
    Update {
        /// Print the command each slot would run, and run nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(required = true, value_name = "all | NUMBER | NAME")]
        targets: Vec<String>,
    },
    /// Run a command in slots: `update-prog (all | NUMBER...) : COMMAND`.
    UpdateProg {
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Copy a host file into slots: `update-deploy NUMBER... : SRC_FILE DEST_PATH` (also
    /// `deploy`, Fulcon's name for it).
    #[command(visible_alias = "deploy")]
    UpdateDeploy {
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Show one slot: state, leader PID, addresses, CPU time, memory, traffic, image, since.
    Info {
        #[arg(value_name = "NAME | NUMBER")]
        slot: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a slot and return its exit code: `exec NAME -- CMD...`.
    Exec {
        #[arg(value_name = "NAME | NUMBER")]
        slot: String,
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Rename a stopped slot (config, image and units).
    Rename { old: String, new: String },
    /// Back up a slot as slotXX.NAME.
    Backup { slot: String, name: String },
    /// Back up a slot as slotXX.auto-YYYYMMDD-HHMMSS (UTC) and delete its oldest automatic
    /// backups beyond --keep; what slot-os-backup@.service runs.
    BackupAuto {
        slot: String,
        /// How many automatic backups of the slot to keep (at least 1).
        #[arg(long, default_value_t = 7)]
        keep: u32,
    },
    /// List backups.
    BackupList {
        #[arg(long)]
        json: bool,
    },
    /// Delete a backup.
    BackupDel { image: String },
    /// Restore a backup into a slot (`slot-os` = reset to the base image).
    BackupRestore { slot: String, image: String },
    /// Write a slot (image and config) to one file, to move it to another host.
    Export { slot: String, file: PathBuf },
    /// Create a slot from a file written by `export`.
    Import {
        file: PathBuf,
        name: Option<String>,
        /// Keep what the file's slot.toml asks for that reaches the host (privileged,
        /// bind mounts) or starts it unasked (autostart). Without it those keys are
        /// refused (autostart: not carried over).
        #[arg(long)]
        trust_config: bool,
    },
    /// Add a bridge: `br-add NUMBER (IPADDR/MASK | NET_DEVICE)`, optionally with a VXLAN
    /// port so slots on several hosts share its network.
    BrAdd {
        number: String,
        /// IPADDR/MASK: the host's address on the bridge; NET_DEVICE: a host NIC to enslave.
        #[arg(required_unless_present = "vxlan")]
        address_or_device: Option<String>,
        #[command(flatten)]
        vxlan: VxlanArgs,
        /// Who makes the bridge: "networkd" (a Linux bridge, the default) or "ovs" (Open
        /// vSwitch, through OVSDB). Only for a new bridge.
        #[arg(long, value_name = "networkd | ovs")]
        backend: Option<String>,
    },
    /// Delete a bridge.
    BrDel { number: String },
    /// Accept slot traffic in an iptables FORWARD chain whose policy is DROP (as Docker
    /// sets it); run by slot-os-forward.service.
    Forward {
        #[arg(value_enum)]
        action: ForwardAction,
    },
    /// Show bridges.
    BrInfo {
        #[arg(long)]
        json: bool,
    },
    /// Add a NIC with a static address to a slot: `net-add SLOT IPADDR/MASK NIC_NUMBER`.
    NetAdd {
        slot: String,
        address: String,
        nic: String,
        /// The bridge (default: the one whose subnet holds the address, else bridge NIC_NUMBER).
        #[arg(long)]
        bridge: Option<String>,
    },
    /// Delete a slot's NIC.
    NetDel { slot: String, nic: String },
    /// Show slots' NICs and addresses.
    NetInfo {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Bring a running slot's extra NICs up with their addresses (run by the slot's unit
    /// after every start).
    /// `net-apply host`: the config's Open vSwitch bridges made to exist in OVSDB (run at
    /// boot by slot-os-ovs.service).
    #[command(hide = true)]
    NetApply { slot: String },
    /// Remove a stopped slot's Open vSwitch ports (run by the slot's unit after it stops).
    #[command(hide = true)]
    NetRelease { slot: String },
    /// Thaw the slots a killed capture (backup, export) left frozen (run by
    /// slot-os-backup@.service after every run, also a killed one).
    #[command(hide = true)]
    ThawLeftovers { slot: Option<String> },
    /// Make the NAT zone's bridge exist and wait until networkd has configured it (address,
    /// DHCP server), so a slot's first DHCP request is answered (run by each NAT slot's
    /// unit before it starts).
    #[command(hide = true)]
    ZoneReady,
    /// Share a host NIC with the slots (enslave it to a bridge).
    NetNicAdd {
        device: String,
        #[arg(long, default_value_t = 1)]
        bridge: u32,
    },
    /// Stop sharing a host NIC.
    NetNicDel { device: String },
    /// Print a shell completion script: `slot-os completions bash > /etc/bash_completion.d/slot-os`.
    Completions {
        #[arg(value_name = "bash | zsh | fish | elvish | powershell")]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages and completion scripts into DIR/man and DIR/completions
    /// (used by `make` and the packages).
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}
