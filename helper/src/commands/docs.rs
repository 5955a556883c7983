//! Manual pages and shell completions, generated from the clap model and from
//! `slot_config::keys`, so they list exactly what the code accepts.
//!
//! `slot-os completions SHELL` prints one completion script (as rustup does);
//! `slot-os generate-docs DIR` (hidden: used by `make` and the packages) writes
//! `DIR/man/{slot-os.1,slot-os.toml.5,slot-os-generator.8}` and
//! `DIR/completions/{slot-os.bash,_slot-os,slot-os.fish}`.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;
use clap_mangen::Man;
use slot_config::keys::{File, KeyDoc, KEYS, SECTIONS};

const BIN: &str = "slot-os";
const MANUAL: &str = "slot-os manual";

/// Hand-written: the generator has no clap model (its only arguments are systemd's).
const GENERATOR_PAGE: &str = include_str!("../../../docs/slot-os-generator.8");

fn completions(cli: &mut clap::Command, shell: Shell) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(shell, cli, BIN, &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

fn generate(cli: &clap::Command, dir: &Path) -> anyhow::Result<ExitCode> {
    let man = dir.join("man");
    let comp = dir.join("completions");
    for d in [&man, &comp] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut files = vec![
        (
            man.join("slot-os.1"),
            man_slot_os(cli.clone())?.into_bytes(),
        ),
        (man.join("slot-os.toml.5"), man_config().into_bytes()),
        (
            man.join("slot-os-generator.8"),
            source_line(GENERATOR_PAGE).into_bytes(),
        ),
    ];
    for (shell, name) in [
        (Shell::Bash, "slot-os.bash"),
        (Shell::Zsh, "_slot-os"),
        (Shell::Fish, "slot-os.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cli.clone(), BIN, &mut out);
        files.push((comp.join(name), out));
    }
    for (path, text) in files {
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn version() -> String {
    format!("{BIN} {}", env!("CARGO_PKG_VERSION"))
}

/// The hand-written page names no version; give it the one of this build.
fn source_line(page: &str) -> String {
    page.replace("@VERSION@", &version())
}

fn roff_of(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    f(&mut buf).context("rendering the manual page")?;
    String::from_utf8(buf).context("the manual page is not UTF-8")
}

/// Drops the `.SH` heading lines of a clap_mangen section, keeping its body.
fn body(section: String) -> String {
    section
        .lines()
        .filter(|l| !l.starts_with(".SH "))
        .fold(String::new(), |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        })
}

/// slot-os(1): the top-level page with every visible subcommand (its synopsis,
/// description and options) in one COMMANDS section, as rustup's and git's single pages.
fn man_slot_os(mut cmd: clap::Command) -> anyhow::Result<String> {
    cmd.build();
    let man = Man::new(cmd.clone()).source(version()).manual(MANUAL);
    let mut s = String::new();
    s.push_str(&roff_of(|w| man.render_title(w))?);
    s.push_str(NO_HYPHENATION);
    s.push_str(&roff_of(|w| man.render_name_section(w))?);
    s.push_str(&roff_of(|w| man.render_synopsis_section(w))?);
    s.push_str(DESCRIPTION);
    s.push_str(&roff_of(|w| man.render_options_section(w))?);
    s.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let m = Man::new(sub.clone());
        let _ = writeln!(s, ".SS \"{BIN} {}\"", sub.get_name());
        s.push_str(&body(roff_of(|w| m.render_synopsis_section(w))?));
        s.push_str(".PP\n");
        s.push_str(&body(roff_of(|w| m.render_description_section(w))?));
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            s.push_str(&body(roff_of(|w| m.render_options_section(w))?));
        }
    }
    s.push_str(TRAILER);
    Ok(s)
}

/// Ragged right and no hyphenation: paths and unit names stay whole and copyable.
const NO_HYPHENATION: &str = ".ad l\n.nh\n";

const DESCRIPTION: &str = r#".SH DESCRIPTION
\fBslot-os\fR divides one Linux host into \fIslots\fR: full-OS system containers, each
usable like a separate machine. Slots are plain \fBsystemd-nspawn\fR(1) machines.
\fBslot-os\fR edits \fI/etc/slot-os/*.toml\fR (the only source of truth, see
\fBslot-os.toml\fR(5)), asks systemd to reload so that \fBslot-os-generator\fR(8) turns
the files into units, and drives systemd, systemd-machined and systemd-networkd over D-Bus.
Every change is written back to the files, so the next boot reproduces it.
.PP
A slot is named by number (\fB0\fR), by name (\fBslot00\fR), or as \fBall\fR.
Fulcon's " : " separator (\fBupdate-prog all : CMD\fR) is accepted, and so is "--".
"#;

const TRAILER: &str = r#".SH EXIT STATUS
.TP
\fB0\fR
Success.
.TP
\fB1\fR
The operation failed (for operations over several slots: at least one of them).
.TP
\fB2\fR
Bad usage or bad input; nothing was changed.
.PP
\fBexec\fR exits with the exit status of the command it ran.
.SH ENVIRONMENT
.TP
\fBSLOT_OS_ROOT\fR
Moves every path slot-os reads or writes (configuration, /run, state) below this directory.
For tests; unset means the real system paths.
.TP
\fBNO_COLOR\fR
Set: no colours in the output.
.SH FILES
.TP
\fI/etc/slot-os/slot-os.toml\fR
Host-wide settings.
.TP
\fI/etc/slot-os/NAME.toml\fR
One slot named NAME.
.TP
\fI/var/lib/machines/\fR
Slot images (machined's image directory).
.TP
\fI/var/lib/slot-os/backups/\fR
Backups.
.TP
\fI/run/slot-os/\fR
The lock that keeps two \fBslot-os\fR processes from changing the same files at once.
.SH SEE ALSO
\fBslot-os.toml\fR(5), \fBslot-os-generator\fR(8), \fBsystemd-nspawn\fR(1),
\fBmachinectl\fR(1), \fBsystemctl\fR(1), \fBnetworkctl\fR(1), \fBsystemd.nspawn\fR(5)
"#;

/// Escapes text for a roff text line: backslashes, and a leading `.` or `'` that would
/// make the line a request.
fn esc(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with(['.', '\'']) {
        format!("\\&{s}")
    } else {
        s
    }
}

fn section_heading(file: File, section: &str) -> String {
    let table = match (file, section) {
        (_, "") => return String::new(),
        (File::Host, "defaults" | "storage" | "network" | "backup") => format!("[{section}]"),
        _ => format!("[[{section}]]"),
    };
    format!(".SS \"{table}\"\n")
}

fn key_entry(r: &KeyDoc) -> String {
    let mut s = format!(
        ".TP\n\\fB{}\\fR\n{}\n.br\nType: {}\n.br\nDefault: {}\n",
        esc(r.key),
        esc(r.description),
        esc(r.ty),
        esc(r.default),
    );
    if r.maps_to != "-" {
        let _ = write!(s, ".br\nGenerates: {}\n", esc(r.maps_to));
    }
    s
}

/// slot-os.toml(5): every key of both kinds of file, from `slot_config::keys`.
fn man_config() -> String {
    let mut s = format!(
        ".TH SLOT-OS.TOML 5 \"\" \"{}\" \"{MANUAL}\"\n{NO_HYPHENATION}{}",
        version(),
        CONFIG_INTRO
    );
    for (file, title) in [
        (File::Host, "HOST FILE: /etc/slot-os/slot-os.toml"),
        (File::Slot, "SLOT FILES: /etc/slot-os/NAME.toml"),
    ] {
        let _ = writeln!(s, ".SH \"{title}\"");
        s.push_str(match file {
            File::Host => HOST_INTRO,
            File::Slot => SLOT_INTRO,
        });
        for &(f, section) in SECTIONS.iter().filter(|(f, _)| *f == file) {
            s.push_str(&section_heading(f, section));
            for r in KEYS.iter().filter(|r| r.file == f && r.section == section) {
                s.push_str(&key_entry(r));
            }
        }
    }
    s.push_str(CONFIG_TRAILER);
    s
}

const CONFIG_INTRO: &str = r#".SH NAME
slot-os.toml \- slot-os configuration: host-wide settings and one file per slot
.SH SYNOPSIS
\fI/etc/slot-os/slot-os.toml\fR
.br
\fI/etc/slot-os/NAME.toml\fR
.SH DESCRIPTION
The TOML files in \fI/etc/slot-os\fR are the only source of truth of slot-os: what they
say is what \fBslot-os-generator\fR(8) turns into \fB.nspawn\fR files, systemd-networkd
files and unit drop-ins at every boot and \fBdaemon-reload\fR. \fBslot-os\fR(1) writes
its changes back into them (keeping comments and layout); they may equally be edited by
hand or by a configuration manager.
.PP
\fIslot-os.toml\fR holds host-wide settings. Every other \fINAME.toml\fR is one slot
named \fINAME\fR (\fB[a-z0-9][a-z0-9-]*\fR, at most 64 characters). Unknown keys and
wrong values are errors: \fBslot-os check\fR lists every problem of every file, and the
generator skips a slot file with any problem (a broken \fIslot-os.toml\fR falls back to the
built-in defaults) and logs why.
.PP
For each key below: its TOML type, its default when absent, and the generated setting
it becomes. Unit drop-ins are written to
\fI/run/systemd/generator/systemd-nspawn@NAME.service.d/50-slot-os.conf\fR, \fB.nspawn\fR
files to \fI/run/systemd/nspawn/NAME.nspawn\fR, networkd files to
\fI/run/systemd/network/\fR.
"#;

const HOST_INTRO: &str = r#"Top-level tables of the host file:
"#;

const SLOT_INTRO: &str = r#"Top-level keys of a slot file (every key is optional, except \fBnumber\fR for a
slot not named \fBslotNN\fR):
"#;

const CONFIG_TRAILER: &str = r#".SH EXAMPLE
.EX
# /etc/slot-os/slot-os.toml
[defaults]
memory = "1G"

[[bridge]]
number = 1
address = ["192.168.18.1/24"]

# /etc/slot-os/slot00.toml
autostart = true
cpu_quota = "50%"

[[nic]]
number = 1
bridge = 1
address = ["192.168.18.2/24"]
.EE
.PP
After editing by hand: \fBslot-os check\fR, then \fBsystemctl daemon-reload\fR and
\fBnetworkctl reload\fR.
.SH NOTES
CPUQuota=, AllowedCPUs= and MemoryMax= are enforced by the kernel only on a cgroup-v2 host.
.SH SEE ALSO
\fBslot-os\fR(1), \fBslot-os-generator\fR(8), \fBsystemd.nspawn\fR(5),
\fBsystemd.resource-control\fR(5), \fBsystemd.network\fR(5), \fBsystemd.netdev\fR(5)
"#;

// These two take the command line's model from the caller: the list of commands is above
// them (cli.rs), and they describe it.

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    #[arg(value_name = "bash | zsh | fish | elvish | powershell")]
    pub shell: clap_complete::Shell,
}

impl CompletionsArgs {
    pub fn exec(self, mut cli: clap::Command) -> anyhow::Result<ExitCode> {
        completions(&mut cli, self.shell)
    }
}

#[derive(clap::Args, Debug)]
pub struct GenerateDocsArgs {
    pub dir: PathBuf,
}

impl GenerateDocsArgs {
    pub fn exec(self, cli: clap::Command) -> anyhow::Result<ExitCode> {
        generate(&cli, &self.dir)
    }
}
