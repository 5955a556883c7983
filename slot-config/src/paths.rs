use std::env;
use std::path::{Path, PathBuf};

/// Every path slot-os reads or writes, moved under `$SLOT_OS_ROOT` when it is set (tests),
/// the real system paths otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn from_env() -> Self {
        match env::var_os("SLOT_OS_ROOT") {
            Some(r) if !r.is_empty() => Paths::with_root(r),
            _ => Paths::with_root("/"),
        }
    }

    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_real_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Maps an absolute system path (`/etc/slot-os`) to where it lives under the root.
    pub fn under(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let p = absolute.as_ref();
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    pub fn config_dir(&self) -> PathBuf {
        self.under("/etc/slot-os")
    }
    pub fn nspawn_dir(&self) -> PathBuf {
        self.under("/run/systemd/nspawn")
    }
    pub fn network_dir(&self) -> PathBuf {
        self.under("/run/systemd/network")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.under("/run/slot-os")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.under("/var/lib/slot-os")
    }
    pub fn cpu_online(&self) -> PathBuf {
        self.under("/sys/devices/system/cpu/online")
    }
    pub fn meminfo(&self) -> PathBuf {
        self.under("/proc/meminfo")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_root_moves_absolute_paths() {
        let p = Paths::with_root("/tmp/x");
        assert_eq!(p.config_dir(), PathBuf::from("/tmp/x/etc/slot-os"));
        assert_eq!(
            Paths::with_root("/").nspawn_dir(),
            PathBuf::from("/run/systemd/nspawn")
        );
    }
}
