//! org.freedesktop.machine1: running machines, images.

use std::net::IpAddr;

use anyhow::Context;
use zbus::proxy::CacheProperties;
use zbus_systemd::machine1::ManagerProxy;

use super::{
    join_bounded, retry_when_busy, within, Bus, CALL_TIMEOUT, IN_FLIGHT, LONG_TIMEOUT,
    MACHINED_OPERATIONS,
};

/// A machine registered with machined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineInfo {
    pub name: String,
    /// "container" or "vm".
    pub class: String,
    /// Who registered it ("systemd-nspawn").
    pub service: String,
    /// PID of the machine's init as seen from the host (0 if unknown).
    pub leader: u32,
    /// The scope or service unit it runs in ("systemd-nspawn@slot00.service").
    pub unit: String,
    pub timestamp_usec: u64,
}

/// An image machined knows about (/var/lib/machines and friends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: String,
    /// "directory", "subvolume", "raw" or "block".
    pub kind: String,
    pub read_only: bool,
    /// Where the image is on the host's file system.
    pub path: String,
    /// Disk usage in bytes (`u64::MAX` = unknown).
    pub usage: u64,
    pub mtime_usec: u64,
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

impl Bus {
    async fn machined(&self) -> zbus::Result<ManagerProxy<'static>> {
        ManagerProxy::builder(self.conn())
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    /// org.freedesktop.DBus.Properties of one of machined's objects.
    async fn machined_properties(
        &self,
        path: zbus::OwnedObjectPath,
    ) -> zbus::Result<zbus::fdo::PropertiesProxy<'static>> {
        zbus::fdo::PropertiesProxy::builder(self.conn())
            .destination("org.freedesktop.machine1")
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    /// ListMachines, with each machine's Leader, Unit and Timestamp (one GetAll per machine,
    /// [`IN_FLIGHT`] at a time).
    pub fn list_machines(&self) -> anyhow::Result<Vec<MachineInfo>> {
        zbus::block_on(self.list_machines_async(None)).context("machine1 ListMachines")
    }

    /// [`Bus::list_machines`] for the machines called `names` only: one ListMachines, then
    /// the properties of those of them that run (a command about one slot of 200 asks
    /// machined twice, not 201 times).
    pub fn machines_named(&self, names: &[String]) -> anyhow::Result<Vec<MachineInfo>> {
        zbus::block_on(self.list_machines_async(Some(names))).context("machine1 ListMachines")
    }

