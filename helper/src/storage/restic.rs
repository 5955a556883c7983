//! The restic repositories backups go into: the `restic` binary (Debian's package) driven
//! by its documented command line and `--json` output, one repository per host shared by
//! every slot (content-defined chunks: what any slot, backup or base image already stored
//! is not stored again), and optionally one off the host.
//!
//! restic's own guarantees carry the crash safety: data and index files are written before
//! the snapshot that refers to them, so a killed `backup` leaves no snapshot (only unused
//! data that the next prune removes), and a killed `prune` deletes nothing still used.
//! A killed run leaves its lock; restic ignores locks of dead processes on this host for
//! `backup`, and we remove stale ones (`restic unlock`, which keeps live ones) when a
//! command is refused for a lock.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::sys::tool;

#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    #[error("restic is not installed (apt install restic), or set [backup] engine = \"tar\"")]
    NotInstalled,
    #[error("restic {what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("reading restic's answer to {what}: {source}")]
    Answer {
        what: String,
        source: serde_json::Error,
    },
    #[error("{path}: {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, ResticError>;

/// One repository and how to open it.
#[derive(Debug, Clone)]
pub struct Repo {
    /// `RESTIC_REPOSITORY`: a path or `sftp:…`, `s3:…`.
    pub location: String,
    pub password_file: PathBuf,
    /// `KEY=VALUE` lines for restic's environment (cloud credentials).
    pub env_file: Option<PathBuf>,
    /// restic's cache (remote repositories; a local one is read directly).
    pub cache_dir: Option<PathBuf>,
}

/// A snapshot as `restic snapshots --json` lists it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Snapshot {
    pub id: String,
    pub time: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Snapshot {
    /// The value of our `KEY=VALUE` tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// The end of `restic backup --json`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Summary {
    pub snapshot_id: String,
    #[serde(default)]
    pub data_added: u64,
    #[serde(default)]
    pub files_new: u64,
    #[serde(default)]
    pub files_changed: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
}

/// restic's version (major, minor), from `restic version` (no repository opened).
pub fn version() -> Result<(u32, u32)> {
    let out = match tool("restic").arg("version").output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ResticError::NotInstalled)
        }
        Err(e) => return Err(e.into()),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "restic 0.14.0 compiled with go1.19.8 on linux/amd64"
    let v = text.split_whitespace().nth(1).unwrap_or("");
    let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    Ok((it.next().unwrap_or(0), it.next().unwrap_or(0)))
}

