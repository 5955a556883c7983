//! org.freedesktop.systemd1: units' state, start/stop/freeze/thaw waiting for each job's
//! JobRemoved signal, runtime properties, daemon-reload.

use std::collections::HashMap;

use anyhow::{anyhow, Context};
use futures_util::future::join_all;
use futures_util::StreamExt;
use slot_config::CpuSet;
use zbus::proxy::CacheProperties;
use zbus::OwnedObjectPath;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

use super::{encode_path, Bus};

pub enum UnitProp {
    CpuQuotaPercent(u32),
    /// `None` = all CPUs (an empty set for systemd).
    AllowedCpus(Option<CpuSet>),
    MemoryMax(u64),
}

#[derive(Debug, Clone, Default)]
pub struct UnitStatus {
    pub active_state: String,
    pub sub_state: String,
    /// Empty on a systemd without the freezer.
    pub freezer_state: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Start,
    Stop,
}

fn unit_path(unit: &str) -> String {
    encode_path("/org/freedesktop/systemd1/unit", unit)
}

/// systemd's AllowedCPUs bitmask: bit n of byte n/8 is CPU n.
fn cpu_mask(set: &CpuSet) -> Vec<u8> {
    let mut mask = Vec::new();
    for c in set.iter() {
        let byte = (c / 8) as usize;
        if mask.len() <= byte {
            mask.resize(byte + 1, 0);
        }
        mask[byte] |= 1 << (c % 8);
    }
    mask
}

impl Bus {
    async fn manager(&self) -> zbus::Result<ManagerProxy<'static>> {
        ManagerProxy::builder(self.conn())
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    async fn unit_proxy(&self, unit: &str) -> zbus::Result<UnitProxy<'static>> {
        UnitProxy::builder(self.conn())
            .path(unit_path(unit))
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    pub fn daemon_reload(&self) -> anyhow::Result<()> {
        // systemd answers Reload only once the reload (generators included) is complete.
        zbus::block_on(async { self.manager().await?.reload().await })
            .context("systemd daemon-reload")
    }

    pub fn set_unit_properties(
        &self,
        unit: &str,
        runtime: bool,
        props: &[UnitProp],
    ) -> anyhow::Result<()> {
        let mut list: Vec<(String, zbus::OwnedVariant)> = Vec::new();
        for p in props {
            match p {
                UnitProp::CpuQuotaPercent(pct) => list.push((
                    "CPUQuotaPerSecUSec".into(),
                    (u64::from(*pct) * 10_000).into(),
                )),
                UnitProp::AllowedCpus(set) => {
                    let mask = set.as_ref().map(cpu_mask).unwrap_or_default();
                    let v = zbus::OwnedVariant::try_from(zbus::Variant::from(mask))
                        .context("encoding AllowedCPUs")?;
                    list.push(("AllowedCPUs".into(), v));
                }
                UnitProp::MemoryMax(b) => list.push(("MemoryMax".into(), (*b).into())),
            }
        }
        zbus::block_on(async {
            self.manager()
                .await?
                .set_unit_properties(unit.to_string(), runtime, list)
                .await
        })
        .with_context(|| format!("setting properties of {unit}"))
    }

    async fn status_async(&self, unit: &str) -> anyhow::Result<UnitStatus> {
        let u = self.unit_proxy(unit).await?;
        let (active, sub, freezer) =
            futures_util::join!(u.active_state(), u.sub_state(), u.freezer_state());
        Ok(UnitStatus {
            active_state: active?,
            sub_state: sub?,
            freezer_state: freezer.unwrap_or_default(),
        })
    }

    pub fn unit_status(&self, unit: &str) -> anyhow::Result<UnitStatus> {
        zbus::block_on(self.status_async(unit))
            .with_context(|| format!("reading the state of {unit}"))
    }

    pub fn unit_statuses(&self, units: &[String]) -> Vec<anyhow::Result<UnitStatus>> {
        zbus::block_on(join_all(units.iter().map(|u| async move {
            self.status_async(u)
                .await
                .with_context(|| format!("reading the state of {u}"))
        })))
    }

