//! The consistent tree of a running slot, captured with a freeze bounded by what changed.
//!
//! Filesystems without snapshots (ext4, xfs) cannot give an instant copy, and freezing the
//! slot for a whole copy stops its services for as long as the copy takes. So:
//! 1. **copy** the running slot's tree into a stage directory of our own (after the first
//!    capture only what changed since the last one: the stage and its `manifest` stay);
//! 2. **catch up**: walk again (stat only) and copy what changed during step 1, so the
//!    frozen pass has little left;
//! 3. **freeze**, walk again (stat only) and copy what changed since, plus every file the
//!    slot's processes map shared and writable (a write through a mapping to a page that
//!    is already dirty changes no time stamp), then **thaw**.
//!
//! What the stage holds after step 3 is exactly the tree at one instant, the freeze. An
//! entry counts as unchanged only when its metadata (inode, size, mtime, ctime, mode,
//! owner, link count) equals what was read before copying it *and* its ctime was older
//! than the clock at that read: any later write sets ctime to at least that clock, so a
//! write in the same clock tick as the read cannot pass for "unchanged". A directory
//! whose metadata is unchanged has the same entries (adding, removing or renaming an
//! entry changes its mtime and ctime), so the frozen pass stats its known names without
//! reading it. The engine (restic, tar) reads the stage after the thaw, at its own pace.
//!
//! Every source name is opened relative to a directory descriptor with `O_NOFOLLOW`
//! (`copy.rs`): symlinks stay symlinks, nothing outside the slot's tree is ever read.

mod copy;
pub mod mapped;
pub mod tree;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use rustix::fs::Stat;

use tree::{Dir, Meta, Node, Record};

/// Where a slot's stage lives: `DIR/rootfs` (the copy) and `DIR/manifest`.
#[derive(Debug, Clone)]
pub struct Stage {
    pub dir: PathBuf,
}

impl Stage {
    pub fn new(dir: PathBuf) -> Stage {
        Stage { dir }
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    fn manifest(&self) -> PathBuf {
        self.dir.join("manifest")
    }
}

/// What a capture did, for the report and the notes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub entries: usize,
    /// Bytes copied before the freeze (all passes).
    pub copied_bytes: u64,
    /// Entries copied in the frozen pass, and their bytes.
    pub frozen_entries: usize,
    pub frozen_bytes: u64,
    /// Files the slot mapped shared and writable, copied again while frozen.
    pub mapped_files: usize,
    /// Milliseconds of the copy, the catch-up, and the frozen walk + copy.
    pub copy_ms: f64,
    pub catch_up_ms: f64,
    pub frozen_ms: f64,
    /// Regular files with holes (paths relative to the tree's root).
    #[serde(skip)]
    pub sparse: Vec<PathBuf>,
}

/// The tree captured: the stage's `rootfs`, and how long the slot was frozen (`None`:
/// it was not running).
#[derive(Debug)]
pub struct Captured {
    pub tree: PathBuf,
    pub freeze_ms: Option<f64>,
    pub report: Report,
}

/// The frozen window: `freeze` freezes the slot and returns a guard that thaws it when
/// dropped (`None`: not running, nothing to freeze); `mapped` lists, while frozen, the
/// (device, inode) pairs of files the slot's processes map shared and writable.
pub trait Freezer {
    type Guard;
    fn freeze(&mut self) -> anyhow::Result<Option<Self::Guard>>;
    fn mapped(&mut self) -> HashSet<(u64, u64)>;
}