/// Makes `path` a new random password file (mode 0600) unless it exists; an existing one
/// must be root's own and not readable by others.
pub fn ensure_password_file(path: &Path, create: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let problem = if !m.file_type().is_file() {
                Some("is not a regular file".to_string())
            } else if m.uid() != rustix::process::geteuid().as_raw() {
                Some(format!("is owned by uid {}, not us (root)", m.uid()))
            } else if m.mode() & 0o077 != 0 {
                Some(format!(
                    "has mode {:04o}; a repository password must be readable by root only (chmod 600)",
                    m.mode() & 0o7777
                ))
            } else if m.len() == 0 {
                Some("is empty".to_string())
            } else {
                None
            };
            match problem {
                Some(problem) => Err(ResticError::Key {
                    path: path.to_path_buf(),
                    problem,
                }),
                None => Ok(()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
            let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()?;
            }
            // A password file replaced after a repository was made with another would
            // lock us out: never overwrite one (link fails if the name exists).
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    ensure_password_file(path, false)
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ResticError::Key {
            path: path.to_path_buf(),
            problem: "does not exist; the repository's password file is needed to read it".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn is_lock_error(stderr: &str) -> bool {
    stderr.contains("repository is already locked") || stderr.contains("unable to create lock")
}

impl Repo {
    fn env(&self) -> Result<Vec<(OsString, OsString)>> {
        let mut env = vec![
            ("RESTIC_REPOSITORY".into(), self.location.clone().into()),
            (
                "RESTIC_PASSWORD_FILE".into(),
                self.password_file.clone().into_os_string(),
            ),
        ];
        if let Some(f) = &self.env_file {
            ensure_password_file(f, false)?;
            for line in std::fs::read_to_string(f)?.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some((k, v)) = line.split_once('=') {
                    env.push((k.trim().into(), v.trim().into()));
                }
            }
        }
        Ok(env)
    }

    /// `restic ARGS…` for this repository (its password from the file, never argv).
    pub fn command(&self, args: &[&str]) -> Result<Command> {
        let mut c = tool("restic");
        c.env_remove("RESTIC_PASSWORD")
            .env_remove("RESTIC_PASSWORD_COMMAND")
            .envs(self.env()?);
        match &self.cache_dir {
            Some(d) => c.arg("--cache-dir").arg(d),
            None => c.arg("--no-cache"),
        };
        c.args(args);
        Ok(c)
    }

    /// Runs restic to completion; on a refusal for a lock, removes stale locks and tries
    /// once more. Returns stdout.
    fn run(&self, what: &str, args: &[&str], cwd: Option<&Path>) -> Result<Vec<u8>> {
        for attempt in 0..2 {
            let mut c = self.command(args)?;
            if let Some(d) = cwd {
                c.current_dir(d);
            }
            let out = match c.stdin(Stdio::null()).output() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ResticError::NotInstalled)
                }
                r => r?,
            };
            if out.status.success() {
                return Ok(out.stdout);
            }
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if attempt == 0 && is_lock_error(&stderr) {
                // Stale locks only: restic keeps those of live processes.
                let _ = self.command(&["unlock"])?.output();
                continue;
            }
            return Err(ResticError::Failed {
                what: what.into(),
                status: out.status.to_string(),
                stderr: last_lines(&stderr, 6),
            });
        }
        unreachable!("the loop returns")
    }

    /// Creates the repository unless it exists.
    pub fn ensure_init(&self) -> Result<()> {
        if self.location.starts_with('/') && Path::new(&self.location).join("config").exists() {
            return Ok(());
        }
        if self.run("cat config", &["cat", "config"], None).is_ok() {
            return Ok(());
        }
        self.run("init", &["init"], None).map(|_| ())
    }

    /// Starts `restic snapshots --json` (to run while something else does: every restic
    /// command pays for opening the repository's key).
    pub fn snapshots_start(&self) -> Result<Child> {
        let mut c = self.command(&["snapshots", "--json", "--tag", "slot-os"])?;
        match c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ResticError::NotInstalled),
            r => Ok(r?),
        }
    }

    /// The answer of [`Repo::snapshots_start`]'s child.
    pub fn snapshots_finish(&self, child: Child) -> Result<Vec<Snapshot>> {
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !out.status.success() {
            if is_lock_error(&stderr) {
                return self.snapshots();
            }
            return Err(ResticError::Failed {
                what: "snapshots".into(),
                status: out.status.to_string(),
                stderr: last_lines(&stderr, 6),
            });
        }
        parse_snapshots(&out.stdout)
    }

    /// Our snapshots (tag `slot-os`), oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let out = self.run(
            "snapshots",
            &["snapshots", "--json", "--tag", "slot-os"],
            None,
        )?;
        parse_snapshots(&out)
    }

    /// `restic backup PATHS…` run in `dir`, tagged; returns restic's summary.
    pub fn backup(&self, dir: &Path, paths: &[&str], tags: &[String]) -> Result<Summary> {
        let mut args = vec!["backup", "--json", "--host", "slot-os"];
        let tag_args: Vec<String> = tags.iter().map(|t| format!("--tag={t}")).collect();
        args.extend(tag_args.iter().map(|s| s.as_str()));
        args.extend_from_slice(paths);
        let out = self.run("backup", &args, Some(dir))?;
        let last = out
            .split(|b| *b == b'\n')
            .rfind(|l| l.windows(7).any(|w| w == b"summary"))
            .unwrap_or_default();
        serde_json::from_slice(last).map_err(|source| ResticError::Answer {
            what: "backup".into(),
            source,
        })
    }

    /// Forgets the snapshots and prunes the data only they used.
    pub fn forget_prune(&self, ids: &[String]) -> Result<()> {
        let mut args = vec!["forget", "--prune"];
        args.extend(ids.iter().map(|s| s.as_str()));
        self.run("forget --prune", &args, None).map(|_| ())
    }

    /// Restores `id` into `target` (a new directory), then reads every file back and
    /// compares it with the repository (`--verify`).
    pub fn restore(&self, id: &str, target: &Path, sparse: bool) -> Result<()> {
        let t = target.to_string_lossy().into_owned();
        let mut args = vec!["restore", id, "--target", t.as_str(), "--verify"];
        if sparse {
            args.push("--sparse");
        }
        let out = self.run("restore", &args, None)?;
        // restic 0.14 reports verification errors but may still exit 0.
        let text = String::from_utf8_lossy(&out);
        if text.contains("error") && text.contains("verif") {
            return Err(ResticError::Failed {
                what: "restore --verify".into(),
                status: "content differs".into(),
                stderr: last_lines(&text, 6),
            });
        }
        Ok(())
    }

    /// Bytes the repository takes (for a local one, on disk; else restic's raw size).
    pub fn size(&self) -> Result<u64> {
        if self.location.starts_with('/') {
            return Ok(du(Path::new(&self.location)));
        }
        #[derive(serde::Deserialize)]
        struct Stats {
            total_size: u64,
        }
        let out = self.run("stats", &["stats", "--json", "--mode", "raw-data"], None)?;
        let s: Stats = serde_json::from_slice(&out).map_err(|source| ResticError::Answer {
            what: "stats".into(),
            source,
        })?;
        Ok(s.total_size)
    }
}

