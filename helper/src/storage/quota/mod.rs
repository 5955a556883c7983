//! Disk quotas of slots: the most a slot's own directory ([`crate::storage::layout`]) may
//! hold. ext4 and xfs enforce it with a project quota ([`project`]), btrfs with the
//! subvolume's qgroup ([`qgroup`]); any other file system, or an ext4/xfs without project
//! quotas switched on, cannot, and [`check`] says how to make it.
//!
//! The limit lives in the file system (the quota files, the qgroup tree), so it holds
//! across reboots whoever starts the slot; `apply` makes it match the config.

pub mod project;
pub mod qgroup;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::Context;
use slot_config::Slot;

const EXT4_SUPER_MAGIC: i64 = 0xEF53;
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

/// How a file system holds a slot's disk limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ext4 or xfs, project quotas enforced.
    Project { fs: &'static str },
    /// btrfs; `enabled` = quotas already on (the first limit turns them on).
    Qgroup { enabled: bool },
}

/// The file system cannot enforce a disk limit; the message says why and how to make it
/// (bad input for the commands: nothing was changed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unenforceable(pub String);

/// The file system's magic number (statfs f_type).
// f_type is an i64 on x86_64 and aarch64, narrower elsewhere.
#[allow(clippy::unnecessary_cast)]
fn magic(dir: &Path) -> nix::Result<i64> {
    nix::sys::statfs::statfs(dir).map(|s| s.filesystem_type().0 as i64)
}

/// How `p`'s file system is mounted, from /proc/self/mountinfo: the deepest mount of
/// `p`'s device that is a prefix of `p`.
struct Mount {
    source: String,
    point: String,
    /// The file system's own options (ext4 and xfs list `prjquota` there).
    options: String,
}

fn mount_of(p: &Path) -> Option<Mount> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(p).ok()?.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<Mount> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.get(2) != Some(&format!("{major}:{minor}").as_str()) {
            continue;
        }
        let (Some(point), Some(source), Some(options)) = (f.get(4), f.get(sep + 2), f.get(sep + 3))
        else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if p.starts_with(&point) && best.as_ref().is_none_or(|m| point.len() > m.point.len()) {
            best = Some(Mount {
                source: source.to_string(),
                point,
                options: options.to_string(),
            });
        }
    }
    best
}

/// Whether mount options switch project quotas on (`prjquota`; xfs also `pquota`,
/// `pqnoenforce` only counts).
fn prjquota_option(options: &str) -> bool {
    options
        .split(',')
        .any(|o| matches!(o, "prjquota" | "pquota" | "prjjquota"))
}

/// Whether the file system holding `dir` can enforce a slot's disk limit there. `dir` is
/// the slot's directory, or for a slot not made yet the directory it will be cloned from
/// (on btrfs only a subvolume has a qgroup of its own).
pub fn check(dir: &Path) -> Result<Backend, Unenforceable> {
    check_with(dir, true)
}

/// [`check`] for the file system only: on btrfs, any directory (the machines directory a
/// slot will be cloned into) answers for its future subvolumes.
pub fn check_fs(dir: &Path) -> Result<Backend, Unenforceable> {
    check_with(dir, false)
}

fn check_with(dir: &Path, subvolume: bool) -> Result<Backend, Unenforceable> {
    let m = magic(dir).map_err(|e| Unenforceable(format!("{}: {e}", dir.display())))?;
    let mount = mount_of(dir);
    let (dev, mnt) = mount.as_ref().map_or_else(
        || ("its device".into(), "it".into()),
        |m| (m.source.clone(), m.point.clone()),
    );
    let d = dir.display();
    match m {
        BTRFS_SUPER_MAGIC => {
            if subvolume && !crate::storage::image::is_subvolume(dir) {
                return Err(Unenforceable(format!(
                    "{d} is a plain directory on btrfs, not a subvolume, so it has no qgroup to \
                     hold `disk`; nothing was changed. Rebuild the slot from a base image that \
                     is a subvolume (`slot-os make-base-image` makes one), or remove `disk`"
                )));
            }
            let enabled = qgroup::enabled(dir)
                .map_err(|e| Unenforceable(format!("{d}: reading btrfs quota state: {e}")))?;
            Ok(Backend::Qgroup { enabled })
        }
        m @ (EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC) => {
            let fs = if m == EXT4_SUPER_MAGIC { "ext4" } else { "xfs" };
            let f = File::open(dir).map_err(|e| Unenforceable(format!("{d}: {e}")))?;
            // What the quota code says, where we may ask (a container's seccomp filter may
            // refuse quotactl_fd: then the mount options speak alone).
            let state = project::state(f.as_fd()).ok();
            let mounted_with = mount.as_ref().is_some_and(|m| prjquota_option(&m.options));
            match state {
                Some((_, true)) => Ok(Backend::Project { fs }),
                None if mounted_with => Err(Unenforceable(format!(
                    "{d}: the project quota state of its file system cannot be read here \
                     (quotactl refused), so `disk` cannot be checked; nothing was changed"
                ))),
                _ => Err(Unenforceable(how_to(
                    fs,
                    &d.to_string(),
                    &dev,
                    &mnt,
                    state.map(|(tracked, _)| tracked),
                ))),
            }
        }
        _ => Err(Unenforceable(format!(
            "{d} is on a file system that cannot limit a directory's disk use, so `disk` \
             cannot be enforced; nothing was changed. slot-os enforces it on ext4 and xfs \
             (project quotas) and btrfs (qgroups): put the machines directory on one, or \
             remove `disk`"
        ))),
    }
}

