//! The command line: Fulcon's subcommands with Fulcon's arguments, then the additions.
//! Only the list: each command's arguments and its `exec` live in `commands/`.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::commands::lifecycle::Action;
use crate::commands::*;
use crate::config::{targets, Ctx};
use crate::dbus::Bus;
use crate::storage::moves;
use crate::sys::{journal, lock};

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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate every file in /etc/slot-os and print each problem; changes nothing.
    Check(check::Args),
    /// Print what the generator writes for a slot (or for the bridges, with `host`).
    Render(render::Args),
    /// Make the base image from the host's root filesystem (or a tarball, or a bootstrap).
    MakeBaseImage(make_base_image::Args),
    /// Divide the host into N slots (slot00..); `build 0` removes all slots.
    Build(build::Args),
    /// Make one slot (config and its own image) without touching others: `create NAME`
    /// or `create NUMBER`; what exists is kept.
    Create(create::Args),
    /// Remove one slot: stop it, delete its image and config (its backups stay).
    Remove(remove::Args),
    /// List slots: number, state, name, CPU%, CPUs, memory, autostart, image, addresses.
    List(list::Args),
    /// Start slots (returns once each has booted).
    Start(lifecycle::Targets),
    /// Stop slots.
    Stop(lifecycle::Targets),
    /// Freeze slots (needs a cgroup-v2 host).
    Suspend(lifecycle::Targets),
    /// Thaw slots frozen by `suspend`.
    Resume(lifecycle::Targets),
    /// Start slots at boot (on) or not (off): `autostart on|off (all | NUMBER...)`.
    Autostart(autostart::Args),
    /// Show (no option) or set the CPU%, CPU set, memory, disk, tasks and IO limits of slots,
    /// live and persisted.
    Resource(resource::Args),
    /// A root shell in a running slot (no password needed; ^] three times to leave).
    Console(console::Args),
    /// Upgrade the packages of slots with each slot's own package manager.
    Update(update::UpdateArgs),
    /// Run a command in slots: `update-prog (all | NUMBER...) : COMMAND`.
    UpdateProg(update::ProgArgs),
    /// Copy a host file into slots: `update-deploy NUMBER... : SRC_FILE DEST_PATH` (also
    /// `deploy`, Fulcon's name for it).
    #[command(visible_alias = "deploy")]
    UpdateDeploy(update::DeployArgs),
    /// Show one slot: state, leader PID, addresses, CPU time, memory, traffic, image, since.
    Info(info::Args),
    /// Running slots' CPU, memory, I/O and network use, refreshed in place (q quits).
    Top(top::Args),
    /// Every slot's state and counters as OpenMetrics text (node_exporter's textfile
    /// collector; slot-os-metrics.timer writes it).
    Metrics(metrics::Args),
    /// Run a command in a slot and return its exit code: `exec NAME -- CMD...`.
    Exec(exec::Args),
    /// Rename a stopped slot (config, image and units).
    Rename(rename::Args),
    /// Move stopped overlay slots onto the newest version of their base image (made now if
    /// the base changed); each keeps its own files.
    Rebase(rebase::Args),
    /// Back up a slot as slotXX.NAME.
    Backup(backup::BackupArgs),
    /// Back up a slot as slotXX.auto-YYYYMMDD-HHMMSS (UTC) and delete its oldest automatic
    /// backups beyond --keep; what slot-os-backup@.service runs.
    BackupAuto(backup::AutoArgs),
    /// List backups.
    BackupList(backup::ListArgs),
    /// Delete a backup.
    BackupDel(backup::DelArgs),
    /// Restore a backup into a slot (`slot-os` = reset to the base image).
    BackupRestore(backup::RestoreArgs),
    /// Write a slot (image and config) to one file, to move it to another host.
    Export(export::ExportArgs),
    /// Create a slot from a file written by `export`.
    Import(import::ImportArgs),
    /// Move a slot to another slot-os host while it runs, down for seconds:
    /// `move NAME HOST [--via CMD]` (removed here once it has booted there).
    Move(move_slot::Args),
    /// The target's side of `move` (run by it through ssh or --via).
    #[command(hide = true)]
    MoveReceive(move_receive::Args),
    /// Add a bridge: `br-add NUMBER (IPADDR/MASK | NET_DEVICE)`, optionally with a VXLAN
    /// port so slots on several hosts share its network.
    BrAdd(bridge::AddArgs),
    /// Delete a bridge.
    BrDel(bridge::DelArgs),
    /// Accept slot traffic in an iptables FORWARD chain whose policy is DROP (as Docker
    /// sets it); run by slot-os-forward.service.
    Forward(forward::Args),
    /// Show bridges.
    BrInfo(br_info::Args),
    /// Add a NIC with a static address to a slot: `net-add SLOT IPADDR/MASK NIC_NUMBER`.
    NetAdd(net::AddArgs),
    /// Delete a slot's NIC.
    NetDel(net::DelArgs),
    /// Show slots' NICs and addresses.
    NetInfo(net_info::Args),
    /// Bring a running slot's extra NICs up with their addresses (run by the slot's unit
    /// after every start).
    /// `net-apply host`: the config's Open vSwitch bridges made to exist in OVSDB (run at
    /// boot by slot-os-ovs.service).
    #[command(hide = true)]
    NetApply(net::ApplyArgs),
    /// Remove a stopped slot's Open vSwitch ports (run by the slot's unit after it stops).
    #[command(hide = true)]
    NetRelease(net::ReleaseArgs),
    /// Thaw the slots a killed capture (backup, export) left frozen (run by
    /// slot-os-backup@.service after every run, also a killed one).
    #[command(hide = true)]
    ThawLeftovers(backup::ThawLeftoversArgs),
    /// Make the NAT zone's bridge exist and wait until networkd has configured it (address,
    /// DHCP server), so a slot's first DHCP request is answered (run by each NAT slot's
    /// unit before it starts).
    #[command(hide = true)]
    ZoneReady(net::ZoneReadyArgs),
    /// Mount an overlay slot's root on its image directory (run by slot-os-root@NAME.service
    /// before the slot starts).
    #[command(hide = true)]
    RootMount(root::Args),
    /// Unmount an overlay slot's root (run by slot-os-root@NAME.service after it stops).
    #[command(hide = true)]
    RootUmount(root::Args),
    /// Make a slot's directory hold the disk limit of its config, or lift one the config
    /// no longer has (run by the slot's unit before every start).
    #[command(hide = true)]
    DiskApply(disk_apply::Args),
    /// Share a host NIC with the slots (enslave it to a bridge).
    NetNicAdd(bridge::NicAddArgs),
    /// Stop sharing a host NIC.
    NetNicDel(bridge::NicDelArgs),
    /// Print a shell completion script: `slot-os completions bash > /etc/bash_completion.d/slot-os`.
    Completions(docs::CompletionsArgs),
    /// Write the manual pages and completion scripts into DIR/man and DIR/completions
    /// (used by `make` and the packages).
    #[command(hide = true)]
    GenerateDocs(docs::GenerateDocsArgs),
}