/// Captures `source` (a slot's root, or the directory of it that holds its own data) into
/// `stage` as it was at one instant. See the module's description.
pub fn capture<F: Freezer>(
    source: &Path,
    stage: &Stage,
    freezer: &mut F,
) -> anyhow::Result<Captured> {
    std::fs::create_dir_all(&stage.dir)
        .with_context(|| format!("creating {}", stage.dir.display()))?;
    let prev = tree::load(&stage.manifest());
    // Until the new manifest is written, the stage is being changed: a killed run must not
    // leave a manifest that describes a stage it no longer matches.
    let _ = std::fs::remove_file(stage.manifest());
    let src_root = open_root(source)?;
    let st_root = rustix::fs::fstat(&src_root)?;
    let dev = st_root.st_dev;
    let parent = copy::open_dir_at(open_root(&stage.dir)?.as_fd(), OsStr::new("."))?;
    let dst_root = copy::stage_dir_at(parent.as_fd(), OsStr::new("rootfs"))
        .with_context(|| format!("creating {}", stage.rootfs().display()))?;

    let mut report = Report::default();
    // The copy runs beside the slot's own work: it yields the CPU and the disk to it.
    let lowered = crate::sys::priority::Boost::yield_to_others();
    let t = Instant::now();
    let mut w = Walker::new(&dst_root, dev, HashSet::new(), true);
    let mut root = w
        .sync_root(&src_root, &dst_root, &st_root, prev.as_ref())
        .with_context(|| {
            format!(
                "copying {} into {}",
                source.display(),
                stage.rootfs().display()
            )
        })?;
    report.copied_bytes += w.bytes;
    report.copy_ms = ms(t);

    // Catch up (not frozen): up to three rounds while the last one still copied much.
    let t = Instant::now();
    for _ in 0..3 {
        let mut w = Walker::new(&dst_root, dev, HashSet::new(), false);
        root = w
            .sync_root(
                &src_root,
                &dst_root,
                &rustix::fs::fstat(&src_root)?,
                Some(&root),
            )
            .context("copying what changed meanwhile")?;
        report.copied_bytes += w.bytes;
        if w.bytes < 4 << 20 && w.changed < 1000 {
            break;
        }
    }
    report.catch_up_ms = ms(t);
    drop(lowered);

    // The slot's services wait for this walk: nothing else on the host should go first.
    let boost = crate::sys::priority::Boost::raise();
    let guard = freezer.freeze()?;
    let t = Instant::now();
    let running = guard.is_some();
    let mapped: HashSet<u64> = if running {
        freezer
            .mapped()
            .into_iter()
            .filter(|(d, _)| *d == dev)
            .map(|(_, i)| i)
            .collect()
    } else {
        HashSet::new()
    };
    report.mapped_files = mapped.len();
    let mut w = Walker::new(&dst_root, dev, mapped, false);
    let frozen = w
        .sync_root(
            &src_root,
            &dst_root,
            &rustix::fs::fstat(&src_root)?,
            Some(&root),
        )
        .context("copying what changed, while the slot was frozen");
    let frozen_ms = ms(t);
    drop(guard);
    drop(boost);
    root = frozen?;
    report.frozen_entries = w.changed;
    report.frozen_bytes = w.bytes;
    report.frozen_ms = frozen_ms;
    report.entries = root.count();
    collect_sparse(&root, &mut PathBuf::new(), &mut report.sparse);

    refresh_stage_ctimes(&dst_root, &mut root)?;
    rustix::fs::syncfs(&dst_root)?;
    tree::save(&stage.manifest(), &root)
        .with_context(|| format!("writing {}", stage.manifest().display()))?;
    Ok(Captured {
        tree: stage.rootfs(),
        freeze_ms: running.then_some(frozen_ms),
        report,
    })
}

/// Records the stage's ctimes as they are once the capture is complete: our own hard
/// links changed those of earlier members of a group after they were copied. From here
/// on, a different ctime means the stage was changed after this capture (a killed run).
fn refresh_stage_ctimes(dst: &OwnedFd, d: &mut Dir) -> io::Result<()> {
    for (name, node) in d.entries.iter_mut() {
        match node {
            Node::Dir(sub) => {
                let fd = copy::open_dir_at(dst.as_fd(), name)?;
                refresh_stage_ctimes(&fd, sub)?;
            }
            Node::Leaf(r) if r.meta.kind() == libc::S_IFSOCK => {}
            Node::Leaf(r) => match copy::stat_at(dst.as_fd(), name) {
                Ok(s) => r.stage_ctime = (s.st_ctime, s.st_ctime_nsec as u32),
                Err(_) => r.clean = false,
            },
        }
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn open_root(p: &Path) -> anyhow::Result<OwnedFd> {
    rustix::fs::open(
        p,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .with_context(|| format!("opening {}", p.display()))
}

fn collect_sparse(d: &Dir, at: &mut PathBuf, out: &mut Vec<PathBuf>) {
    for (name, node) in &d.entries {
        at.push(name);
        match node {
            Node::Dir(sub) => collect_sparse(sub, at, out),
            Node::Leaf(r) if r.sparse => out.push(at.clone()),
            Node::Leaf(_) => {}
        }
        at.pop();
    }
}

/// CLOCK_REALTIME_COARSE: the clock the kernel stamps ctime from (a write after this
/// reading gets a ctime at least this large).
fn coarse_now() -> (i64, u32) {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut t) };
    (t.tv_sec, t.tv_nsec as u32)
}

/// The stage file of a hard-link group in this pass: its path, and what the source was
/// when that file was copied. Two names of one inode are read at different moments, so
/// their records can disagree ("clean" in one tick, not in the next); the group's other
/// names follow this file, never their own older records.
struct Link {
    rel: Vec<u8>,
    meta: Meta,
    clean: bool,
    /// Copied in this pass: names met later must be linked to it again, whatever their
    /// records say, or they keep the stage file it replaced.
    fresh: bool,
}

/// One pass over the tree.
struct Walker<'s> {
    stage_root: &'s OwnedFd,
    dev: u64,
    /// Inodes copied again whatever their metadata says (mapped writable by the slot).
    force: HashSet<u64>,
    /// First pass over a stage left by an earlier run: read both sides, trust nothing
    /// the manifest says about the stage without checking it.
    first: bool,
    /// Hard-link groups met in this pass, by inode.
    links: HashMap<u64, Link>,
    bytes: u64,
    changed: usize,
}

