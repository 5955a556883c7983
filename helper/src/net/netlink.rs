//! Live network changes over rtnetlink: veth pairs into running slots, addresses inside a
//! slot's network namespace, bridge ports, link removal. Each operation runs on a thread
//! of its own so it can enter another network namespace (setns affects one thread only)
//! without touching the rest of the process.

use std::fs::File;
use std::net::IpAddr;

use anyhow::{anyhow, Context};
use futures_util::TryStreamExt;
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};
use slot_config::Cidr;

/// Runs `f` with a netlink handle whose socket lives in the network namespace of `pid`
/// (`None` = ours).
fn in_netns<T: Send + 'static>(
    pid: Option<u32>,
    f: impl FnOnce(Handle) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>>>>
        + Send
        + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || -> anyhow::Result<T> {
        if let Some(pid) = pid {
            let ns = File::open(format!("/proc/{pid}/ns/net"))
                .with_context(|| format!("opening the network namespace of PID {pid}"))?;
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .context("entering the slot's network namespace")?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting the netlink runtime")?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().context("opening a netlink socket")?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
    .join()
    .map_err(|_| anyhow!("netlink worker panicked"))?
}

async fn index_of(h: &Handle, name: &str) -> anyhow::Result<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        // ENODEV: no such link
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(anyhow!(e).context(format!("looking up {name}"))),
    }
}

pub fn link_exists(pid: Option<u32>, name: &str) -> anyhow::Result<bool> {
    let name = name.to_string();
    in_netns(pid, move |h| {
        Box::pin(async move { Ok(index_of(&h, &name).await?.is_some()) })
    })
}

/// Creates a Linux bridge in our namespace unless a link of that name exists; true if it
/// was created.
pub fn ensure_bridge(name: &str) -> anyhow::Result<bool> {
    let name = name.to_string();
    in_netns(None, move |h| {
        Box::pin(async move {
            if index_of(&h, &name).await?.is_some() {
                return Ok(false);
            }
            match h.link().add(LinkBridge::new(&name).build()).execute().await {
                Ok(()) => Ok(true),
                // EEXIST: a slot's nspawn made it meanwhile, which is as good.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -17 => Ok(false),
                Err(e) => Err(anyhow!(e).context(format!("creating bridge {name}"))),
            }
        })
    })
}

/// Deletes a link (one end of a veth pair deletes both); absent is fine.
pub fn delete_link(pid: Option<u32>, name: &str) -> anyhow::Result<()> {
    let name = name.to_string();
    in_netns(pid, move |h| {
        Box::pin(async move {
            if let Some(i) = index_of(&h, &name).await? {
                h.link()
                    .del(i)
                    .execute()
                    .await
                    .with_context(|| format!("deleting {name}"))?;
            }
            Ok(())
        })
    })
}

/// How the host end of a slot NIC is connected.
pub enum Attach {
    /// A port of this Linux bridge.
    Bridge(String),
    /// An Open vSwitch port (added by the caller). `tx_csum_off`: the userspace datapath
    /// reads frames through AF_PACKET and forwards them with the checksum the slot's kernel
    /// left for the NIC to fill in, so TCP is dropped by the receiver unless the slot end
    /// computes checksums itself (`ethtool -K ethN tx off`).
    Ovs { tx_csum_off: bool },
}

