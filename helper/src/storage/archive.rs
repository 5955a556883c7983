//! Root file systems as tar streams: `tar` with the flags a root needs, zstd on the way,
//! the compressed stream hashed (SHA-256) as it passes, progress shown while it runs.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use super::tarcheck;
use crate::sys::{notify, tool};

/// GNU tar flags that keep what a root file system needs: numeric owners (including
/// user-namespace shifted UIDs), xattrs of every namespace (file capabilities), ACLs.
const TAR_KEEP: [&str; 4] = [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--acls",
];

/// `tar --create` of `dir` to stdout; the caller adds excludes, then ".".
pub fn tar_create(dir: &Path) -> Command {
    let mut c = tool("tar");
    c.args(["--create", "--file=-", "--sparse"])
        .args(TAR_KEEP)
        .arg("--directory")
        .arg(dir);
    c
}

/// `tar --extract` of `file` ("-" = stdin) into `dir`, owners and modes as stored.
/// From a file GNU tar recognises gzip/xz/zstd by content.
pub fn tar_extract(dir: &Path, file: &std::ffi::OsStr) -> Command {
    let mut c = tool("tar");
    c.arg("--extract")
        .arg("--file")
        .arg(file)
        .args(["--same-owner", "--same-permissions"])
        .args(TAR_KEEP)
        .arg("--directory")
        .arg(dir);
    c
}

/// Copies `from` into `to`, handing every chunk to `each` (a hasher, say), with a
/// "LABEL N MB (R MB/s)" progress line on stderr when it is a terminal, and as the unit's
/// status when run by one.
pub fn pump(
    mut from: impl std::io::Read,
    mut to: impl Write,
    label: &str,
    mut each: impl FnMut(&[u8]),
) -> anyhow::Result<u64> {
    use std::io::IsTerminal;
    use std::time::{Duration, Instant};
    let tty = std::io::stderr().is_terminal();
    let unit = notify::active();
    let start = Instant::now();
    let mut last = start;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        each(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
        if (tty || unit) && last.elapsed() > Duration::from_millis(if tty { 200 } else { 1000 }) {
            last = Instant::now();
            let secs = start.elapsed().as_secs_f64().max(0.001);
            let line = format!(
                "{label} {:.0} MB ({:.0} MB/s)",
                total as f64 / 1e6,
                total as f64 / 1e6 / secs
            );
            if tty {
                eprint!("\r  {line}   ");
            }
            if unit {
                notify::progress(&line);
            }
        }
    }
    if tty && total > 0 {
        eprintln!();
    }
    Ok(total)
}

/// A prepared `tar --create` piped through `zstd -T0` into `out`, hashing the compressed stream as
/// it is written: the data passes through once, straight to its destination.
pub fn tar_zstd(tar: Command, out: &Path, label: &str) -> anyhow::Result<(u64, String)> {
    // Root only from the first byte: a backup or export holds every file of a slot.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let (total, digest) = tar_zstd_into(tar, &mut f, label)?;
    f.sync_all()?;
    Ok((total, hex(&digest)))
}

/// [`tar_zstd`] into any writer (a file, a pipe): returns the compressed size and SHA-256.
pub fn tar_zstd_into(
    mut tar: Command,
    out: &mut dyn Write,
    label: &str,
) -> anyhow::Result<(u64, [u8; 32])> {
    let mut tar = tar.stdout(Stdio::piped()).spawn().context("running tar")?;
    let mut zstd = tool("zstd")
        .args(["-T0", "-3", "-q", "-c"])
        .stdin(tar.stdout.take().context("tar stdout")?)
        .stdout(Stdio::piped())
        .spawn()
        .context("running zstd (install the zstd package)")?;
    let mut from = zstd.stdout.take().context("zstd stdout")?;
    let mut h = Sha256::new();
    let pumped = pump(&mut from, out, label, |c| h.update(c));
    if pumped.is_err() {
        // The reader went away (a closed pipe): tar and zstd must not wait for it.
        let _ = zstd.kill();
        let _ = tar.kill();
    }
    let (t, z) = (tar.wait()?, zstd.wait()?);
    let total = pumped?;
    if !t.success() || !z.success() {
        bail!("tar ({t}) or zstd ({z}) failed");
    }
    Ok((total, h.finalize().into()))
}

pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `zstd -d | tar -x` of `file` into `dest`, the compressed stream fed (and hashed) by
/// us on the way and every member checked before tar sees it (`tarcheck`); returns its
/// SHA-256, or why unpacking failed.
pub fn untar_zstd(file: &Path, dest: &Path) -> anyhow::Result<String> {
    let mut z = tool("zstd")
        .args(["-d", "-q", "-c", "-T0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running zstd")?;
    let mut t = tar_extract(dest, "-".as_ref())
        .stdin(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let zin = z.stdin.take().context("zstd stdin")?;
    // A damaged stream makes zstd stop reading: the broken pipe is reported below.
    let feeder = std::thread::spawn(move || {
        let mut h = Sha256::new();
        let pumped = pump(f, zin, "restored", |c| h.update(c));
        (pumped, format!("{:x}", h.finalize()))
    });
    let checked = tarcheck::copy_checked(
        z.stdout.take().context("zstd stdout")?,
        t.stdin.take().context("tar stdin")?,
    );
    if checked.is_err() {
        // Nothing more reaches tar; zstd may be blocked writing to us.
        let _ = z.kill();
    }
    let (zs, ts) = (z.wait()?, t.wait()?);
    let (pumped, sum) = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("reading {} failed", file.display()))?;
    refused(checked, file)?;
    if pumped.is_err() || !zs.success() || !ts.success() {
        bail!(
            "unpacking {} failed (zstd {zs}, tar {ts}); SHA-256 of what was read: {sum}",
            file.display()
        );
    }
    Ok(sum)
}

/// A member refused by the check is bad input (the archive was crafted, nothing is kept);
/// a read or write error is a failure.
fn refused(checked: Result<u64, tarcheck::Refused>, file: &Path) -> anyhow::Result<u64> {
    use tarcheck::Refused;
    match checked {
        Ok(n) => Ok(n),
        Err(e @ (Refused::Read(_) | Refused::Write(_))) => {
            Err(anyhow::Error::new(e).context(format!("unpacking {}", file.display())))
        }
        Err(e) => Err(crate::error::bad_input(format!(
            "{}: {e}: refused (no member may name a path outside the archive's tree)",
            file.display()
        ))),
    }
}

/// The program that decompresses `file`, by its first bytes, as GNU tar decides when it
/// reads a file itself; `None` for a plain tar.
fn decompressor(file: &Path) -> anyhow::Result<Option<&'static str>> {
    let mut magic = [0u8; 6];
    let mut f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let n = std::io::Read::read(&mut f, &mut magic)?;
    let m = &magic[..n];
    Ok(if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if m.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if m.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    })
}

/// `tar -x` of `file` (plain, zstd, gzip, xz or bzip2) into `dir` with `extra` arguments
/// (e.g. `--strip-components=1 rootfs`), every member checked on the way (`tarcheck`).
/// Returns the size of the file.
pub fn extract_checked(file: &Path, dir: &Path, extra: &[&str]) -> anyhow::Result<u64> {
    let len = fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let mut decomp = match decompressor(file)? {
        Some(prog) => Some(
            tool(prog)
                .args(["-d", "-c"])
                .arg(file)
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("running {prog}"))?,
        ),
        None => None,
    };
    let input: Box<dyn std::io::Read> = match &mut decomp {
        Some(c) => Box::new(c.stdout.take().context("decompressor stdout")?),
        None => Box::new(File::open(file).with_context(|| format!("opening {}", file.display()))?),
    };
    let mut t = tar_extract(dir, "-".as_ref())
        .args(extra)
        .stdin(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let checked = tarcheck::copy_checked(input, t.stdin.take().context("tar stdin")?);
    if let (Err(_), Some(c)) = (&checked, &mut decomp) {
        let _ = c.kill();
    }
    let ds = match &mut decomp {
        Some(c) => Some(c.wait()?),
        None => None,
    };
    let ts = t.wait()?;
    refused(checked, file)?;
    if ds.is_some_and(|s| !s.success()) || !ts.success() {
        bail!(
            "unpacking {} failed (tar {ts}{})",
            file.display(),
            ds.map(|s| format!(", decompressor {s}"))
                .unwrap_or_default()
        );
    }
    Ok(len)
}