fn parse_snapshots(out: &[u8]) -> Result<Vec<Snapshot>> {
    let text = String::from_utf8_lossy(out);
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|source| ResticError::Answer {
        what: "snapshots".into(),
        source,
    })
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

/// Bytes allocated under `p` (files counted once per inode).
pub fn du(p: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert(m.ino()) {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// Our tags of one backup: `slot-os`, `slot=NAME`, `name=SLOT.BACKUP`.
pub fn tags(slot: &str, name: &str, extra: &BTreeMap<&str, String>) -> Vec<String> {
    let mut t = vec![
        "slot-os".to_string(),
        format!("slot={slot}"),
        format!("name={name}"),
    ];
    t.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_and_summaries_parse_as_restic_writes_them() {
        let s = parse_snapshots(br#"[{"time":"2026-12-04T14:28:12.388747127Z","tree":"x","paths":["/s/rootfs"],"hostname":"slot-os","username":"root","tags":["slot-os","slot=slot00","name=slot00.b1"],"id":"35a5951dfe","short_id":"35a5951d"}]"#).unwrap();
        assert_eq!(s[0].tag("name"), Some("slot00.b1"));
        assert_eq!(s[0].tag("slot"), Some("slot00"));
        assert_eq!(s[0].tag("nam"), None);
        assert!(parse_snapshots(b"null\n").unwrap().is_empty());
        let sum: Summary = serde_json::from_str(r#"{"message_type":"summary","files_new":3,"files_changed":0,"files_unmodified":0,"dirs_new":1,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":3,"tree_blobs":2,"data_added":539900,"total_files_processed":3,"total_bytes_processed":104857608,"total_duration":0.46,"snapshot_id":"35a5951d"}"#).unwrap();
        assert_eq!(
            (sum.data_added, sum.snapshot_id.as_str()),
            (539900, "35a5951d")
        );
    }

    #[test]
    fn password_files_are_made_private_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k/backup.key");
        ensure_password_file(&p, true).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        let first = std::fs::read(&p).unwrap();
        assert_eq!(first.len(), 65);
        ensure_password_file(&p, true).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            first,
            "an existing key is never replaced"
        );
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let e = ensure_password_file(&p, true).unwrap_err().to_string();
        assert!(e.contains("mode 0644"), "{e}");
        let e = ensure_password_file(&d.path().join("none"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
