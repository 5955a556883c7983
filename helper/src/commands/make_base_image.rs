//! `make-base-image`: the image every slot is cloned from, made from the host's own root
//! filesystem (Fulcon), a root filesystem tarball, or a distribution bootstrap.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use slot_config::names::check_slot_name;

use super::Ctx;
use crate::error::bad_input;
use crate::{image, lock};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Make the image from a root filesystem tarball instead of the host.
    #[arg(long, value_name = "FILE", conflicts_with = "bootstrap")]
    pub from_tar: Option<PathBuf>,
    /// Make the image by bootstrapping a Debian suite with debootstrap, e.g. bookworm.
    #[arg(long, value_name = "SUITE")]
    pub bootstrap: Option<String>,
    /// Mirror for --bootstrap.
    #[arg(long, requires = "bootstrap")]
    pub mirror: Option<String>,
    /// Name of the image (default: `image` in slot-os.toml, "slot-os").
    #[arg(long)]
    pub name: Option<String>,
}

/// Paths (relative to the root) that are not part of an image: API file systems, other
/// machines, slot-os's own state and config, caches and logs.
const EXCLUDES: &[&str] = &[
    "./proc",
    "./sys",
    "./dev",
    "./run",
    "./tmp",
    "./var/tmp",
    "./var/lib/machines",
    "./var/lib/slot-os",
    "./etc/slot-os",
    "./var/cache/apt/archives/*.deb",
    "./var/cache/apt/*.bin",
    "./var/log/journal/*",
    "./mnt/*",
    "./media/*",
    "./lost+found",
    "./swapfile",
    "./var/lib/dbus/machine-id",
];

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load();
    let name = a.name.clone().unwrap_or_else(|| cfg.host.image.clone());
    check_slot_name(&name).map_err(|e| bad_input(e.replace("slot name", "image name")))?;
    if let Some(t) = &a.from_tar {
        if !t.is_file() {
            return Err(bad_input(format!("{}: no such file", t.display())));
        }
    }
    let _lock = lock::exclusive(&ctx.paths)?;
    let machines = ctx.paths.under(&cfg.host.machines_dir);
    std::fs::create_dir_all(&machines)
        .with_context(|| format!("creating {}", machines.display()))?;
    let dest = machines.join(&name);
    let tmp = image::sibling(&dest, ".slot-os-new-");
    image::remove_tree(&tmp)?;
    let subvolume = image::create_image_dir(&tmp)?;

    let started = Instant::now();
    let made = if let Some(tar) = &a.from_tar {
        extract_tar(tar, &tmp)
    } else if let Some(suite) = &a.bootstrap {
        bootstrap(suite, a.mirror.as_deref(), &tmp)
    } else {
        copy_host(ctx.paths.root(), &tmp)
    };
    let prepared = made.and_then(|bytes| {
        image::make_mount_points(&tmp)?;
        std::fs::create_dir_all(tmp.join("etc/slot-os"))?;
        image::set_identity(&tmp, &name, None)?;
        let r = crate::image_prep::prepare(&tmp)?;
        for c in &r.changes {
            println!("image {name}: {c}");
        }
        for w in &r.warnings {
            eprintln!("slot-os: warning: image {name}: {w}");
        }
        Ok(bytes)
    });
    let bytes = match prepared {
        Ok(b) => b,
        Err(e) => {
            let _ = image::remove_tree(&tmp);
            return Err(e.context(format!("making image {name}; nothing was changed")));
        }
    };
    image::swap_into_place(&tmp, &dest)?;
    println!(
        "image {name} made at {}{} ({:.1} MB in {:.1} s)",
        dest.display(),
        if subvolume { " (btrfs subvolume)" } else { "" },
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn tar_extract_cmd(dir: &Path) -> Command {
    image::tar_extract(dir, "-".as_ref())
}

/// Streams `tar -c` of the root into `tar -x` of the new image through this process,
/// counting bytes for the progress line.
fn copy_host(root: &Path, dest: &Path) -> anyhow::Result<u64> {
    let mut create = image::tar_create(root);
    create.arg("--one-file-system");
    for x in EXCLUDES {
        create.arg(format!("--exclude={x}"));
    }
    create
        .arg(".")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut src = create
        .spawn()
        .context("running tar (is GNU tar installed?)")?;
    let mut dst = tar_extract_cmd(dest)
        .stdin(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let bytes = image::pump(
        src.stdout.take().context("tar stdout")?,
        dst.stdin.take().context("tar stdin")?,
        "copied",
        |_| {},
    )?;
    let mut err = String::new();
    if let Some(mut e) = src.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let s1 = src.wait()?;
    let s2 = dst.wait()?;
    // GNU tar exits 1 for "file changed as we read it", which a live root always has.
    if !(s1.success() || s1.code() == Some(1)) {
        bail!("tar of the host root failed ({s1}): {}", err.trim());
    }
    if !s2.success() {
        bail!("unpacking into {} failed ({s2})", dest.display());
    }
    Ok(bytes)
}

fn extract_tar(file: &Path, dest: &Path) -> anyhow::Result<u64> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // GNU tar recognises gzip/xz/zstd by content when reading a file.
    let st = image::tar_extract(dest, file.as_os_str())
        .status()
        .context("running tar")?;
    if !st.success() {
        bail!("unpacking {} failed ({st})", file.display());
    }
    Ok(len)
}

fn bootstrap(suite: &str, mirror: Option<&str>, dest: &Path) -> anyhow::Result<u64> {
    let mut c = Command::new("debootstrap");
    c.args([
        "--variant=minbase",
        "--include=systemd,systemd-sysv,dbus,iproute2,udev",
    ])
    .arg(suite)
    .arg(dest);
    if let Some(m) = mirror {
        c.arg(m);
    }
    let st = c
        .status()
        .context("running debootstrap (install the debootstrap package)")?;
    if !st.success() {
        bail!("debootstrap {suite} failed ({st})");
    }
    Ok(0)
}
