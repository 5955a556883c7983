//! Which storage backend a new slot gets: what the host asks for (`[storage] backend`, or
//! a slot's own `storage`), checked against what this host can do.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use slot_config::Storage;

use super::layout::HIDDEN;
use crate::storage::image::is_btrfs;
use crate::sys::overlay;

/// The backend for a new slot and why it was chosen (shown by `build`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub storage: Storage,
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage backend \"btrfs\" needs the machines directory {0} on btrfs; use \"auto\", \"overlay\" or \"copy\"")]
    NotBtrfs(String),
    #[error("storage backend \"overlay\" is not available here: {0}")]
    NoOverlay(String),
}

/// Resolves `asked` (`None` = auto) for the machines directory `machines`.
pub fn choose(asked: Option<Storage>, machines: &Path, stage: &Path) -> Result<Choice, Error> {
    let shown = machines.display().to_string();
    match asked {
        Some(Storage::Btrfs) if !is_btrfs(machines) => Err(Error::NotBtrfs(shown)),
        Some(Storage::Btrfs) => Ok(Choice {
            storage: Storage::Btrfs,
            why: "asked for".into(),
        }),
        Some(Storage::Copy) => Ok(Choice {
            storage: Storage::Copy,
            why: "asked for".into(),
        }),
        Some(Storage::Overlay) => probe(machines, stage)
            .map(|()| Choice {
                storage: Storage::Overlay,
                why: "asked for".into(),
            })
            .map_err(Error::NoOverlay),
        None if is_btrfs(machines) => Ok(Choice {
            storage: Storage::Btrfs,
            why: format!("auto: {shown} is btrfs, a snapshot takes milliseconds"),
        }),
        None => match probe(machines, stage) {
            Ok(()) => Ok(Choice {
                storage: Storage::Overlay,
                why: format!("auto: {shown} is not btrfs; overlay with idmapped layers works here"),
            }),
            Err(e) => Ok(Choice {
                storage: Storage::Copy,
                why: format!(
                    "auto: {shown} is not btrfs and overlay with idmapped layers is not available ({e}); a full copy per slot"
                ),
            }),
        },
    }
}

/// Whether an overlay with idmapped layers can be made on the machines directory's file
/// system: a small one is made in `MACHINES/.slot-os/.probe-PID` and checked (a file of
/// the lower must appear shifted), then removed.
pub fn probe(machines: &Path, stage: &Path) -> Result<(), String> {
    // Hidden from machined, and gone afterwards: a probe (`build --dry-run` too) leaves
    // nothing behind.
    let dir = machines.join(format!("{HIDDEN}-probe-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let r = (|| -> Result<(), String> {
        let e = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(e("making the probe"))?;
        for d in ["lower", "layer/upper", "layer/work"] {
            fs::create_dir_all(dir.join(d)).map_err(e("making the probe"))?;
        }
        fs::write(dir.join("lower/f"), "").map_err(e("making the probe"))?;
        fs::create_dir_all(stage).map_err(e("making the staging directory"))?;
        let open = |p: &Path| fs::File::open(p).map(std::os::fd::OwnedFd::from);
        let l = open(&dir.join("lower")).map_err(e("opening the probe"))?;
        let u = open(&dir.join("layer")).map_err(e("opening the probe"))?;
        let base = slot_config::storage::UID_BASE_START;
        let spec = overlay::Spec {
            lowers: vec![("probe-lower", l.as_fd())],
            upper: Some(("probe", u.as_fd())),
            shift: Some(base),
            read_only: false,
        };
        let mnt = overlay::mount_detached(&spec, stage).map_err(|err| err.to_string())?;
        let root = overlay::root_dir(&mnt).map_err(|err| err.to_string())?;
        let st = rustix::fs::statat(&root, "f", rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|err| format!("stat in the probe overlay: {err}"))?;
        if st.st_uid != base {
            return Err(format!(
                "a file of the probe's lower shows UID {} instead of {base}: the kernel ignored the idmapping",
                st.st_uid
            ));
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&dir);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btrfs_is_refused_where_there_is_none_and_copy_always_works() {
        let t = tempfile::tempdir_in("/var/tmp").unwrap();
        if is_btrfs(t.path()) {
            return;
        }
        let stage = t.path().join("stage");
        assert!(matches!(
            choose(Some(Storage::Btrfs), t.path(), &stage),
            Err(Error::NotBtrfs(_))
        ));
        assert_eq!(
            choose(Some(Storage::Copy), t.path(), &stage)
                .unwrap()
                .storage,
            Storage::Copy
        );
    }

    #[test]
    fn auto_picks_overlay_where_the_kernel_idmaps_layers() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let t = tempfile::tempdir_in("/var/tmp").unwrap();
        if is_btrfs(t.path()) {
            return;
        }
        let c = choose(None, t.path(), &t.path().join("stage")).unwrap();
        // This machine's kernel (6.18) has idmapped layers; an old one would say copy.
        assert_eq!(c.storage, Storage::Overlay, "{}", c.why);
        let left: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "stage")
            .collect();
        assert!(left.is_empty(), "probe left {left:?}");
    }
}
