//! Reading an export stream once: the compressed bytes are checked against their trailer
//! (`stream`), decompressed by `zstd -d`, the metadata members at the front are read by us,
//! and the rest goes on to GNU tar through the member check (`tarcheck`). A file and a pipe
//! are read the same way, so `import -` writes nothing anywhere but the new slot's root.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};
use std::thread::JoinHandle;

use anyhow::{bail, Context};

use super::archive::tar_extract;
use super::stream::{parse_trailer, Verified, TRAILER_LEN};
use super::tarcheck::{self, Front};
use crate::sys::tool;

/// Where an export is read from.
pub enum Source {
    File(File),
    Stdin,
}

impl Source {
    /// Whether the stream ends with a checksum trailer. A pipe must; a file written by an
    /// older slot-os (export format 1) has none, which the caller checks against the
    /// manifest.
    fn has_trailer(&mut self) -> io::Result<bool> {
        match self {
            Source::Stdin => Ok(true),
            Source::File(f) => {
                let len = f.metadata()?.len();
                if len < TRAILER_LEN as u64 {
                    return Ok(false);
                }
                let mut t = [0u8; TRAILER_LEN];
                f.seek(SeekFrom::Start(len - TRAILER_LEN as u64))?;
                f.read_exact(&mut t)?;
                f.seek(SeekFrom::Start(0))?;
                Ok(parse_trailer(&t).is_some())
            }
        }
    }

    fn reader(self) -> Box<dyn Read + Send> {
        match self {
            Source::File(f) => Box::new(f),
            Source::Stdin => Box::new(io::stdin()),
        }
    }
}

/// An export being read: its front members are known, nothing is unpacked yet.
pub struct Unpacking {
    zstd: Child,
    out: Option<ChildStdout>,
    feeder: Option<JoinHandle<io::Result<u64>>>,
    front: Front,
    /// The stream carries a checksum trailer (checked when the stream ends).
    pub checked: bool,
}

/// Starts reading `source` and reads its first `count` tar members (each at most 1 MiB).
pub fn open(mut source: Source, count: usize) -> anyhow::Result<Unpacking> {
    let checked = source.has_trailer().context("reading the export")?;
    let mut zstd = tool("zstd")
        .args(["-d", "-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running zstd (install the zstd package)")?;
    let mut zin = zstd.stdin.take().context("zstd stdin")?;
    let reader = source.reader();
    let feeder = std::thread::spawn(move || -> io::Result<u64> {
        if checked {
            let mut v = Verified::new(reader);
            io::copy(&mut v, &mut zin)?;
            Ok(v.total())
        } else {
            let mut r = reader;
            io::copy(&mut r, &mut zin)
        }
    });
    let mut out = zstd.stdout.take().context("zstd stdout")?;
    let mut u = Unpacking {
        zstd,
        out: None,
        feeder: Some(feeder),
        front: Front {
            members: Vec::new(),
            consumed: Vec::new(),
        },
        checked,
    };
    match tarcheck::read_front(&mut out, count, 1 << 20) {
        Ok(front) => {
            u.front = front;
            u.out = Some(out);
            Ok(u)
        }
        Err(e) => {
            // Say why the stream broke if the feeder knows (a bad trailer, a cut pipe).
            let why = u.stop();
            Err(match why {
                Some(f) => anyhow::anyhow!("{e}; {f}"),
                None => anyhow::Error::new(e),
            })
        }
    }
}

impl Unpacking {
    /// The front members, in order: (name, content).
    pub fn members(&self) -> &[(String, Vec<u8>)] {
        &self.front.members
    }

    /// Ends reading: zstd is killed and the feeder's outcome, if it failed, returned.
    fn stop(&mut self) -> Option<String> {
        let _ = self.zstd.kill();
        let _ = self.zstd.wait();
        let feeder = self.feeder.take()?;
        // The feeder may still be blocked reading a pipe that never ends; only a finished
        // one is asked.
        if !feeder.is_finished() {
            return None;
        }
        match feeder.join() {
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => Some(e.to_string()),
            _ => None,
        }
    }

    /// Unpacks the rest of the stream into `dir` with `extra` tar arguments, every member
    /// checked on the way; succeeds only if the whole stream was read and (when it carries
    /// one) its checksum matched. Returns the compressed size read.
    pub fn extract(mut self, dir: &Path, extra: &[&str], what: &str) -> anyhow::Result<u64> {
        let mut t = tar_extract(dir, "-".as_ref())
            .args(extra)
            .stdin(Stdio::piped())
            .spawn()
            .context("running tar")?;
        let front = std::mem::take(&mut self.front.consumed);
        let out = self.out.take().context("export stream")?;
        let checked = tarcheck::copy_checked(
            io::Cursor::new(front).chain(out),
            t.stdin.take().context("tar stdin")?,
        );
        if checked.is_err() {
            let _ = self.zstd.kill();
        }
        let ts = t.wait()?;
        let zs = self.zstd.wait()?;
        let fed = self
            .feeder
            .take()
            .context("export stream")?
            .join()
            .map_err(|_| anyhow::anyhow!("reading {what} failed"))?;
        let mut zerr = String::new();
        if let Some(mut e) = self.zstd.stderr.take() {
            let _ = e.read_to_string(&mut zerr);
        }
        match checked {
            Err(e @ (tarcheck::Refused::Read(_) | tarcheck::Refused::Write(_))) => {
                return Err(anyhow::Error::new(e).context(format!("unpacking {what}")))
            }
            Err(e) => {
                return Err(crate::error::bad_input(format!(
                    "{what}: {e}: refused (no member may name a path outside the archive's tree)"
                )))
            }
            Ok(_) => {}
        }
        let fed = fed.with_context(|| format!("reading {what}"))?;
        if !zs.success() || !ts.success() {
            bail!(
                "unpacking {what} failed (zstd {zs}{}, tar {ts})",
                if zerr.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", zerr.trim())
                }
            );
        }
        Ok(fed)
    }
}

impl Drop for Unpacking {
    fn drop(&mut self) {
        if self.feeder.is_some() {
            self.stop();
        }
    }
}
