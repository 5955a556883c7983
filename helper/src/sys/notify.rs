//! sd_notify(3) reports for runs started by a unit (scheduled backups, `update all`), so
//! `systemctl status` shows where a long run is. Outside a unit (no NOTIFY_SOCKET) every
//! call is a no-op.

use sd_notify::NotifyState;

/// Each progress report buys this much more time from the unit's start timeout, so a
/// long run that keeps moving is not killed while a stuck one still is.
const EXTEND_USEC: u32 = 120_000_000;

pub fn active() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

pub fn progress(status: &str) {
    let _ = sd_notify::notify(&[
        NotifyState::Status(status),
        NotifyState::ExtendTimeoutUsec(EXTEND_USEC),
    ]);
}

pub fn done(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(status), NotifyState::Ready]);
}