/// What to do on this file system to get project quotas enforced. `tracked`: whether
/// the file system counts project usage already (`None`: not known here).
fn how_to(fs: &str, dir: &str, dev: &str, mnt: &str, tracked: Option<bool>) -> String {
    let head = format!(
        "{dir} is on {fs} ({dev}, mounted on {mnt}) without project quotas enforced, so `disk` \
         cannot be enforced; nothing was changed"
    );
    let fstab = "add `prjquota` to its options in /etc/fstab, and mount it again";
    match (fs, tracked) {
        ("ext4", Some(false)) => format!(
            "{head}. To enable them: stop the slots, unmount {mnt}, run `tune2fs -O \
             project,quota {dev}` (for the root file system, from a rescue system), {fstab}. \
             Or remove `disk`"
        ),
        ("ext4", Some(true)) => format!(
            "{head}. It counts project usage but was mounted without `prjquota`: {fstab}. Or \
             remove `disk`"
        ),
        ("ext4", None) => format!(
            "{head}. To enable them: stop the slots, unmount {mnt}, run `tune2fs -O \
             project,quota {dev}` unless `tune2fs -l {dev}` lists both features already (for \
             the root file system, from a rescue system), {fstab}. Or remove `disk`"
        ),
        _ => format!(
            "{head}. xfs turns project quotas on only when mounting: add `prjquota` to its \
             options in /etc/fstab (for the root file system, `rootflags=prjquota` on the \
             kernel command line) and mount it again. Or remove `disk`"
        ),
    }
}

/// One slot's directory and what names it.
pub struct Target<'a> {
    pub dir: &'a Path,
    /// The slot's number, which chooses its project ID on ext4/xfs.
    pub number: Option<u32>,
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// No limit asked and none set: nothing done.
    Nothing,
    /// Limit set (or lifted, `None`).
    Limit(Option<u64>),
    /// Limit set on ext4/xfs after putting the tree into the project.
    Tagged {
        limit: u64,
        id: u32,
        tagged: project::Tagged,
    },
    /// Limit set after switching btrfs quotas on for the file system.
    QuotasEnabled(u64),
}

/// Where the helper keeps what it needs besides the slot: the short lock that makes
/// choosing a project ID and claiming it one step, and /etc/projid.
pub struct Env<'a> {
    pub paths: &'a slot_config::Paths,
}

impl Env<'_> {
    fn reserved_ids(&self) -> BTreeSet<u32> {
        std::fs::read_to_string(self.paths.under("/etc/projid"))
            .map(|t| project::reserved_ids(&t))
            .unwrap_or_default()
    }
}

