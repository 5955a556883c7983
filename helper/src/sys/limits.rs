//! Kernel limits a stock host reaches with many slots, warned about before they bite.
//!
//! Every booted slot holds inotify instances (its systemd, journald, udevd, logind, dbus:
//! about 8, the figure issue 11 measured: 16 slots fit in Debian's default of 128). They are
//! charged to the host's root user, since the slots' user namespaces belong to it, so the
//! limit is the host's `fs.inotify.max_user_instances`, not a per-slot one.

/// Inotify instances one booted slot holds.
pub const INOTIFY_PER_SLOT: u64 = 8;
/// What the host's own services hold (systemd, journald, udevd, logind, ...).
pub const INOTIFY_HOST: u64 = 16;
pub const INOTIFY_SYSCTL: &str = "/proc/sys/fs/inotify/max_user_instances";

/// The warning for `booted` slots under `limit`, if they would not fit.
pub fn inotify_warning(limit: u64, booted: u64) -> Option<String> {
    let need = INOTIFY_HOST + booted * INOTIFY_PER_SLOT;
    if need <= limit {
        return None;
    }
    let fit = limit.saturating_sub(INOTIFY_HOST) / INOTIFY_PER_SLOT;
    Some(format!(
        "{booted} booted slot(s) need about {need} inotify instances, but fs.inotify.max_user_instances \
         is {limit}: only about {fit} can boot, the others time out. The package's \
         /usr/lib/sysctl.d/60-slot-os.conf raises it (apply it with `sysctl --system`), or: \
         sysctl -w fs.inotify.max_user_instances={}",
        (need * 2).next_power_of_two()
    ))
}

/// The same for this host's current limit; None if it cannot be read.
pub fn inotify_warning_here(booted: u64) -> Option<String> {
    let limit: u64 = std::fs::read_to_string(INOTIFY_SYSCTL)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    inotify_warning(limit, booted)
}

#[cfg(test)]
mod tests {
    #[test]
    fn debian_default_fits_about_sixteen() {
        assert_eq!(super::inotify_warning(128, 14), None);
        let w = super::inotify_warning(128, 30).unwrap();
        assert!(w.contains("30 booted slot(s) need about 256"), "{w}");
        assert!(w.contains("only about 14 can boot"), "{w}");
        assert!(w.contains("max_user_instances=512"), "{w}");
        assert_eq!(super::inotify_warning(1_048_576, 1000), None);
    }
}
