//! One module per subcommand, each with its own `run`.

pub mod autostart;
pub mod backup;
pub mod bridge;
pub mod build;
pub mod check;
pub mod console;
pub mod docs;
pub mod exec;
pub mod export;
pub mod forward;
pub mod info;
pub mod lifecycle;
pub mod list;
pub mod make_base_image;
pub mod net;
pub mod rename;
pub mod render;
pub mod resource;
pub mod running;
pub mod update;

use std::process::ExitCode;

use slot_config::{load_dir, Config, HostFacts, Paths};

use crate::cli::{Cli, Command};
use crate::{journal, targets};

/// What every command needs: where things are, what the host offers, the config.
pub struct Ctx {
    pub paths: Paths,
    pub facts: HostFacts,
}

impl Ctx {
    pub fn new() -> Self {
        let paths = Paths::from_env();
        let facts = HostFacts::read(&paths);
        Ctx { paths, facts }
    }
    pub fn load(&self) -> Config {
        load_dir(&self.paths, &self.facts)
    }
}

/// Commands that change one slot and do not log per slot themselves: the operation's
/// name and the slot argument, for the journal entry written when they end.
fn logged(cmd: &Command) -> Option<(&'static str, &str)> {
    Some(match cmd {
        Command::Backup { slot, .. } => ("backup", slot),
        Command::BackupAuto { slot, .. } => ("backup-auto", slot),
        Command::BackupRestore { slot, .. } => ("backup-restore", slot),
        Command::Export { slot, .. } => ("export", slot),
        Command::Import {
            name: Some(name), ..
        } => ("import", name),
        Command::Rename { old, .. } => ("rename", old),
        Command::NetAdd { slot, .. } => ("net-add", slot),
        Command::NetDel { slot, .. } => ("net-del", slot),
        Command::Console { slot, .. } => ("console", slot),
        _ => return None,
    })
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::new();
    let Some((op, arg)) = logged(&cli.command) else {
        return run(&ctx, cli.command);
    };
    // The slot's name as configured before the command ran (a rename changes it).
    let slot = targets::resolve_one(&ctx.load(), arg)
        .map(|s| s.name.clone())
        .unwrap_or_else(|_| arg.to_string());
    let op = op.to_string();
    let r = run(&ctx, cli.command);
    match &r {
        Ok(c) if *c == ExitCode::SUCCESS => journal::record(&op, &slot, true, "done"),
        Ok(_) => journal::record(&op, &slot, false, "failed"),
        Err(e) => journal::record(&op, &slot, false, &format!("failed: {e:#}")),
    }
    r
}

fn run(ctx: &Ctx, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check => check::run(ctx),
        Command::Render { slot } => render::run(ctx, &slot),
        Command::MakeBaseImage(a) => make_base_image::run(ctx, a),
        Command::Build { count, dry_run } => build::run(ctx, &count, dry_run),
        Command::List {
            continuous,
            json,
            name,
        } => list::run(ctx, continuous, json, name.as_deref()),
        Command::Start(t) => lifecycle::run(ctx, lifecycle::Action::Start, &t.targets),
        Command::Stop(t) => lifecycle::run(ctx, lifecycle::Action::Stop, &t.targets),
        Command::Suspend(t) => lifecycle::run(ctx, lifecycle::Action::Suspend, &t.targets),
        Command::Resume(t) => lifecycle::run(ctx, lifecycle::Action::Resume, &t.targets),
        Command::Autostart { args } => autostart::run(ctx, &args),
        Command::Resource(a) => resource::run(ctx, a),
        Command::Console { slot, login } => console::run(ctx, &slot, login),
        Command::Update { targets, dry_run } => update::run_update(ctx, &targets, dry_run),
        Command::UpdateProg { args } => update::run_prog(ctx, &args),
        Command::UpdateDeploy { args } => update::run_deploy(ctx, &args),
        Command::Info { slot, json } => info::run(ctx, &slot, json),
        Command::Exec { slot, command } => exec::run(ctx, &slot, &command),
        Command::Rename { old, new } => rename::run(ctx, &old, &new),
        Command::Backup { slot, name } => backup::backup(ctx, &slot, &name),
        Command::BackupAuto { slot, keep } => backup::auto(ctx, &slot, keep),
        Command::BackupList { json } => backup::list(ctx, json),
        Command::BackupDel { image } => backup::del(ctx, &image),
        Command::BackupRestore { slot, image } => backup::restore(ctx, &slot, &image),
        Command::Export { slot, file } => export::export(ctx, &slot, &file),
        Command::Import {
            file,
            name,
            trust_config,
        } => export::import(ctx, &file, name.as_deref(), trust_config),
        Command::BrAdd {
            number,
            address_or_device,
            vxlan,
            backend,
        } => bridge::add(
            ctx,
            &number,
            address_or_device.as_deref(),
            &vxlan,
            backend.as_deref(),
        ),
        Command::Forward { action } => forward::run(action),
        Command::BrDel { number } => bridge::del(ctx, &number),
        Command::BrInfo { json } => bridge::info(ctx, json),
        Command::NetAdd {
            slot,
            address,
            nic,
            bridge,
        } => net::add(ctx, &slot, &address, &nic, bridge.as_deref()),
        Command::NetDel { slot, nic } => net::del(ctx, &slot, &nic),
        Command::NetInfo { name, json } => net::info(ctx, name.as_deref(), json),
        Command::NetApply { slot } => net::apply(ctx, &slot),
        Command::NetRelease { slot } => net::release(&slot),
        Command::ThawLeftovers { .. } => crate::freeze::thaw_leftovers(ctx),
        Command::ZoneReady => net::zone_ready(),
        Command::NetNicAdd { device, bridge } => bridge::nic_add(ctx, &device, bridge),
        Command::NetNicDel { device } => bridge::nic_del(ctx, &device),
        Command::Completions { shell } => docs::completions(shell),
        Command::GenerateDocs { dir } => docs::generate(&dir),
    }
}