/// Makes the slot's directory hold `limit` (`None`: no limit). Without a limit nothing is
/// switched on or tagged; a limit set earlier is lifted. A directory that does not exist
/// (an image not made yet) is left alone.
pub fn apply(env: &Env<'_>, t: &Target<'_>, limit: Option<u64>) -> anyhow::Result<Applied> {
    if !t.dir.is_dir() {
        return Ok(Applied::Nothing);
    }
    let d = t.dir.display();
    let Some(bytes) = limit else {
        return lift(t.dir);
    };
    match check(t.dir)? {
        Backend::Qgroup { enabled } => {
            if !enabled {
                qgroup::enable(t.dir).with_context(|| format!("enabling btrfs quotas for {d}"))?;
            }
            qgroup::set_limit(t.dir, Some(bytes))
                .with_context(|| format!("setting the qgroup limit of {d}"))?;
            Ok(if enabled {
                Applied::Limit(Some(bytes))
            } else {
                Applied::QuotasEnabled(bytes)
            })
        }
        Backend::Project { .. } => {
            let f = open_dir(t.dir)?;
            let fd = f.as_fd();
            let (have, inherits) =
                project::dir_project(fd).with_context(|| format!("reading the project of {d}"))?;
            let id = if project::is_ours(have) {
                have
            } else {
                let _l = crate::sys::lock::brief(env.paths, "quota-ids")?;
                let id =
                    project::choose_id(fd, project::preferred_id(t.number), &env.reserved_ids())
                        .with_context(|| format!("choosing a project ID for {d}"))?
                        .with_context(|| {
                            format!(
                                "no free project ID for {d}: {} to {} are all in use",
                                project::FIRST_ID,
                                project::LAST_ID
                            )
                        })?;
                // Claimed under the lock: its usage is no longer zero.
                project::tag_root_only(fd, id)
                    .with_context(|| format!("claiming project {id} for {d}"))?;
                id
            };
            let done = if project::is_ours(have) && inherits {
                None
            } else {
                Some(
                    project::tag_tree(fd, t.dir, id)
                        .with_context(|| format!("putting {d} into project {id}"))?,
                )
            };
            project::set_limit(fd, id, Some(bytes))
                .with_context(|| format!("setting the quota of project {id} ({d})"))?;
            Ok(match done {
                Some(tagged) => Applied::Tagged {
                    limit: bytes,
                    id,
                    tagged,
                },
                None => Applied::Limit(Some(bytes)),
            })
        }
    }
}

fn open_dir(dir: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .with_context(|| format!("opening {}", dir.display()))
}

/// Lifts a limit set earlier, keeping the project (its usage stays visible); touches
/// nothing where none was set.
fn lift(dir: &Path) -> anyhow::Result<Applied> {
    let d = dir.display();
    let Ok(m) = magic(dir) else {
        return Ok(Applied::Nothing);
    };
    match m {
        BTRFS_SUPER_MAGIC if crate::storage::image::is_subvolume(dir) => {
            match qgroup::usage(dir).with_context(|| format!("reading the qgroup of {d}"))? {
                Some((_, Some(_))) => {
                    qgroup::set_limit(dir, None)
                        .with_context(|| format!("lifting the qgroup limit of {d}"))?;
                    Ok(Applied::Limit(None))
                }
                _ => Ok(Applied::Nothing),
            }
        }
        EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC => {
            let f = open_dir(dir)?;
            let Ok((id, _)) = project::dir_project(f.as_fd()) else {
                return Ok(Applied::Nothing);
            };
            if !project::is_ours(id) {
                return Ok(Applied::Nothing);
            }
            let q = project::get(f.as_fd(), id).unwrap_or_default();
            if q.limit_bytes.is_none() {
                return Ok(Applied::Nothing);
            }
            project::set_limit(f.as_fd(), id, None)
                .with_context(|| format!("lifting the quota of project {id} ({d})"))?;
            Ok(Applied::Limit(None))
        }
        _ => Ok(Applied::Nothing),
    }
}

impl Applied {
    /// What was done, for the line a command prints.
    pub fn describe(&self) -> String {
        let size = |b: u64| slot_config::SizeLimit::Bytes(b).to_string();
        match self {
            Applied::Nothing => "no disk limit".into(),
            Applied::Limit(Some(b)) => format!("disk limit {}", size(*b)),
            Applied::Limit(None) => "disk limit lifted".into(),
            Applied::Tagged { limit, id, tagged } => format!(
                "disk limit {} (project {id}; {} files and directories put into it)",
                size(*limit),
                tagged.inodes
            ),
            Applied::QuotasEnabled(b) => format!(
                "disk limit {} (btrfs quotas were off on this file system: switched on)",
                size(*b)
            ),
        }
    }
}

/// The directory a slot's limit applies to.
pub fn slot_dir(machines: &Path, slot: &Slot) -> std::path::PathBuf {
    crate::storage::layout::own_data_dir(machines, slot)
}

/// Whether the slot's limit, if it has one, can be enforced where its data is. A slot
/// whose directory does not exist yet is judged by the file system it will be made on.
pub fn check_slot(machines: &Path, slot: &Slot) -> Result<Option<Backend>, Unenforceable> {
    if slot.resources.limits.disk_bytes().is_none() {
        return Ok(None);
    }
    let dir = slot_dir(machines, slot);
    if dir.is_dir() {
        check(&dir).map(Some)
    } else {
        check_fs(machines).map(Some)
    }
}