impl Command {
    /// Commands that change one slot and do not log per slot themselves: the operation's
    /// name and the slot argument, for the journal entry written when they end.
    fn logged(&self) -> Option<(&'static str, &str)> {
        Some(match self {
            Command::Backup(a) => ("backup", &a.slot),
            Command::BackupAuto(a) => ("backup-auto", &a.slot),
            Command::BackupRestore(a) => ("backup-restore", &a.slot),
            Command::Export(a) => ("export", &a.slot),
            Command::Import(import::ImportArgs {
                name: Some(name), ..
            }) => ("import", name),
            Command::Rename(a) => ("rename", &a.old),
            Command::NetAdd(a) => ("net-add", &a.slot),
            Command::NetDel(a) => ("net-del", &a.slot),
            Command::Console(a) => ("console", &a.slot),
            _ => return None,
        })
    }

    fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        match self {
            Command::Check(a) => a.exec(ctx),
            Command::Render(a) => a.exec(ctx),
            Command::MakeBaseImage(a) => a.exec(ctx),
            Command::Build(a) => a.exec(ctx),
            Command::Create(a) => a.exec(ctx),
            Command::Remove(a) => a.exec(ctx),
            Command::List(a) => a.exec(ctx),
            Command::Start(t) => t.exec(ctx, Action::Start),
            Command::Stop(t) => t.exec(ctx, Action::Stop),
            Command::Suspend(t) => t.exec(ctx, Action::Suspend),
            Command::Resume(t) => t.exec(ctx, Action::Resume),
            Command::Autostart(a) => a.exec(ctx),
            Command::Resource(a) => a.exec(ctx),
            Command::Console(a) => a.exec(ctx),
            Command::Update(a) => a.exec(ctx),
            Command::UpdateProg(a) => a.exec(ctx),
            Command::UpdateDeploy(a) => a.exec(ctx),
            Command::Info(a) => a.exec(ctx),
            Command::Top(a) => a.exec(ctx),
            Command::Metrics(a) => a.exec(ctx),
            Command::Exec(a) => a.exec(ctx),
            Command::Rename(a) => a.exec(ctx),
            Command::Rebase(a) => a.exec(ctx),
            Command::Backup(a) => a.exec(ctx),
            Command::BackupAuto(a) => a.exec(ctx),
            Command::BackupList(a) => a.exec(ctx),
            Command::BackupDel(a) => a.exec(ctx),
            Command::BackupRestore(a) => a.exec(ctx),
            Command::Export(a) => a.exec(ctx),
            Command::Import(a) => a.exec(ctx),
            Command::Move(a) => a.exec(ctx),
            Command::MoveReceive(a) => a.exec(ctx),
            Command::BrAdd(a) => a.exec(ctx),
            Command::BrDel(a) => a.exec(ctx),
            Command::Forward(a) => a.exec(),
            Command::BrInfo(a) => a.exec(ctx),
            Command::NetAdd(a) => a.exec(ctx),
            Command::NetDel(a) => a.exec(ctx),
            Command::NetInfo(a) => a.exec(ctx),
            Command::NetApply(a) => a.exec(ctx),
            Command::NetRelease(a) => a.exec(),
            Command::ThawLeftovers(a) => a.exec(ctx),
            Command::ZoneReady(a) => a.exec(),
            Command::RootMount(a) => a.exec_mount(ctx),
            Command::RootUmount(a) => a.exec_umount(ctx),
            Command::DiskApply(a) => a.exec(ctx),
            Command::NetNicAdd(a) => a.exec(ctx),
            Command::NetNicDel(a) => a.exec(ctx),
            Command::Completions(a) => a.exec(Cli::command()),
            Command::GenerateDocs(a) => a.exec(Cli::command()),
        }
    }
}