/// `ethtool -K NAME tx on|off` in this thread's network namespace, by the ETHTOOL_STXCSUM
/// ioctl (the kernel maps it to the checksum feature bits, as ethtool's netlink call does).
pub fn set_tx_checksum(name: &str, on: bool) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: an all-zero ifreq is valid; the name is copied in with its NUL kept.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to, both alive.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One NIC of a running slot, made whole: the host end `host_if` on `bridge` and up,
/// the slot end named `slot_if` inside the slot with exactly `addresses`, and up.
/// For an OVS port the host end is only set up here; the caller adds the OVSDB port.
/// Creates the veth pair when the slot has none yet (a NIC added while it runs);
/// otherwise completes what nspawn's VirtualEthernetExtra left down (systemd#15402).
pub fn apply_nic(
    leader: u32,
    host_if: &str,
    slot_if: &str,
    attach: Attach,
    addresses: &[Cidr],
) -> anyhow::Result<()> {
    let (host_if, slot_if) = (host_if.to_string(), slot_if.to_string());
    let addresses = addresses.to_vec();
    let tx_csum_off = matches!(attach, Attach::Ovs { tx_csum_off: true });
    let (h1, s1) = (host_if.clone(), slot_if.clone());
    in_netns(None, move |h| {
        Box::pin(async move {
            let br = match &attach {
                Attach::Bridge(b1) => Some(
                    index_of(&h, b1)
                        .await?
                        .ok_or_else(|| anyhow!("bridge {b1} does not exist on the host"))?,
                ),
                Attach::Ovs { .. } => None,
            };
            let host = match index_of(&h, &h1).await? {
                Some(i) => i,
                None => {
                    // The peer gets a temporary name, unique on the host, until it is
                    // inside the slot and renamed there.
                    let peer = format!("{h1}p");
                    h.link()
                        .add(LinkVeth::new(&h1, &peer).build())
                        .execute()
                        .await
                        .with_context(|| format!("creating veth {h1}"))?;
                    let p = index_of(&h, &peer)
                        .await?
                        .ok_or_else(|| anyhow!("veth peer {peer} vanished"))?;
                    h.link()
                        .set(LinkUnspec::new_with_index(p).setns_by_pid(leader).build())
                        .execute()
                        .await
                        .with_context(|| format!("moving {peer} into the slot"))?;
                    index_of(&h, &h1)
                        .await?
                        .ok_or_else(|| anyhow!("veth {h1} vanished"))?
                }
            };
            match (br, &attach) {
                (Some(br), Attach::Bridge(b1)) => h
                    .link()
                    .set(LinkUnspec::new_with_index(host).controller(br).up().build())
                    .execute()
                    .await
                    .with_context(|| format!("attaching {h1} to {b1}"))?,
                // An OVS port is an OVSDB row (the caller adds it); a Linux bridge it may
                // still be on from an earlier config would take its frames first.
                _ => h
                    .link()
                    .set(LinkUnspec::new_with_index(host).nocontroller().up().build())
                    .execute()
                    .await
                    .with_context(|| format!("setting {h1} up"))?,
            }
            let _ = s1;
            Ok(())
        })
    })?;
    let peer = format!("{host_if}p");
    in_netns(Some(leader), move |h| {
        Box::pin(async move {
            let idx = match index_of(&h, &slot_if).await? {
                Some(i) => i,
                None => {
                    let p = index_of(&h, &peer)
                        .await?
                        .ok_or_else(|| anyhow!("the slot has no {slot_if}"))?;
                    h.link()
                        .set(
                            LinkUnspec::new_with_index(p)
                                .down()
                                .name(slot_if.clone())
                                .build(),
                        )
                        .execute()
                        .await
                        .with_context(|| format!("renaming {peer} to {slot_if} in the slot"))?;
                    p
                }
            };
            if tx_csum_off {
                set_tx_checksum(&slot_if, false)
                    .with_context(|| format!("turning off TX checksum offload on {slot_if}"))?;
            }
            // Exactly the configured addresses: stale ones (a changed config) go.
            let current: Vec<(IpAddr, u8)> = h
                .address()
                .get()
                .set_link_index_filter(idx)
                .execute()
                .try_collect::<Vec<_>>()
                .await?
                .into_iter()
                .filter_map(|m| {
                    let prefix = m.header.prefix_len;
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some((*ip, prefix)),
                        _ => None,
                    })
                })
                .filter(|(ip, _)| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
                .collect();
            for a in &addresses {
                if !current.contains(&(a.addr, a.prefix)) {
                    h.address()
                        .add(idx, a.addr, a.prefix)
                        .execute()
                        .await
                        .with_context(|| format!("adding {a} to {slot_if}"))?;
                }
            }
            let mut stale = h.address().get().set_link_index_filter(idx).execute();
            while let Some(m) = stale.try_next().await? {
                let prefix = m.header.prefix_len;
                let ip = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                });
                if let Some(ip) = ip {
                    let link_local =
                        matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
                    if !link_local && !addresses.iter().any(|a| a.addr == ip && a.prefix == prefix)
                    {
                        h.address()
                            .del(m)
                            .execute()
                            .await
                            .with_context(|| format!("removing {ip} from {slot_if}"))?;
                    }
                }
            }
            h.link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .with_context(|| format!("setting {slot_if} up"))?;
            Ok(())
        })
    })
}

/// Interface names with their addresses and prefix lengths.
pub type Interfaces = Vec<(String, Vec<(IpAddr, u8)>)>;

/// Interfaces (except lo) and their addresses in the namespace of `pid`.
pub fn addresses(pid: Option<u32>) -> anyhow::Result<Interfaces> {
    in_netns(pid, move |h| {
        Box::pin(async move {
            let links: Vec<_> = h.link().get().execute().try_collect().await?;
            let addrs: Vec<_> = h.address().get().execute().try_collect().await?;
            let mut out = Vec::new();
            for l in links {
                let name = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                let Some(name) = name.filter(|n| n != "lo") else {
                    continue;
                };
                let mine: Vec<(IpAddr, u8)> = addrs
                    .iter()
                    .filter(|m| m.header.index == l.header.index)
                    .filter_map(|m| {
                        m.attributes.iter().find_map(|a| match a {
                            AddressAttribute::Address(ip) => Some((*ip, m.header.prefix_len)),
                            _ => None,
                        })
                    })
                    .collect();
                out.push((name, mine));
            }
            Ok(out)
        })
    })
}

/// Takes a host NIC out of whatever bridge it is a port of.
pub fn release_port(name: &str) -> anyhow::Result<()> {
    let name = name.to_string();
    in_netns(None, move |h| {
        Box::pin(async move {
            if let Some(i) = index_of(&h, &name).await? {
                h.link()
                    .set(LinkUnspec::new_with_index(i).nocontroller().build())
                    .execute()
                    .await
                    .with_context(|| format!("releasing {name}"))?;
            }
            Ok(())
        })
    })
}

/// Makes host device `name` a port of bridge `bridge`, and up, right away (networkd's
/// file does the same at every boot, but asynchronously after a reload).
pub fn attach_port(name: &str, bridge: &str) -> anyhow::Result<()> {
    let (name, bridge) = (name.to_string(), bridge.to_string());
    in_netns(None, move |h| {
        Box::pin(async move {
            let br = index_of(&h, &bridge)
                .await?
                .ok_or_else(|| anyhow!("bridge {bridge} does not exist"))?;
            let i = index_of(&h, &name)
                .await?
                .ok_or_else(|| anyhow!("there is no host device {name}"))?;
            h.link()
                .set(LinkUnspec::new_with_index(i).controller(br).up().build())
                .execute()
                .await
                .with_context(|| format!("attaching {name} to {bridge}"))?;
            Ok(())
        })
    })
}
