//! The helper's one connection to the system bus, and a blocking facade over the typed
//! systemd1/machine1/network1 proxies of `zbus_systemd` (zbus 6 is async-only; the CLI is
//! not, so each call runs to completion in `zbus::block_on`). Operations over many units
//! run concurrently on this one connection.

mod machined;
mod systemd;

use std::time::Duration;

use anyhow::Context;

pub use systemd::{UnitProp, UnitStatus};

pub struct Bus {
    conn: zbus::Connection,
}

/// Long enough for machined to copy a large image (CloneImage on ext4 copies the tree).
const METHOD_TIMEOUT: Duration = Duration::from_secs(3600);

impl Bus {
    pub fn system() -> anyhow::Result<Bus> {
        let conn = zbus::block_on(
            zbus::connection::Builder::system()
                .method_timeout(METHOD_TIMEOUT)
                .build(),
        )
        .context("connecting to the system bus (is dbus running? slot-os needs a systemd host)")?;
        Ok(Bus { conn })
    }

    pub(crate) fn conn(&self) -> &zbus::Connection {
        &self.conn
    }
}

/// systemd's object path encoding (`bus_path_encode`): every byte that is not
/// [A-Za-z0-9] becomes `_xx`; a leading digit too.
pub(crate) fn encode_path(prefix: &str, name: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + name.len() * 3);
    out.push_str(prefix);
    out.push('/');
    if name.is_empty() {
        out.push('_');
    }
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_encoding_matches_systemd() {
        assert_eq!(
            super::encode_path(
                "/org/freedesktop/systemd1/unit",
                "systemd-nspawn@slot00.service"
            ),
            "/org/freedesktop/systemd1/unit/systemd_2dnspawn_40slot00_2eservice"
        );
        assert_eq!(super::encode_path("/x", "0ab"), "/x/_30ab");
    }
}