    /// Queues one job per unit and waits for each job's JobRemoved signal.
    fn run_jobs(&self, units: &[String], kind: JobKind) -> Vec<anyhow::Result<()>> {
        let verb = if kind == JobKind::Start {
            "start"
        } else {
            "stop"
        };
        let r = zbus::block_on(async {
            let m = self.manager().await?;
            // Subscribe before queueing, so no job can finish unseen.
            let mut removed = m.receive_job_removed().await?;
            m.subscribe().await.ok();
            if kind == JobKind::Stop {
                // A frozen unit cannot be stopped (its processes cannot react): thaw it.
                let states = join_all(units.iter().map(|u| async move {
                    let p = self.unit_proxy(u).await.ok()?;
                    p.freezer_state().await.ok()
                }))
                .await;
                for (u, st) in units.iter().zip(states) {
                    if matches!(st.as_deref(), Some("frozen" | "freezing")) {
                        let _ = m.thaw_unit(u.clone()).await;
                    }
                }
            }
            let queued = join_all(units.iter().map(|u| {
                let m = &m;
                async move {
                    match kind {
                        JobKind::Start => m.start_unit(u.clone(), "replace".into()).await,
                        JobKind::Stop => m.stop_unit(u.clone(), "replace".into()).await,
                    }
                }
            }))
            .await;
            let mut results: Vec<Option<anyhow::Result<()>>> = Vec::with_capacity(units.len());
            let mut waiting: HashMap<OwnedObjectPath, usize> = HashMap::new();
            for (i, (u, q)) in units.iter().zip(queued).enumerate() {
                match q {
                    Ok(job) => {
                        waiting.insert(job, i);
                        results.push(None);
                    }
                    Err(e) => results.push(Some(Err(anyhow!(e).context(format!("{verb} {u}"))))),
                }
            }
            while !waiting.is_empty() {
                let Some(sig) = removed.next().await else {
                    break;
                };
                let Ok(args) = sig.args() else { continue };
                if let Some(i) = waiting.remove(args.job()) {
                    let res = args.result().as_str();
                    results[i] = Some(if res == "done" {
                        Ok(())
                    } else {
                        Err(anyhow!(
                            "{verb} of {} ended with result '{res}'; see `journalctl -u {}`",
                            units[i],
                            units[i]
                        ))
                    });
                }
            }
            Ok::<_, zbus::Error>(results)
        });
        match r {
            Ok(results) => results
                .into_iter()
                .zip(units)
                .map(|(r, u)| {
                    r.unwrap_or_else(|| Err(anyhow!("lost track of the {verb} job of {u}")))
                })
                .collect(),
            Err(e) => units
                .iter()
                .map(|u| Err(anyhow!("{verb} {u}: {e}")))
                .collect(),
        }
    }

    pub fn start_units(&self, units: &[String]) -> Vec<anyhow::Result<()>> {
        self.run_jobs(units, JobKind::Start)
    }

    pub fn stop_units(&self, units: &[String]) -> Vec<anyhow::Result<()>> {
        self.run_jobs(units, JobKind::Stop)
    }

    fn freeze_thaw(&self, units: &[String], freeze: bool) -> Vec<anyhow::Result<()>> {
        zbus::block_on(async {
            let m = match self.manager().await {
                Ok(m) => m,
                Err(e) => {
                    return units
                        .iter()
                        .map(|_| Err(anyhow!("connecting to systemd: {e}")))
                        .collect()
                }
            };
            join_all(units.iter().map(|u| {
                let m = &m;
                async move {
                    let r = if freeze {
                        m.freeze_unit(u.clone()).await
                    } else {
                        m.thaw_unit(u.clone()).await
                    };
                    r.map_err(|e| freeze_error(u, freeze, e))
                }
            }))
            .await
        })
    }

    pub fn freeze_units(&self, units: &[String]) -> Vec<anyhow::Result<()>> {
        self.freeze_thaw(units, true)
    }

    pub fn thaw_units(&self, units: &[String]) -> Vec<anyhow::Result<()>> {
        self.freeze_thaw(units, false)
    }
}

fn freeze_error(unit: &str, freeze: bool, e: zbus::Error) -> anyhow::Error {
    let msg = e.to_string();
    if msg.contains("does not support freezing") || msg.contains("NotSupported") {
        anyhow!(
            "this host cannot {} slots: freezing needs the unified cgroup v2 hierarchy (the cgroup freezer), which this host does not offer for {unit}",
            if freeze { "suspend" } else { "resume" }
        )
    } else if msg.contains("not active") || msg.contains("NoSuchUnit") || msg.contains("not loaded")
    {
        anyhow!("{unit} is not running")
    } else {
        anyhow!(
            "{} {unit}: {msg}",
            if freeze { "freezing" } else { "thawing" }
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_mask_bits() {
        let s: slot_config::CpuSet = "0,2,9".parse().unwrap();
        assert_eq!(super::cpu_mask(&s), vec![0b101, 0b10]);
    }
}
