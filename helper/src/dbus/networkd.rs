//! org.freedesktop.network1 (systemd-networkd): reloading it after a config change,
//! starting it where Debian left it disabled, and links' configuration state.

use std::time::{Duration, Instant};

use anyhow::Context;
use zbus::proxy::CacheProperties;

use super::{within, Bus, CALL_TIMEOUT};

impl Bus {
    /// networkd's Reload: re-reads .netdev/.network files and reconfigures links. networkd
    /// is started first (StartUnit, a no-op when it runs): Debian installs it disabled, and
    /// then network1's D-Bus activation alias does not exist either. It stays wanted at
    /// boot through the generator's links, never through `systemctl enable`.
    pub fn network_reload(&self) -> anyhow::Result<()> {
        self.start_networkd()?;
        self.wait_for_network1()?;
        self.network_reload_running()
    }

    /// Waits until networkd owns its bus name. Its start job can end before it has taken
    /// the name, and a call sent in between is D-Bus-activated, which fails on a host where
    /// networkd is disabled (no dbus-org.freedesktop.network1.service alias).
    pub fn wait_for_network1(&self) -> anyhow::Result<()> {
        use futures_util::StreamExt;
        const NAME: &str = "org.freedesktop.network1";
        zbus::block_on(async {
            let d = zbus::fdo::DBusProxy::new(self.conn()).await?;
            // Subscribe first, then look: a name taken in between is not missed.
            let mut changes = d.receive_name_owner_changed_with_args(&[(0, NAME)]).await?;
            let name = zbus::names::BusName::try_from(NAME)?;
            if d.name_has_owner(name).await? {
                return Ok(());
            }
            let appeared = async {
                while let Some(sig) = changes.next().await {
                    if sig.args().is_ok_and(|a| a.new_owner().is_some()) {
                        return Ok(());
                    }
                }
                Err(zbus::Error::Failure("the bus connection ended".into()))
            };
            within(CALL_TIMEOUT, appeared).await
        })
        .context("waiting for systemd-networkd to take its bus name")
    }

    /// networkd's AdministrativeState of a link ("configured" once its .network is fully
    /// applied, DHCP server included), or None if networkd does not know the link.
    pub fn link_admin_state(&self, name: &str) -> anyhow::Result<Option<String>> {
        zbus::block_on(self.admin_state(name))
            .with_context(|| format!("network1 link state of {name}"))
    }

    /// networkd's AdministrativeState of link `name` once `done` accepts it (`None`:
    /// networkd does not know the link), or the last state seen after `limit`. Re-read at
    /// each PropertiesChanged signal of networkd's links instead of polling; a slow re-read
    /// covers a link networkd only learns of meanwhile.
    pub fn wait_link_admin_state(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn(Option<&str>) -> bool,
    ) -> anyhow::Result<Option<String>> {
        use futures_util::StreamExt;
        let deadline = Instant::now() + limit;
        zbus::block_on(async {
            let rule = zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .interface("org.freedesktop.DBus.Properties")
                .member("PropertiesChanged")
                .path_namespace("/org/freedesktop/network1/link")
                .build()?;
            // Subscribed first, then read: a change in between is not missed.
            let mut changes = zbus::MessageStream::for_match_rule(rule, self.conn(), None).await?;
            loop {
                let st = self.admin_state(name).await?;
                let left = deadline.saturating_duration_since(Instant::now());
                if done(st.as_deref()) || left.is_zero() {
                    return Ok::<_, zbus::Error>(st);
                }
                let _ = within(left.min(Duration::from_millis(500)), async {
                    changes.next().await;
                    Ok(())
                })
                .await;
            }
        })
        .with_context(|| format!("network1 link state of {name}"))
    }

    async fn admin_state(&self, name: &str) -> zbus::Result<Option<String>> {
        let m = zbus_systemd::network1::ManagerProxy::builder(self.conn())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let path = match within(CALL_TIMEOUT, m.get_link_by_name(name.to_string())).await {
            Ok((_, p)) => p,
            Err(zbus::Error::MethodError(..)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let l = zbus_systemd::network1::LinkProxy::builder(self.conn())
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        within(CALL_TIMEOUT, l.administrative_state())
            .await
            .map(Some)
    }

    /// StartUnit systemd-networkd.service, waiting until it is up.
    pub fn start_networkd(&self) -> anyhow::Result<()> {
        let unit = slot_config::render::NETWORKD_UNIT.to_string();
        self.start_units(std::slice::from_ref(&unit))
            .pop()
            .unwrap_or(Ok(()))
            .context("starting systemd-networkd (is the systemd-networkd package, or systemd < 256 that includes it, installed?)")
    }

    /// Reload of a networkd that is known to run.
    pub fn network_reload_running(&self) -> anyhow::Result<()> {
        zbus::block_on(async {
            let n = zbus_systemd::network1::ManagerProxy::builder(self.conn())
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            within(CALL_TIMEOUT, n.reload()).await
        })
        .context("network1 Reload (systemd-networkd)")
    }
}
