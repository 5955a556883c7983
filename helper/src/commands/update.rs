//! `update`, `update-prog` and `update-deploy`: the same action across many slots, output
//! prefixed by slot, then a summary of results; exit 1 if any failed. `update` and
//! `update-prog` run in at most `-j N` slots at once (default: one per CPU).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use slot_config::Slot;

use super::Ctx;
use crate::config::targets;
use crate::dbus::running;
use crate::dbus::Bus;
use crate::error::bad_input;
use crate::sys::notify;
use crate::sys::nsexec;
use crate::sys::nsexec::Leader;

/// One slot's outcome: exit code of the command, or why it could not run.
type Outcome = Result<i32, String>;

fn summary(rows: &[(&Slot, Outcome)]) -> ExitCode {
    println!("\n{:<16} RESULT", "SLOT");
    let mut failed = 0;
    for (s, r) in rows {
        match r {
            Ok(0) => println!("{:<16} ok (exit 0)", s.name),
            Ok(c) => {
                failed += 1;
                println!("{:<16} FAILED (exit {c})", s.name)
            }
            Err(e) => {
                failed += 1;
                println!("{:<16} FAILED ({e})", s.name)
            }
        }
    }
    println!(
        "{} slot(s), {} ok, {failed} failed",
        rows.len(),
        rows.len() - failed
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Copies `from` to stdout line by line, each line prefixed with `prefix`.
fn prefix_lines(from: impl Read, prefix: &str, out: &Mutex<()>, to_stderr: bool) {
    for line in BufReader::new(from).split(b'\n').map_while(Result::ok) {
        let _g = out.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&line);
        if to_stderr {
            let _ = writeln!(std::io::stderr(), "{prefix}: {text}");
        } else {
            let _ = writeln!(std::io::stdout(), "{prefix}: {text}");
        }
    }
}

/// How many slots `update`/`update-prog` run in at once unless `-j` says: one per CPU
/// (an upgrade is disk, network and CPU work inside the slot; more at once only slows each).
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `argv_for(slot)` in every slot, in at most `jobs` slots at once (`0`: all at once),
/// slots taken in the order given.
fn run_everywhere(
    bus: &Bus,
    slots: &[&Slot],
    jobs: Option<usize>,
    argv_for: impl Fn(&Slot, u32) -> Result<Vec<String>, String> + Sync,
) -> anyhow::Result<ExitCode> {
    let leaders = running::leaders(bus, slots)?;
    let workers = match jobs.unwrap_or_else(default_jobs) {
        0 => slots.len(),
        j => j.min(slots.len()),
    }
    .max(1);
    let out = Mutex::new(());
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; slots.len()]);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((s, leader)) = slots.get(i).zip(leaders.get(i)) else {
                    break;
                };
                let r = run_one(s, *leader, &argv_for, &out);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
                notify::progress(&format!(
                    "{n} of {} slots done, last {}",
                    slots.len(),
                    s.name
                ));
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let rows: Vec<(&Slot, Outcome)> = slots
        .iter()
        .copied()
        .zip(results)
        .map(|(s, r)| (s, r.unwrap_or_else(|| Err("internal error".into()))))
        .collect();
    let failed = rows.iter().filter(|(_, r)| !matches!(r, Ok(0))).count();
    notify::done(&format!("{} slots done, {failed} failed", rows.len()));
    Ok(summary(&rows))
}

/// Runs the command in one slot, its output prefixed by the slot's name.
fn run_one(
    s: &Slot,
    leader: Option<u32>,
    argv_for: &(impl Fn(&Slot, u32) -> Result<Vec<String>, String> + Sync),
    out: &Mutex<()>,
) -> Outcome {
    let pid = leader.ok_or_else(|| "not running".to_string())?;
    let leader = Leader::pin(pid, || Ok(still_leader(s, pid))).map_err(|e| format!("{e:#}"))?;
    let argv = argv_for(s, leader.pid())?;
    // Close-on-exec: a child another slot's thread spawns must not hold our write ends.
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (so_r, so_w) = pipe()?;
    let (se_r, se_w) = pipe()?;
    let stdin = std::fs::File::open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?
        .into();
    std::thread::scope(|inner| {
        inner.spawn(|| prefix_lines(std::fs::File::from(so_r), &s.name, out, false));
        inner.spawn(|| prefix_lines(std::fs::File::from(se_r), &s.name, out, true));
        // The write ends are moved in and closed when the command is done (or could not
        // start), so the readers above reach EOF.
        if s.boot {
            let stdio = nsexec::Stdio3 {
                stdin,
                stdout: so_w,
                stderr: se_w,
            };
            nsexec::run_in_slot_manager(&leader, &argv, stdio).map_err(|e| format!("{e:#}"))
        } else {
            let mut cmd = nsexec::command(&leader, &argv).map_err(|e| format!("{e:#}"))?;
            cmd.stdin(Stdio::from(stdin))
                .stdout(Stdio::from(so_w))
                .stderr(Stdio::from(se_w));
            let st = cmd
                .status()
                .map_err(|e| format!("cannot run {:?}: {e}", argv[0]))?;
            drop(cmd);
            Ok(nsexec::exit_code(&st))
        }
    })
}

