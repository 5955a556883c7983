//! Two-level dumps of a slot's root with GNU tar's `--listed-incremental` (a move: the copy
//! made while the slot runs, then what changed, made while it is frozen), and applying them
//! onto a tree through the incremental member check (`tarcheck`).
//!
//! Level 0 records every directory (device, inode, listing) and the time the dump began in
//! a snapshot file. Level 1, made with a copy of that file, holds what changed since then:
//! files whose mtime or ctime is newer (content, owner, mode, xattrs, new hard links),
//! every directory's listing (a *dumpdir*), from which extraction with
//! `--listed-incremental=/dev/null` deletes what is gone, and directory renames.
//!
//! Two adjustments of GNU tar's behaviour:
//! - The copy's start time is moved back by [`REWIND`]: file systems stamp files with a
//!   coarse clock (a kernel tick behind the one tar read), so a write just after level 0
//!   began could carry an older time and be left out of level 1. Sending a second more of
//!   changes costs little; missing one would lose a write.
//! - Renames are never sent: extraction applies them before anything else, by path, and a
//!   slot can plant a symlink where a renamed directory's new path then leads out of the
//!   tree (tarcheck refuses them). A level 1 that shows renames (they are all in its first
//!   member) is made again with those directories forgotten, so they are sent whole under
//!   their new names and deleted under the old.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{bail, Context};

use super::archive::{tar_create, tar_extract};
use super::tarcheck::{self, Rules};

/// How far back level 1 looks before level 0 began.
pub const REWIND: std::time::Duration = std::time::Duration::from_secs(1);

/// Warnings a dump of a running root gives by design (its files change while read);
/// level 1 sends them again.
const RUNNING_WARNINGS: [&str; 4] = [
    "--warning=no-file-changed",
    "--warning=no-file-removed",
    "--warning=no-file-shrank",
    "--warning=no-file-ignored",
];

fn dump(root: &Path, snar: &Path) -> Command {
    let mut c = tar_create(root);
    c.arg(format!("--listed-incremental={}", snar.display()))
        // Directories are known by inode alone: an overlay slot's levels are read through
        // two mounts of its merged tree, each with a device number of its own.
        .arg("--no-check-device")
        .args(RUNNING_WARNINGS)
        .arg(".")
        .stdout(Stdio::piped());
    c
}

/// Level 0 of `root` to stdout, recording its snapshot in `snar` (a new file). GNU tar
/// exits 1 when files changed while it read them: expected of a running slot.
pub fn level0(root: &Path, snar: &Path) -> Command {
    let _ = fs::remove_file(snar);
    dump(root, snar)
}

/// Whether a finished dump succeeded: level 0 of a running root may end with 1 ("some
/// files differ"), anything else must be 0.
pub fn succeeded(status: std::process::ExitStatus, running: bool) -> bool {
    status.success() || (running && status.code() == Some(1))
}

/// A level-1 dump under way: its first member already read (to look for renames).
pub struct Delta {
    pub child: Child,
    pub stdout: ChildStdout,
    /// The bytes read so far; they go out first.
    pub front: Vec<u8>,
    /// Directories found renamed since level 0, sent whole instead (0 most of the time).
    pub redumped: usize,
}