    pub(crate) async fn list_machines_async(
        &self,
        only: Option<&[String]>,
    ) -> zbus::Result<Vec<MachineInfo>> {
        let m = self.machined().await?;
        let mut list = within(CALL_TIMEOUT, m.list_machines()).await?;
        if let Some(names) = only {
            list.retain(|(name, ..)| names.contains(name));
        }
        let infos = join_bounded(
            list.into_iter().map(|(name, class, service, path)| {
                within(CALL_TIMEOUT, async move {
                    let mut all = self
                        .machined_properties(path)
                        .await?
                        .get_all(zbus::names::InterfaceName::from_static_str_unchecked(
                            "org.freedesktop.machine1.Machine",
                        ))
                        .await?;
                    let mut take = |k: &str| all.remove(k);
                    Ok::<_, zbus::Error>(MachineInfo {
                        name,
                        class,
                        service,
                        leader: take("Leader")
                            .and_then(|v| u32::try_from(v).ok())
                            .unwrap_or(0),
                        unit: take("Unit")
                            .and_then(|v| String::try_from(v).ok())
                            .unwrap_or_default(),
                        timestamp_usec: take("Timestamp")
                            .and_then(|v| u64::try_from(v).ok())
                            .unwrap_or(0),
                    })
                })
            }),
            IN_FLIGHT,
        )
        .await;
        // A machine that went away between the list and its properties is skipped; any
        // other failure is the caller's (a machine silently missing would read as stopped).
        let mut out = Vec::with_capacity(infos.len());
        for i in infos {
            match i {
                Ok(i) => out.push(i),
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// GetMachineAddresses: the machine's addresses (link-local ones included).
    pub fn machine_addresses(&self, name: &str) -> anyhow::Result<Vec<IpAddr>> {
        let raw = zbus::block_on(async {
            within(
                CALL_TIMEOUT,
                self.machined()
                    .await?
                    .get_machine_addresses(name.to_string()),
            )
            .await
        })
        .with_context(|| format!("machine1 GetMachineAddresses {name}"))?;
        Ok(raw.iter().filter_map(|(_f, b)| ip_from_bytes(b)).collect())
    }

    /// [`Bus::machine_addresses`] of many machines at once; a machine that cannot say
    /// (stopped meanwhile) has none.
    pub fn machines_addresses(&self, names: &[String]) -> Vec<Vec<IpAddr>> {
        zbus::block_on(self.machines_addresses_async(names))
    }

    pub(crate) async fn machines_addresses_async(&self, names: &[String]) -> Vec<Vec<IpAddr>> {
        if names.is_empty() {
            return Vec::new();
        }
        let Ok(m) = self.machined().await else {
            return names.iter().map(|_| Vec::new()).collect();
        };
        join_bounded(
            names.iter().map(|n| {
                let m = &m;
                async move {
                    within(CALL_TIMEOUT, m.get_machine_addresses(n.clone()))
                        .await
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|(_f, b)| ip_from_bytes(b))
                        .collect()
                }
            }),
            IN_FLIGHT,
        )
        .await
    }

    /// ListImages, with each image's Path read concurrently.
    pub fn list_images(&self) -> anyhow::Result<Vec<ImageInfo>> {
        zbus::block_on(async {
            let raw = within(CALL_TIMEOUT, self.machined().await?.list_images()).await?;
            let infos = join_bounded(
                raw.into_iter().map(
                    |(name, kind, read_only, _crtime, mtime, usage, obj)| async move {
                        let path = within(CALL_TIMEOUT, async {
                            let v = self
                                .machined_properties(obj)
                                .await?
                                .get(
                                    zbus::names::InterfaceName::from_static_str_unchecked(
                                        "org.freedesktop.machine1.Image",
                                    ),
                                    "Path",
                                )
                                .await?;
                            String::try_from(v)
                        })
                        .await
                        .unwrap_or_default();
                        ImageInfo {
                            name,
                            kind,
                            read_only,
                            path,
                            usage,
                            mtime_usec: mtime,
                        }
                    },
                ),
                IN_FLIGHT,
            )
            .await;
            Ok::<_, zbus::Error>(infos)
        })
        .context("machine1 ListImages")
    }

    /// CloneImage: returns once machined has finished (a btrfs snapshot, or a full copy).
    pub fn clone_image(&self, src: &str, dst: &str, read_only: bool) -> anyhow::Result<()> {
        zbus::block_on(async {
            let m = self.machined().await?;
            clone_one(&m, src, dst, read_only).await
        })
    }

    /// Many CloneImage calls on the one connection, [`MACHINED_OPERATIONS`] in flight at a
    /// time: machined runs each in a worker of its own, so clones overlap instead of
    /// queueing behind each other, and it refuses more than 64 at once (all clients
    /// together; a refusal caused by another client is tried again). One result per
    /// destination, in order.
    pub fn clone_images(&self, src: &str, dsts: &[String]) -> Vec<anyhow::Result<()>> {
        zbus::block_on(async {
            let m = match self.machined().await {
                Ok(m) => m,
                Err(e) => {
                    return dsts
                        .iter()
                        .map(|_| Err(anyhow::anyhow!("connecting to machined: {e}")))
                        .collect()
                }
            };
            join_bounded(
                dsts.iter().map(|d| clone_one(&m, src, d, false)),
                MACHINED_OPERATIONS,
            )
            .await
        })
    }

    pub fn remove_image(&self, name: &str) -> anyhow::Result<()> {
        zbus::block_on(async {
            let m = self.machined().await?;
            retry_when_busy(LONG_TIMEOUT, || {
                within(LONG_TIMEOUT, m.remove_image(name.to_string()))
            })
            .await
        })
        .with_context(|| format!("machine1 RemoveImage {name}"))
    }

    pub fn rename_image(&self, old: &str, new: &str) -> anyhow::Result<()> {
        zbus::block_on(async {
            within(
                CALL_TIMEOUT,
                self.machined()
                    .await?
                    .rename_image(old.to_string(), new.to_string()),
            )
            .await
        })
        .with_context(|| format!("machine1 RenameImage {old} -> {new}"))
    }

    /// CopyToMachine: a host file or directory into a running machine.
    pub fn copy_to_machine(&self, machine: &str, src: &str, dst: &str) -> anyhow::Result<()> {
        zbus::block_on(async {
            within(
                LONG_TIMEOUT,
                self.machined().await?.copy_to_machine(
                    machine.to_string(),
                    src.to_string(),
                    dst.to_string(),
                ),
            )
            .await
        })
        .with_context(|| format!("machine1 CopyToMachine {machine}: {src} -> {dst}"))
    }
}

/// One CloneImage, asked again while machined is busy with other clients' operations.
async fn clone_one(
    m: &ManagerProxy<'static>,
    src: &str,
    dst: &str,
    read_only: bool,
) -> anyhow::Result<()> {
    retry_when_busy(LONG_TIMEOUT, || {
        within(
            LONG_TIMEOUT,
            m.clone_image(src.to_string(), dst.to_string(), read_only),
        )
    })
    .await
    .with_context(|| format!("machine1 CloneImage {src} -> {dst}"))
}

/// machined no longer knows the machine (it stopped between ListMachines and the question).
fn gone(e: &zbus::Error) -> bool {
    matches!(
        super::systemd::error_name(e).as_deref(),
        Some("org.freedesktop.DBus.Error.UnknownObject" | "org.freedesktop.machine1.NoSuchMachine")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_from_machined_bytes() {
        assert_eq!(
            super::ip_from_bytes(&[172, 17, 0, 2]),
            Some("172.17.0.2".parse().unwrap())
        );
        assert!(super::ip_from_bytes(&[1, 2, 3]).is_none());
    }
}
