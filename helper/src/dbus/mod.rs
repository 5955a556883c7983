//! The helper's one connection to the system bus, and a blocking facade over the typed
//! systemd1/machine1/network1 proxies of `zbus_systemd`.
//!
//! zbus 6 is async-only; the CLI is not. Each facade call runs its future to completion in
//! `zbus::block_on`, zbus's own runtime (zruntime): the calling thread drives the connection
//! while it waits, and no other runtime (no tokio) is linked in. Operations over many units or
//! machines put many calls in flight at once on this one connection, but never more than
//! the bus and the services take (see [`IN_FLIGHT`] and [`MACHINED_OPERATIONS`]).
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
mod usage;

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::Context;

#[allow(unused_imports)] // for the commands that name them
pub use machined::{ImageInfo, MachineInfo};
#[allow(unused_imports)]
pub use overview::SlotsOverview;
pub use systemd::{default_jobs, UnitProp, UnitStatus};
#[allow(unused_imports)]
pub use usage::SlotUsage;

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

/// Calls one per-slot operation keeps in flight on the connection. dbus-daemon refuses a
/// connection's 129th pending call (`max_replies_per_connection`, 128 by default:
/// "LimitsExceeded"); with a few such operations running side by side (`list` asks systemd
/// and machined at once) 32 each stays well below it, and every call is answered in
/// milliseconds, so a larger window gains nothing measurable (docs/notes/scale.md).
pub const IN_FLIGHT: usize = 32;

/// CloneImage/RemoveImage calls in flight at once. machined runs each in a worker process
/// and refuses more than 64 at a time for all its clients together (`OPERATIONS_MAX` in
/// src/machine/operation.h, "Too many ongoing operations"); half of that leaves room for
/// other clients, and clones on 2 cores gain nothing from more (docs/notes/scale.md).
pub const MACHINED_OPERATIONS: usize = 32;

/// Runs `futs` with at most `limit` of them in flight at once; results in input order.
pub(crate) async fn join_bounded<F: Future>(
    futs: impl IntoIterator<Item = F>,
    limit: usize,
) -> Vec<F::Output> {
    use futures_util::stream::{self, StreamExt};
    stream::iter(futs).buffered(limit.max(1)).collect().await
}

/// The bus daemon or the service refused a call because too many are under way
/// (`org.freedesktop.DBus.Error.LimitsExceeded`): worth trying again shortly.
pub(crate) fn is_limits_exceeded(e: &zbus::Error) -> bool {
    systemd::error_name(e).as_deref() == Some("org.freedesktop.DBus.Error.LimitsExceeded")
}

/// Runs `call()` and, while the answer is LimitsExceeded (another client of machined holds
/// its operation slots: there is no signal for when one frees up), tries again after
/// 50 ms, 100 ms, ... up to 1 s apart, for at most `patience`.
pub(crate) async fn retry_when_busy<T, F, Fut>(patience: Duration, mut call: F) -> zbus::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = zbus::Result<T>>,
{
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match call().await {
            Err(e) if is_limits_exceeded(&e) && start.elapsed() + pause < patience => {
                match zruntime::SharedRuntime::current() {
                    Ok(rt) => rt.sleep(pause).await,
                    Err(_) => return Err(e),
                }
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            r => return r,
        }
    }
}

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

    /// Pending once, with a wake-up, so the executor polls the others first.
    async fn yield_now() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await
    }

    #[test]
    fn bounded_joins_keep_order_and_their_limit() {
        use std::cell::Cell;
        let now = Cell::new(0usize);
        let most = Cell::new(0usize);
        let out = zbus::block_on(super::join_bounded(
            (0..100).map(|i| {
                let (now, most) = (&now, &most);
                async move {
                    now.set(now.get() + 1);
                    most.set(most.get().max(now.get()));
                    // Let the others run while this one is "in flight".
                    for _ in 0..3 {
                        yield_now().await;
                    }
                    now.set(now.get() - 1);
                    i * 2
                }
            }),
            7,
        ));
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(most.get(), 7);
    }

    #[test]
    fn busy_machined_is_asked_again() {
        let busy = || {
            zbus::Error::FDO(Box::new(zbus::fdo::Error::LimitsExceeded(
                "Too many ongoing operations.".into(),
            )))
        };
        assert!(super::is_limits_exceeded(&busy()));
        assert!(!super::is_limits_exceeded(&zbus::Error::Failure(
            "org.freedesktop.machine1.NoSuchImage: No image 'x' known".into()
        )));
        let tries = std::cell::Cell::new(0);
        let r = zbus::block_on(super::retry_when_busy(
            std::time::Duration::from_secs(60),
            || {
                tries.set(tries.get() + 1);
                let r = if tries.get() < 3 { Err(busy()) } else { Ok(7) };
                async move { r }
            },
        ));
        assert_eq!((r.unwrap(), tries.get()), (7, 3));
        // Out of patience: the refusal is the answer.
        let tries = std::cell::Cell::new(0);
        let r: zbus::Result<()> = zbus::block_on(super::retry_when_busy(
            std::time::Duration::from_millis(10),
            || {
                tries.set(tries.get() + 1);
                let e = busy();
                async move { Err(e) }
            },
        ));
        assert!(super::is_limits_exceeded(&r.unwrap_err()));
        assert_eq!(tries.get(), 1);
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