impl<'s> Walker<'s> {
    fn new(stage_root: &'s OwnedFd, dev: u64, force: HashSet<u64>, first: bool) -> Self {
        Walker {
            stage_root,
            dev,
            force,
            first,
            links: HashMap::new(),
            bytes: 0,
            changed: 0,
        }
    }

    fn sync_root(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        st: &Stat,
        prev: Option<&Dir>,
    ) -> io::Result<Dir> {
        let clock = coarse_now();
        let meta = Meta::of(st);
        let same = prev.is_some_and(|p| p.rec.same(&meta));
        let mut rel = Vec::new();
        let (mut d, touched) = self.sync_dir(src, dst, &mut rel, prev, same)?;
        if !same || touched || self.first {
            copy::apply_dir_meta(src, dst, st)?;
        }
        d.rec = Record {
            meta,
            clean: meta.ctime < clock,
            ..Record::default()
        };
        Ok(d)
    }

    /// Brings stage directory `dst` in line with source directory `src`; `prev` is what
    /// the last pass recorded for it, `same` whether the directory's own metadata is
    /// unchanged since (then its names are too). Returns the new record of its entries
    /// and whether anything in `dst` was written.
    fn sync_dir(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        rel: &mut Vec<u8>,
        prev: Option<&Dir>,
        same: bool,
    ) -> io::Result<(Dir, bool)> {
        let mut touched = false;
        let names: Vec<OsString> = match prev {
            Some(p) if same && !self.first => p.entries.keys().cloned().collect(),
            _ => copy::list(src.as_fd())?,
        };
        if self.first {
            let keep: HashSet<&OsStr> = names.iter().map(|n| n.as_os_str()).collect();
            for n in copy::list(dst.as_fd())? {
                if !keep.contains(n.as_os_str()) {
                    copy::remove_at(dst.as_fd(), &n)?;
                    touched = true;
                }
            }
        } else if let Some(p) = prev.filter(|_| !same) {
            let keep: HashSet<&OsStr> = names.iter().map(|n| n.as_os_str()).collect();
            for n in p.entries.keys() {
                if !keep.contains(n.as_os_str()) {
                    copy::remove_at(dst.as_fd(), n)?;
                    self.changed += 1;
                    touched = true;
                }
            }
        }
        let mut out = Dir::default();
        for name in names {
            let clock = coarse_now();
            let st = match copy::stat_at(src.as_fd(), &name) {
                Ok(st) => st,
                // Gone since the directory was read: it is not in the tree now.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    copy::remove_at(dst.as_fd(), &name)?;
                    touched = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let meta = Meta::of(&st);
            let clean = meta.ctime < clock;
            let before = prev.and_then(|p| p.entries.get(&name));
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let node = if meta.is_dir() && st.st_dev == self.dev {
                let prev_dir = match before {
                    Some(Node::Dir(d)) => Some(d),
                    _ => None,
                };
                let same_dir = prev_dir.is_some_and(|d| d.rec.same(&meta));
                self.dir_entry(
                    src,
                    dst,
                    &name,
                    rel,
                    &st,
                    prev_dir,
                    same_dir,
                    clean,
                    &mut touched,
                )?
            } else {
                self.leaf_entry(src, dst, &name, rel, &st, before, clean, &mut touched)?
            };
            rel.truncate(len);
            if let Some(node) = node {
                out.entries.insert(name, node);
            }
        }
        Ok((out, touched))
    }

    #[allow(clippy::too_many_arguments)]
    fn dir_entry(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &OsStr,
        rel: &mut Vec<u8>,
        st: &Stat,
        prev: Option<&Dir>,
        same: bool,
        clean: bool,
        touched: &mut bool,
    ) -> io::Result<Option<Node>> {
        let sub_src = match copy::open_dir_at(src.as_fd(), name) {
            Ok(fd) => fd,
            // Replaced by something else since the stat: the next pass sees what it is.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
                ) =>
            {
                return Ok(prev.cloned().map(|mut d| {
                    d.rec.clean = false;
                    Node::Dir(d)
                }))
            }
            Err(e) => return Err(e),
        };
        let sub_dst = if same && !self.first {
            copy::open_dir_at(dst.as_fd(), name)?
        } else {
            *touched = true;
            copy::stage_dir_at(dst.as_fd(), name)?
        };
        let (mut d, sub_touched) = self.sync_dir(&sub_src, &sub_dst, rel, prev, same)?;
        if !same || self.first {
            copy::apply_dir_meta(&sub_src, &sub_dst, st)?;
            self.changed += usize::from(!same);
        } else if sub_touched {
            copy::apply_dir_times(&sub_dst, st)?;
        }
        d.rec = Record {
            meta: Meta::of(st),
            clean,
            ..Record::default()
        };
        Ok(Some(Node::Dir(d)))
    }

