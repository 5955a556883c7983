//! The resource keys that `[defaults]` and a slot file share beyond CPU and memory: the
//! disk quota and the unit's task and IO limits. Parsed the same way in both files; a
//! slot's own value wins over the default, key by key.

use crate::table::Fields;
use crate::values::{Bandwidth, Disk, TasksMax, MAX_IO_WEIGHT, MIN_IO_WEIGHT};

/// `None` everywhere = not set (the default applies; with no default, nothing is
/// rendered and systemd's own default holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most the slot's own data may take on disk (a project quota or btrfs qgroup
    /// the helper keeps; nothing in the unit).
    pub disk: Option<Disk>,
    /// TasksMax= (the stock unit's 16384 when unset).
    pub tasks_max: Option<TasksMax>,
    /// IOWeight= (systemd's 100 when unset).
    pub io_weight: Option<u32>,
    /// IOReadBandwidthMax= on the device of the machines directory.
    pub io_read_bandwidth_max: Option<Bandwidth>,
    /// IOWriteBandwidthMax= on the device of the machines directory.
    pub io_write_bandwidth_max: Option<Bandwidth>,
}

/// The keys, in the order of the key lists and the manual.
pub const LIMIT_KEYS: &[&str] = &[
    "disk",
    "tasks_max",
    "io_weight",
    "io_read_bandwidth_max",
    "io_write_bandwidth_max",
];

impl Limits {
    /// Reads the keys from a table whose allowed keys include [`LIMIT_KEYS`]; problems go
    /// to `f`.
    pub fn parse(f: &mut Fields<'_, '_>) -> Limits {
        Limits {
            disk: f.parsed("disk"),
            tasks_max: f.parsed_or_int("tasks_max"),
            io_weight: f
                .get("io_weight")
                .and_then(|_| f.integer("io_weight", MIN_IO_WEIGHT, MAX_IO_WEIGHT)),
            io_read_bandwidth_max: f.parsed("io_read_bandwidth_max"),
            io_write_bandwidth_max: f.parsed("io_write_bandwidth_max"),
        }
    }

    /// These values, each unset one taken from `defaults`.
    pub fn or(self, defaults: Limits) -> Limits {
        Limits {
            disk: self.disk.or(defaults.disk),
            tasks_max: self.tasks_max.or(defaults.tasks_max),
            io_weight: self.io_weight.or(defaults.io_weight),
            io_read_bandwidth_max: self
                .io_read_bandwidth_max
                .or(defaults.io_read_bandwidth_max),
            io_write_bandwidth_max: self
                .io_write_bandwidth_max
                .or(defaults.io_write_bandwidth_max),
        }
    }

    /// The disk limit in bytes; `None` = no limit.
    pub fn disk_bytes(&self) -> Option<u64> {
        self.disk.and_then(|d| d.0.bytes())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_files_accept_every_limit_key() {
        for k in super::LIMIT_KEYS {
            assert!(
                crate::host::DEFAULT_KEYS.contains(k),
                "[defaults] lacks {k}"
            );
            assert!(crate::slot::SLOT_KEYS.contains(k), "slot files lack {k}");
        }
    }
}
