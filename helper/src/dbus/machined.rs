//! org.freedesktop.machine1 (running machines, images) and org.freedesktop.network1.

use std::net::IpAddr;

use anyhow::Context;
use futures_util::future::join_all;
use zbus::proxy::CacheProperties;
use zbus_systemd::machine1::{MachineProxy, ManagerProxy};

use super::Bus;

#[derive(Debug, Clone)]
pub struct MachineInfo {
    pub name: String,
    pub leader: u32,
    pub timestamp_usec: u64,
}

impl Bus {
    async fn machined(&self) -> zbus::Result<ManagerProxy<'static>> {
        ManagerProxy::builder(self.conn())
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    pub fn list_machines(&self) -> anyhow::Result<Vec<MachineInfo>> {
        zbus::block_on(async {
            let m = self.machined().await?;
            let list = m.list_machines().await?;
            let infos = join_all(list.into_iter().map(
                |(name, _class, _service, path)| async move {
                    let p = MachineProxy::builder(self.conn())
                        .path(path)
                        .cache_properties(CacheProperties::No)
                        .build()
                        .await?;
                    let (leader, ts) = futures_util::join!(p.leader(), p.timestamp());
                    Ok::<_, zbus::Error>(MachineInfo {
                        name,
                        leader: leader.unwrap_or(0),
                        timestamp_usec: ts.unwrap_or(0),
                    })
                },
            ))
            .await;
            // A machine that went away between the list and its properties is skipped.
            Ok::<_, zbus::Error>(infos.into_iter().filter_map(Result::ok).collect())
        })
        .context("listing machines (systemd-machined)")
    }

    pub fn machine_addresses(&self, name: &str) -> anyhow::Result<Vec<IpAddr>> {
        let raw = zbus::block_on(async {
            self.machined()
                .await?
                .get_machine_addresses(name.to_string())
                .await
        })
        .with_context(|| format!("addresses of {name}"))?;
        Ok(raw
            .into_iter()
            .filter_map(|(_family, bytes)| match bytes.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?)),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?)),
                _ => None,
            })
            .collect())
    }

    /// Addresses of many machines concurrently (`list`).
    pub fn machines_addresses(&self, names: &[String]) -> Vec<Vec<IpAddr>> {
        zbus::block_on(async {
            let Ok(m) = self.machined().await else {
                return names.iter().map(|_| Vec::new()).collect();
            };
            join_all(names.iter().map(|n| {
                let m = &m;
                async move { m.get_machine_addresses(n.clone()).await.unwrap_or_default() }
            }))
            .await
            .into_iter()
            .map(|raw| {
                raw.into_iter()
                    .filter_map(|(_f, b)| match b.len() {
                        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b.as_slice()).ok()?)),
                        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b.as_slice()).ok()?)),
                        _ => None,
                    })
                    .collect()
            })
            .collect()
        })
    }

    pub fn clone_image(&self, src: &str, dst: &str, read_only: bool) -> anyhow::Result<()> {
        zbus::block_on(async {
            self.machined()
                .await?
                .clone_image(src.to_string(), dst.to_string(), read_only)
                .await
        })
        .with_context(|| format!("machined CloneImage {src} -> {dst}"))
    }

    pub fn remove_image(&self, name: &str) -> anyhow::Result<()> {
        zbus::block_on(async { self.machined().await?.remove_image(name.to_string()).await })
            .with_context(|| format!("machined RemoveImage {name}"))
    }

    pub fn rename_image(&self, old: &str, new: &str) -> anyhow::Result<()> {
        zbus::block_on(async {
            self.machined()
                .await?
                .rename_image(old.to_string(), new.to_string())
                .await
        })
        .with_context(|| format!("machined RenameImage {old} -> {new}"))
    }

    pub fn copy_to_machine(&self, machine: &str, src: &str, dst: &str) -> anyhow::Result<()> {
        zbus::block_on(async {
            self.machined()
                .await?
                .copy_to_machine(machine.to_string(), src.to_string(), dst.to_string())
                .await
        })
        .with_context(|| format!("machined CopyToMachine {machine}: {src} -> {dst}"))
    }
}

impl Bus {
    /// networkd re-reads its files (the generator's bridges and NIC ports).
    pub fn network_reload(&self) -> anyhow::Result<()> {
        zbus::block_on(async {
            zbus_systemd::network1::ManagerProxy::builder(self.conn())
                .cache_properties(CacheProperties::No)
                .build()
                .await?
                .reload()
                .await
        })
        .context("systemd-networkd Reload (is systemd-networkd running?)")
    }
}