/// Starts level 1 of `root` against the level-0 snapshot `snar0`, using `work` for the
/// snapshot's copy; see the module doc for the rewind and the renames.
pub fn level1(root: &Path, snar0: &Path, work: &Path) -> anyhow::Result<Delta> {
    let mut forget: Vec<String> = Vec::new();
    for attempt in 0..2 {
        let mut snap = Snapshot::read(snar0)?;
        snap.rewind(REWIND);
        snap.forget(&forget);
        snap.write(work)?;
        let mut child = dump(root, work).spawn().context("running tar")?;
        let mut stdout = child.stdout.take().context("tar stdout")?;
        let (consumed, listing) = match tarcheck::first_listing(&mut stdout) {
            Ok(f) => f,
            Err(e) => {
                let _ = child.kill();
                let st = child.wait()?;
                bail!("reading the start of the changes failed (tar {st}): {e}");
            }
        };
        let renamed: Vec<String> = tarcheck::dumpdir_entries(&listing)
            .into_iter()
            .filter(|(code, name)| *code == b'R' && !name.is_empty())
            .map(|(_, name)| name)
            .collect();
        if renamed.is_empty() {
            return Ok(Delta {
                child,
                stdout,
                front: consumed,
                redumped: forget.len(),
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        if attempt == 1 {
            bail!(
                "the changes still rename directories ({}) after forgetting them",
                renamed.join(", ")
            );
        }
        forget = renamed;
    }
    unreachable!("the loop returns")
}

/// GNU tar's snapshot file, format 2: a `GNU tar-VERSION-2` line, the dump's start time
/// (seconds and nanoseconds, each NUL-terminated), then one record per directory: NFS flag,
/// mtime seconds, nanoseconds, device, inode, name, its listing's entries, an empty entry,
/// and a NUL (GNU tar's incremen.c, `write_directory_file`).
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    head: Vec<u8>,
    secs: i64,
    nanos: u32,
    records: Vec<Record>,
}

#[derive(Debug, PartialEq)]
struct Record {
    /// NFS flag, mtime s, mtime ns, device, inode, name.
    fields: Vec<Vec<u8>>,
    entries: Vec<Vec<u8>>,
}

impl Record {
    fn name(&self) -> &[u8] {
        &self.fields[5]
    }
}

fn number<T: std::str::FromStr>(t: &[u8]) -> anyhow::Result<T> {
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| {
            format!(
                "bad number {:?} in tar's snapshot file",
                String::from_utf8_lossy(t)
            )
        })
}

impl Snapshot {
    pub fn read(path: &Path) -> anyhow::Result<Snapshot> {
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Snapshot::parse(&data).with_context(|| format!("reading {}", path.display()))
    }

    fn parse(data: &[u8]) -> anyhow::Result<Snapshot> {
        let nl = data
            .iter()
            .position(|b| *b == b'\n')
            .context("no header line")?;
        let head = data[..=nl].to_vec();
        if !head.starts_with(b"GNU tar-") || !head.ends_with(b"-2\n") {
            bail!(
                "not a format-2 snapshot ({:?})",
                String::from_utf8_lossy(&head)
            );
        }
        let mut toks = data[nl + 1..].split(|b| *b == 0);
        let mut next = || toks.next().context("the file ends early");
        let secs = number(next()?)?;
        let nanos = number(next()?)?;
        let mut records = Vec::new();
        loop {
            let nfs = next()?;
            if nfs.is_empty() {
                break; // the split's end after the last record's NUL
            }
            let mut fields = vec![nfs.to_vec()];
            for _ in 0..5 {
                fields.push(next()?.to_vec());
            }
            let mut entries = Vec::new();
            loop {
                let e = next()?;
                if e.is_empty() {
                    break;
                }
                entries.push(e.to_vec());
            }
            if !next()?.is_empty() {
                bail!("a record without its terminator");
            }
            records.push(Record { fields, entries });
        }
        Ok(Snapshot {
            head,
            secs,
            nanos,
            records,
        })
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        for t in [self.secs.to_string(), self.nanos.to_string()] {
            out.extend_from_slice(t.as_bytes());
            out.push(0);
        }
        for r in &self.records {
            for t in r.fields.iter().chain(&r.entries) {
                out.extend_from_slice(t);
                out.push(0);
            }
            out.extend_from_slice(&[0, 0]);
        }
        out
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        fs::write(path, self.bytes()).with_context(|| format!("writing {}", path.display()))
    }

    /// Moves the dump's start time back by `by`.
    pub fn rewind(&mut self, by: std::time::Duration) {
        let t =
            i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos) - by.as_nanos() as i128;
        self.secs = t.div_euclid(1_000_000_000) as i64;
        self.nanos = t.rem_euclid(1_000_000_000) as u32;
    }

    /// Drops the records of the directories `names` (as tar names them, `./a/b`) and of
    /// everything below them: tar then takes them for new directories and dumps them whole.
    pub fn forget(&mut self, names: &[String]) {
        self.records.retain(|r| {
            !names.iter().any(|n| {
                let n = n.as_bytes();
                r.name() == n || (r.name().starts_with(n) && r.name().get(n.len()) == Some(&b'/'))
            })
        });
    }
}