/// machined still names `pid` as the slot's leader (on a connection of this thread's own).
fn still_leader(s: &Slot, pid: u32) -> bool {
    Bus::system()
        .and_then(|b| running::leaders(&b, &[s]))
        .is_ok_and(|mut l| l.pop().flatten() == Some(pid))
}

/// `update-prog (all | N...) : CMD` — a single argument with spaces runs through sh -c.
pub fn run_prog(ctx: &Ctx, args: &[String], jobs: Option<usize>) -> anyhow::Result<ExitCode> {
    let (t, cmd) = targets::split_colon(args).ok_or_else(|| {
        bad_input("separate the slots from the command with ` : ` (update-prog all : CMD)")
    })?;
    if cmd.is_empty() {
        return Err(bad_input("no command given after ` : `"));
    }
    let cfg = ctx.load();
    let slots = targets::resolve(&cfg, &t)?;
    let argv: Vec<String> = if cmd.len() == 1 && cmd[0].contains(char::is_whitespace) {
        vec!["/bin/sh".into(), "-c".into(), cmd[0].clone()]
    } else {
        cmd
    };
    let bus = Bus::system()?;
    run_everywhere(&bus, &slots, jobs, |_, _| Ok(argv.clone()))
}

/// The upgrade command of the slot's own distribution, from its os-release.
pub fn upgrade_command(os_release: &str) -> Option<&'static str> {
    let field = |k: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let ids = format!("{} {}", field("ID"), field("ID_LIKE"));
    let has = |w: &str| ids.split_whitespace().any(|x| x == w);
    if has("debian") || has("ubuntu") {
        // --error-on=any: an unreachable repository fails the update instead of a warning
        // followed by an "upgrade" against stale lists that reports success.
        Some("apt-get update --error-on=any && DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confold upgrade")
    } else if has("fedora") || has("rhel") || has("centos") {
        Some("if command -v dnf >/dev/null; then dnf -y upgrade; else yum -y update; fi")
    } else if has("suse") || has("opensuse") {
        Some("zypper --non-interactive update")
    } else if has("arch") {
        Some("pacman -Syu --noconfirm")
    } else if has("alpine") {
        Some("apk update && apk upgrade")
    } else {
        None
    }
}

pub fn run_update(
    ctx: &Ctx,
    t: &[String],
    dry_run: bool,
    jobs: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let slots = targets::resolve(&cfg, t)?;
    let bus = Bus::system()?;
    let pick = |s: &Slot, leader: u32| -> Result<Vec<String>, String> {
        // Read inside the slot's root: its os-release may be a symlink to a host file,
        // a FIFO or /dev/zero.
        let root = crate::sys::inroot::Root::open_process_root(leader)
            .map_err(|e| format!("cannot open the slot's root: {e}"))?;
        let read = |rel: &str| root.read_file(rel, 64 * 1024);
        let bytes = match read("etc/os-release") {
            Ok(Some(b)) => b,
            _ => read("usr/lib/os-release")
                .map_err(|e| format!("cannot read the slot's os-release: {e}"))?
                .ok_or_else(|| "the slot has no os-release".to_string())?,
        };
        let text = String::from_utf8_lossy(&bytes);
        let cmd = upgrade_command(&text)
            .ok_or_else(|| format!("{}: unknown distribution, no package manager known", s.name))?;
        if dry_run {
            Ok(vec!["/bin/echo".into(), format!("would run: {cmd}")])
        } else {
            Ok(vec!["/bin/sh".into(), "-c".into(), cmd.into()])
        }
    };
    run_everywhere(&bus, &slots, jobs, pick)
}

