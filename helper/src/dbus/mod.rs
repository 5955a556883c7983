//! The helper's one connection to the system bus, and a blocking facade over the typed
//! systemd1/machine1/network1 proxies of `zbus_systemd`.
//!
//! zbus 6 is async-only; the CLI is not. Each facade call runs its future to completion in
//! `zbus::block_on`, zbus's own runtime (zruntime): the calling thread drives the connection
//! while it waits, and no other runtime (no tokio) is linked in. Operations over many units or
//! machines put all their calls in flight at once on this one connection.
//!
//! Every method call has a time limit: [`CALL_TIMEOUT`] for ordinary calls, [`RELOAD_TIMEOUT`]
//! for a daemon-reload (as `systemctl daemon-reload`), [`LONG_TIMEOUT`] for machined's copies
//! and removals of whole images. Waiting for a job (start/stop) has no limit of its own: the
//! unit's own start/stop timeouts bound it, as they bound `systemctl start`.

// The facade is the project's whole D-Bus surface; not every command uses every call.
#![allow(dead_code)]

mod machined;
mod networkd;
mod overview;
pub mod running;
mod systemd;

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::Context;

#[allow(unused_imports)] // for the commands that name them
pub use machined::{ImageInfo, MachineInfo};
#[allow(unused_imports)]
pub use overview::SlotsOverview;
pub use systemd::{UnitProp, UnitStatus};

/// One connection to the system bus. Cheap calls; build it once per command.
pub struct Bus {
    conn: zbus::Connection,
}

/// Ordinary method calls (sd-bus's default).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);
/// `Reload` answers once the reload, generators included, is complete (systemctl: 6 min).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(6 * 60);
/// CloneImage / RemoveImage / CopyToMachine copy or delete whole trees.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl Bus {
    pub fn system() -> anyhow::Result<Bus> {
        let conn = zbus::block_on(
            zbus::connection::Builder::system()
                // The ceiling; each call sets its own, shorter limit with `within`.
                .method_timeout(LONG_TIMEOUT)
                // Room for the JobRemoved signals of every job on the host while we wait.
                .max_queued(NonZeroUsize::new(4096).expect("non-zero"))
                .build(),
        )
        .context("connecting to the system bus (is dbus running? slot-os needs a systemd host)")?;
        Ok(Bus { conn })
    }

    pub(crate) fn conn(&self) -> &zbus::Connection {
        &self.conn
    }
}

/// Runs a D-Bus call with a time limit, on the runtime `zbus::block_on` drives.
pub(crate) async fn within<T>(
    limit: Duration,
    call: impl Future<Output = zbus::Result<T>>,
) -> zbus::Result<T> {
    match zruntime::SharedRuntime::current() {
        Ok(rt) => match rt.timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(zbus::Error::from(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", limit.as_secs()),
            ))),
        },
        // Not inside zbus::block_on: the connection's own (long) limit still applies.
        Err(_) => call.await,
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

impl Bus {
    /// After a config change: systemd re-runs the generator, then a running networkd
    /// re-reads the files it wrote (networkd does not watch its directories). A networkd
    /// that does not run reads them when a slot or bridge pulls it in, so it is not started
    /// here. A failed reload only loses the network part, with a warning.
    pub fn reload_config(&self) -> anyhow::Result<()> {
        self.daemon_reload()?;
        let unit = slot_config::render::NETWORKD_UNIT.to_string();
        let running = self
            .unit_states(std::slice::from_ref(&unit))
            .pop()
            .and_then(Result::ok)
            .is_some_and(|s| s.active_state == "active");
        if !running {
            return Ok(());
        }
        if let Err(e) = self.network_reload_running() {
            eprintln!(
                "slot-os: warning: {e:#}; slot networks are applied once systemd-networkd runs"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Against a real systemd + machined: run inside a test host that has a machined image
    /// `slot00` and systemd-networkd running,
    /// `slot_os-<hash> dbus::tests::live --ignored --nocapture`.
    #[test]
    #[ignore = "needs a live systemd, machined and networkd (a test host) with image slot00"]
    fn live_images_units_and_networkd() {
        let bus = super::Bus::system().unwrap();
        bus.daemon_reload().unwrap();
        bus.network_reload().unwrap();
        let images = bus.list_images().unwrap();
        let base = images
            .iter()
            .find(|i| i.name == "slot00")
            .expect("image slot00");
        assert_eq!(base.path, "/var/lib/machines/slot00");
        let _ = bus.remove_image("live-clone");
        let _ = bus.remove_image("live-clone2");
        bus.clone_image("slot00", "live-clone", false).unwrap();
        bus.rename_image("live-clone", "live-clone2").unwrap();
        let images = bus.list_images().unwrap();
        let c = images.iter().find(|i| i.name == "live-clone2").unwrap();
        assert_eq!(c.path, "/var/lib/machines/live-clone2");
        assert!(!c.read_only);
        assert!(!images.iter().any(|i| i.name == "live-clone"));
        bus.remove_image("live-clone2").unwrap();
        let e = bus.remove_image("live-clone2").unwrap_err();
        assert!(
            format!("{e:#}").contains("RemoveImage live-clone2"),
            "{e:#}"
        );
        // a unit never loaded: systemd loads it for us
        let u = "systemd-nspawn@never-loaded.service".to_string();
        let st = bus.unit_status(&u).unwrap();
        assert_eq!(
            (st.active_state.as_str(), st.sub_state.as_str()),
            ("inactive", "dead")
        );
        assert_eq!(st.load_state, "loaded");
        let brief = bus.unit_states(std::slice::from_ref(&u));
        assert_eq!(brief[0].as_ref().unwrap().active_state, "inactive");
        // stop of a stopped unit, freeze of a stopped unit
        assert!(bus.stop_units(std::slice::from_ref(&u))[0].is_ok());
        let e = bus
            .freeze_units(std::slice::from_ref(&u))
            .pop()
            .unwrap()
            .unwrap_err();
        assert!(
            e.to_string().contains("not running") || e.to_string().contains("cannot suspend"),
            "{e}"
        );
        println!("live D-Bus checks passed: {} images", images.len());
    }

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