/// Unpacks an incremental stream (plain tar, level 0 or 1) into `dir`, every member checked
/// with the incremental rules on its way to GNU tar; deletions in it are applied. A refused
/// stream is bad input. Returns the bytes passed on.
pub fn apply(stream: impl Read, dir: &Path) -> anyhow::Result<u64> {
    let mut t = tar_extract(dir, "-".as_ref())
        .arg("--listed-incremental=/dev/null")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let checked = tarcheck::copy_checked_with(
        stream,
        t.stdin.take().context("tar stdin")?,
        Rules {
            incremental: true,
            no_devices: true,
        },
    );
    let mut err = String::new();
    if let Some(mut e) = t.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let st = t.wait()?;
    match checked {
        Err(e @ (tarcheck::Refused::Read(_) | tarcheck::Refused::Write(_))) => {
            return Err(anyhow::Error::new(e).context(format!("unpacking into {}", dir.display())))
        }
        Err(e) => {
            return Err(crate::error::bad_input(format!(
                "{e}: refused (a stream may not reach outside the slot's tree)"
            )))
        }
        Ok(_) => {}
    }
    if !st.success() {
        bail!(
            "unpacking into {} failed (tar {st}): {}",
            dir.display(),
            err.trim()
        );
    }
    Ok(checked.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn run_dump(cmd: Command) -> Vec<u8> {
        let out = { cmd }.stderr(Stdio::piped()).output().unwrap();
        assert!(
            succeeded(out.status, true),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn delta_bytes(root: &Path, snar0: &Path, work: &Path) -> (Vec<u8>, usize) {
        let mut d = level1(root, snar0, work).unwrap();
        let mut all = d.front.clone();
        d.stdout.read_to_end(&mut all).unwrap();
        assert!(d.child.wait().unwrap().success());
        (all, d.redumped)
    }

    /// (src, dst, snar0, work) in one temp dir; src holds `make`'s tree; dst has level 0.
    fn first_dump(
        make: impl FnOnce(&Path),
    ) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        make(&src);
        let l0 = run_dump(level0(&src, &t.path().join("snar0")));
        apply(&l0[..], &dst).unwrap();
        (t, src, dst)
    }

    fn listing(root: &Path) -> Vec<String> {
        let out = Command::new("find")
            .arg(".")
            .args(["-printf", "%p %y %m %U:%G %s %l\\n"])
            .current_dir(root)
            .output()
            .unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_delta_brings_content_metadata_deletions_links_and_xattrs() {
        let (t, src, dst) = first_dump(|s| {
            for f in ["a", "b", "c", "d", "gone"] {
                fs::write(s.join(f), f).unwrap();
            }
            fs::create_dir(s.join("dir")).unwrap();
            fs::write(s.join("dir/in"), "in").unwrap();
            fs::create_dir(s.join("olddir")).unwrap();
        });
        fs::write(src.join("a"), "changed").unwrap();
        fs::set_permissions(src.join("b"), fs::Permissions::from_mode(0o600)).unwrap();
        let _ = Command::new("setfattr")
            .args(["-n", "user.k", "-v", "v"])
            .arg(src.join("c"))
            .status();
        fs::hard_link(src.join("d"), src.join("dir/d-link")).unwrap();
        fs::remove_file(src.join("gone")).unwrap();
        fs::remove_dir(src.join("olddir")).unwrap();
        fs::rename(src.join("dir/in"), src.join("moved")).unwrap();
        let (delta, _) = delta_bytes(&src, &t.path().join("snar0"), &t.path().join("snar1"));
        apply(&delta[..], &dst).unwrap();
        assert_eq!(listing(&src), listing(&dst));
        assert_eq!(fs::read(dst.join("a")).unwrap(), b"changed");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(dst.join("d")).unwrap().ino(),
            fs::metadata(dst.join("dir/d-link")).unwrap().ino()
        );
        let x = Command::new("getfattr")
            .args(["--only-values", "-n", "user.k"])
            .arg(dst.join("c"))
            .output();
        if let Ok(x) = x {
            if x.status.success() {
                assert_eq!(x.stdout, b"v");
            }
        }
    }

    #[test]
    fn renamed_directories_are_sent_whole_and_a_planted_symlink_leads_nowhere() {
        // The slot plants p/sym -> a host directory, lets the copy see it, then renames p
        // to x, replaces x/sym by a directory and moves q into it: as renames, GNU tar
        // would move q through the symlink into the host directory.
        let host = tempfile::tempdir().unwrap();
        let victim = host.path().to_path_buf();
        let (t, src, dst) = first_dump(|s| {
            fs::create_dir_all(s.join("p")).unwrap();
            fs::create_dir_all(s.join("q")).unwrap();
            fs::write(s.join("q/evil"), "payload").unwrap();
            symlink(&victim, s.join("p/sym")).unwrap();
        });
        fs::rename(src.join("p"), src.join("x")).unwrap();
        fs::remove_file(src.join("x/sym")).unwrap();
        fs::create_dir(src.join("x/sym")).unwrap();
        fs::rename(src.join("q"), src.join("x/sym/y")).unwrap();
        let (delta, redumped) = delta_bytes(&src, &t.path().join("snar0"), &t.path().join("snar1"));
        assert_eq!(redumped, 2, "p and q were renamed");
        apply(&delta[..], &dst).unwrap();
        assert_eq!(listing(&src), listing(&dst));
        assert_eq!(
            fs::read_dir(&victim).unwrap().count(),
            0,
            "nothing reached the host dir"
        );
    }

    #[test]
    fn a_symlink_replaced_by_a_directory_is_no_way_out() {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("keep"), "precious").unwrap();
        let victim = host.path().to_path_buf();
        let (t, src, dst) = first_dump(|s| symlink(&victim, s.join("x")).unwrap());
        fs::remove_file(src.join("x")).unwrap();
        fs::create_dir(src.join("x")).unwrap();
        fs::write(src.join("x/new"), "n").unwrap();
        let (delta, _) = delta_bytes(&src, &t.path().join("snar0"), &t.path().join("snar1"));
        apply(&delta[..], &dst).unwrap();
        assert_eq!(listing(&src), listing(&dst));
        assert_eq!(fs::read(victim.join("keep")).unwrap(), b"precious");
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
    }

    #[test]
    fn snapshots_read_back_byte_for_byte_and_rewind() {
        let (t, _src, _dst) = first_dump(|s| {
            fs::create_dir_all(s.join("a/b")).unwrap();
            fs::write(s.join("a/f"), "f").unwrap();
        });
        let raw = fs::read(t.path().join("snar0")).unwrap();
        let mut s = Snapshot::parse(&raw).unwrap();
        assert_eq!(s.bytes(), raw);
        assert_eq!(s.records.len(), 3, "., ./a, ./a/b");
        let (secs, nanos) = (s.secs, s.nanos);
        s.rewind(REWIND);
        assert_eq!((s.secs, s.nanos), (secs - 1, nanos));
        s.nanos = 5;
        s.rewind(std::time::Duration::from_nanos(10));
        assert_eq!((s.secs, s.nanos), (secs - 2, 999_999_995));
        s.forget(&["./a".to_string()]);
        assert_eq!(s.records.len(), 1, "./a and ./a/b forgotten");
        assert_eq!(s.records[0].name(), b".");
        assert!(Snapshot::parse(&raw[..raw.len() - 1]).is_err());
        assert!(Snapshot::parse(b"GNU tar-1.34-1\n").is_err());
    }
}