/// `update-deploy N... : SRC DEST` — machined CopyToMachine into each running slot.
pub fn run_deploy(ctx: &Ctx, args: &[String]) -> anyhow::Result<ExitCode> {
    let (t, rest) = targets::split_colon(args).ok_or_else(|| {
        bad_input(
            "separate the slots from the files with ` : ` (update-deploy 0 1 : SRC_FILE DEST_PATH)",
        )
    })?;
    let [src, dest] = rest.as_slice() else {
        return Err(bad_input("give exactly SRC_FILE DEST_PATH after ` : `"));
    };
    let src_abs = std::fs::canonicalize(src).map_err(|e| bad_input(format!("{src}: {e}")))?;
    if !dest.starts_with('/') {
        return Err(bad_input(format!(
            "{dest}: the destination must be an absolute path inside the slot"
        )));
    }
    let cfg = ctx.load();
    let slots = targets::resolve(&cfg, &t)?;
    let bus = Bus::system()?;
    let leaders = running::leaders(&bus, &slots)?;
    // A directory destination gets the file under its own name, like cp.
    let rows: Vec<(&Slot, Outcome)> = slots
        .iter()
        .zip(leaders)
        .map(|(s, leader)| {
            let r = match leader {
                None => Err("not running".to_string()),
                Some(l) => {
                    let inside = format!("/proc/{l}/root{dest}");
                    let target = if std::path::Path::new(&inside).is_dir() {
                        format!(
                            "{}/{}",
                            dest.trim_end_matches('/'),
                            src_abs
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        )
                    } else {
                        dest.clone()
                    };
                    bus.copy_to_machine(&s.name, &src_abs.to_string_lossy(), &target)
                        .map(|()| {
                            println!("{}: copied {} to {target}", s.name, src_abs.display());
                            0
                        })
                        .map_err(|e| format!("{e:#}"))
                }
            };
            (*s, r)
        })
        .collect();
    Ok(summary(&rows))
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Print the command each slot would run, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Update at most N slots at once (default: one per CPU; 0: all at once).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    #[arg(required = true, value_name = "all | NUMBER | NAME")]
    pub targets: Vec<String>,
}

impl UpdateArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run_update(ctx, &self.targets, self.dry_run, self.jobs)
    }
}

#[derive(clap::Args, Debug)]
pub struct ProgArgs {
    /// Run in at most N slots at once (default: one per CPU; 0: all at once). Give it
    /// before the slots: `update-prog -j 4 all : CMD`.
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
    pub args: Vec<String>,
}

impl ProgArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run_prog(ctx, &self.args, self.jobs)
    }
}

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
    pub args: Vec<String>,
}

impl DeployArgs {
    pub fn exec(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        run_deploy(ctx, &self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::upgrade_command;
    use clap::Parser;

    #[derive(Parser)]
    struct Prog {
        #[command(flatten)]
        args: super::ProgArgs,
    }

    #[test]
    fn jobs_before_the_slots_and_the_command_left_alone() {
        let p = Prog::try_parse_from(["x", "-j", "4", "all", ":", "make", "-j", "8"]).unwrap();
        assert_eq!(p.args.jobs, Some(4));
        assert_eq!(p.args.args, ["all", ":", "make", "-j", "8"]);
        let p = Prog::try_parse_from(["x", "all", ":", "ls", "-l"]).unwrap();
        assert_eq!(p.args.jobs, None);
        assert_eq!(p.args.args, ["all", ":", "ls", "-l"]);
        assert!(Prog::try_parse_from(["x", "-j", "four", "all", ":", "true"]).is_err());
    }

    #[test]
    fn picks_package_manager() {
        assert!(upgrade_command("ID=debian\n")
            .unwrap()
            .starts_with("apt-get"));
        assert!(upgrade_command("ID=ubuntu\nID_LIKE=debian\n")
            .unwrap()
            .starts_with("apt-get"));
        assert!(upgrade_command("ID=\"centos\"\nID_LIKE=\"rhel fedora\"\n")
            .unwrap()
            .contains("yum"));
        assert!(
            upgrade_command("ID=opensuse-leap\nID_LIKE=\"suse opensuse\"\n")
                .unwrap()
                .starts_with("zypper")
        );
        assert_eq!(upgrade_command("ID=plan9\n"), None);
    }
}