    #[allow(clippy::too_many_arguments)]
    fn leaf_entry(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &OsStr,
        rel: &[u8],
        st: &Stat,
        before: Option<&Node>,
        clean: bool,
        touched: &mut bool,
    ) -> io::Result<Option<Node>> {
        let meta = Meta::of(st);
        if let Some(Node::Leaf(r)) = before {
            let forced = meta.is_reg() && self.force.contains(&meta.ino);
            let group = (meta.nlink > 1 && meta.is_reg()).then_some(meta.ino);
            let refreshed = group.is_some_and(|i| self.links.get(&i).is_some_and(|l| l.fresh));
            if r.same(&meta)
                && !forced
                && !refreshed
                && (!self.first || self.stage_matches(dst.as_fd(), name, r))
            {
                if let Some(ino) = group {
                    self.links.entry(ino).or_insert_with(|| Link {
                        rel: rel.to_vec(),
                        meta: r.meta,
                        clean: r.clean,
                        fresh: false,
                    });
                }
                return Ok(Some(Node::Leaf(*r)));
            }
        }
        *touched = true;
        self.changed += 1;
        if meta.is_reg() && meta.nlink > 1 {
            if let Some(first) = self.links.get(&meta.ino) {
                let stage_ctime =
                    copy::link_leaf(self.stage_root.as_fd(), &first.rel, dst.as_fd(), name)?;
                return Ok(Some(Node::Leaf(Record {
                    meta,
                    // Trusted only if the file linked to was copied from what we see now.
                    clean: clean && first.clean && first.meta == meta,
                    stage_ctime,
                    sparse: (st.st_blocks as u64) * 512 < meta.size,
                })));
            }
        }
        let Some(c) = copy::copy_leaf(src.as_fd(), dst.as_fd(), name, st)? else {
            // A socket: recorded (so it is not "new" each pass), not copied.
            return Ok(Some(Node::Leaf(Record {
                meta,
                clean,
                ..Record::default()
            })));
        };
        self.bytes += c.bytes;
        // What was read differs from the stat before it: copy it again next pass.
        let clean = clean && c.meta == Some(meta);
        if meta.is_reg() && meta.nlink > 1 {
            self.links.insert(
                meta.ino,
                Link {
                    rel: rel.to_vec(),
                    meta,
                    clean,
                    fresh: true,
                },
            );
        }
        Ok(Some(Node::Leaf(Record {
            clean,
            meta,
            stage_ctime: c.stage_ctime,
            sparse: c.sparse,
        })))
    }

    /// The stage's copy is the one the record describes (not changed or removed by an
    /// interrupted run).
    fn stage_matches(&self, dst: BorrowedFd, name: &OsStr, r: &Record) -> bool {
        if r.meta.kind() == libc::S_IFSOCK {
            return true;
        }
        copy::stat_at(dst, name)
            .is_ok_and(|s| (s.st_ctime, s.st_ctime_nsec as u32) == r.stage_ctime)
    }
}

#[cfg(test)]
mod tests;