/// For slots about to be made, `(name, cloned from base)`: the slots whose disk limit (their
/// own, or `[defaults]`' for a slot without a file yet) the file system cannot hold, each
/// with why. A clone is judged by the base image it is made from (on btrfs a snapshot of a
/// subvolume is one), a slot whose image exists by that image.
pub fn refused_new(
    cfg: &slot_config::Config,
    machines: &Path,
    base: &str,
    slots: &[(&str, bool)],
) -> Vec<String> {
    let mut refused = Vec::new();
    for (name, clone) in slots {
        let limit = cfg.slot(name).map_or(cfg.host.limits.disk_bytes(), |s| {
            s.resources.limits.disk_bytes()
        });
        if limit.is_none() {
            continue;
        }
        let dir = match (clone, cfg.slot(name)) {
            (true, _) => machines.join(base),
            (false, Some(s)) => slot_dir(machines, s),
            (false, None) => machines.join(name),
        };
        if let Err(e) = check(&dir) {
            refused.push(format!("{name}: {e}"));
        }
    }
    refused
}

/// Makes the slot's directory hold the slot's configured limit (or none).
pub fn apply_slot(
    paths: &slot_config::Paths,
    machines: &Path,
    slot: &Slot,
) -> anyhow::Result<Applied> {
    let dir = slot_dir(machines, slot);
    apply(
        &Env { paths },
        &Target {
            dir: &dir,
            number: slot.number,
        },
        slot.resources.limits.disk_bytes(),
    )
}

/// Before a slot's root is replaced by `new` (a restore): `new` is put into the project of
/// the root it replaces, so the slot keeps its ID and the swap needs no walk after it.
/// btrfs needs nothing: the new subvolume gets its limit when applied after the swap.
pub fn adopt(old: &Path, new: &Path) -> anyhow::Result<()> {
    let Ok(f) = open_dir(old) else { return Ok(()) };
    let Ok((id, _)) = project::dir_project(f.as_fd()) else {
        return Ok(());
    };
    if !project::is_ours(id) {
        return Ok(());
    }
    let n = open_dir(new)?;
    project::tag_tree(n.as_fd(), new, id)
        .with_context(|| format!("putting {} into project {id}", new.display()))?;
    Ok(())
}

/// Used bytes and limit of a slot's directory, where a quota tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub used: u64,
    pub limit: Option<u64>,
}

/// What the quota says the slot's directory uses; `None` where no quota tracks it (no
/// project of ours, btrfs quotas off, another file system).
pub fn usage(dir: &Path) -> Option<Usage> {
    match magic(dir).ok()? {
        BTRFS_SUPER_MAGIC => {
            let (used, limit) = qgroup::usage(dir).ok()??;
            Some(Usage { used, limit })
        }
        EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC => {
            let f = open_dir(dir).ok()?;
            let (id, _) = project::dir_project(f.as_fd()).ok()?;
            if !project::is_ours(id) {
                return None;
            }
            let q = project::get(f.as_fd(), id).ok()?;
            Some(Usage {
                used: q.used_bytes,
                limit: q.limit_bytes,
            })
        }
        _ => None,
    }
}

/// Before a slot's directory is deleted: its project's limit goes, so the ID is free
/// again once the files are gone (btrfs: machined's RemoveImage destroys the qgroup with
/// the subvolume).
pub fn release(dir: &Path) -> anyhow::Result<()> {
    lift(dir).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_to_names_the_commands() {
        let m = how_to(
            "ext4",
            "/var/lib/machines/slot00",
            "/dev/vdb1",
            "/var/lib/machines",
            Some(false),
        );
        assert!(m.contains("tune2fs -O project,quota /dev/vdb1"), "{m}");
        assert!(
            m.contains("prjquota") && m.contains("nothing was changed"),
            "{m}"
        );
        let m = how_to("ext4", "/x", "/dev/vdb1", "/", Some(true));
        assert!(
            m.contains("mounted without `prjquota`") && !m.contains("tune2fs"),
            "{m}"
        );
        let m = how_to("ext4", "/x", "/dev/vdb1", "/", None);
        assert!(m.contains("unless `tune2fs -l /dev/vdb1`"), "{m}");
        let m = how_to("xfs", "/x", "/dev/sda2", "/", Some(false));
        assert!(m.contains("rootflags=prjquota"), "{m}");
    }

    #[test]
    fn prjquota_among_mount_options() {
        assert!(prjquota_option("rw,relatime,prjquota"));
        assert!(prjquota_option("rw,attr2,inode64,pquota"));
        assert!(!prjquota_option("rw,relatime,errors=remount-ro"));
        assert!(!prjquota_option("rw,pqnoenforce"));
    }

    #[test]
    fn other_file_systems_cannot_enforce() {
        // procfs stands for tmpfs, overlayfs, NFS...; a plain ext4 without project quotas
        // is refused with how_to's text (the e2e tests run that on a real one).
        match check(Path::new("/proc")) {
            Err(Unenforceable(m)) => {
                assert!(m.contains("cannot limit a directory's disk use"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