impl Command {
    /// Commands a person runs: before them, moves a killed `slot-os` left are settled.
    /// Not the hidden ones (run by units and by `move` itself), nor those that only print.
    fn settles_moves(&self) -> bool {
        !matches!(
            self,
            Command::Move(_)
                | Command::MoveReceive(_)
                | Command::NetApply(_)
                | Command::NetRelease(_)
                | Command::ThawLeftovers(_)
                | Command::ZoneReady(_)
                | Command::Completions(_)
                | Command::GenerateDocs(_)
        )
    }
}

/// Moves interrupted on this host (as source or target) are settled by the next slot-os
/// that can take the helper lock at once; while a move runs, its own process holds it (the
/// source) or its receiver lock (the target), and nothing of it is touched.
fn settle_moves(ctx: &Ctx) {
    if !moves::any(&ctx.paths) {
        return;
    }
    let Ok(Some(_lock)) = lock::try_exclusive(&ctx.paths) else {
        return;
    };
    let Ok(bus) = Bus::system() else {
        return;
    };
    move_receive::settle_all(ctx, &bus);
    move_slot::settle_all(ctx, &bus);
}

impl Cli {
    /// Runs the command, and for the commands of [`Command::logged`] records how it ended
    /// in the journal.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let ctx = Ctx::new();
        if self.command.settles_moves() {
            settle_moves(&ctx);
        }
        let Some((op, arg)) = self.command.logged() else {
            return self.command.exec(&ctx);
        };
        // The slot's name as configured before the command ran (a rename changes it).
        let slot = targets::resolve_one(&ctx.load(), arg)
            .map(|s| s.name.clone())
            .unwrap_or_else(|_| arg.to_string());
        let op = op.to_string();
        let r = self.command.exec(&ctx);
        match &r {
            Ok(c) if *c == ExitCode::SUCCESS => journal::record(&op, &slot, true, "done"),
            Ok(_) => journal::record(&op, &slot, false, "failed"),
            Err(e) => journal::record(&op, &slot, false, &format!("failed: {e:#}")),
        }
        r
    }
}
