//! A slot's NIC made whole on the live system (veth pair, bridge port, addresses, up), and
//! host NICs shared with slots: the operations, over the [`Netlink`] client.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{anyhow, Context};
use slot_config::Cidr;

use crate::net::netlink::Netlink;
use crate::sys::netns;

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

/// `ethtool -K NAME tx on|off` in this socket's namespace, by the ETHTOOL_STXCSUM ioctl
/// (the kernel maps it to the checksum feature bits, as ethtool's netlink call does).
pub fn set_tx_checksum(nl: &Netlink, name: &str, on: bool) -> io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily as Af, SockFlag, SockType};
    let open = || {
        socket(Af::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(io::Error::from)
    };
    let sock = match nl.pid() {
        None => open()?,
        Some(pid) => netns::in_netns_of(pid, open).map_err(netns::Error::into_io)?,
    };
    ethtool_set_tx_csum(sock.as_fd(), name, on)
}

fn ethtool_set_tx_csum(sock: BorrowedFd, name: &str, on: bool) -> io::Result<()> {
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
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: an all-zero ifreq is valid; the name is copied in with its NUL kept.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to, both alive.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One NIC of a running slot, made whole: the host end `host_if` on `attach` and up, the
/// slot end named `slot_if` inside the slot with exactly `addresses`, and up. For an OVS
/// port the host end is only set up here; the caller adds the OVSDB port. Creates the veth
/// pair when the slot has none yet (a NIC added while it runs); otherwise completes what
/// nspawn's VirtualEthernetExtra left down (systemd#15402).
pub fn apply_nic(
    host: &mut Netlink,
    leader: u32,
    host_if: &str,
    slot_if: &str,
    attach: Attach,
    addresses: &[Cidr],
) -> anyhow::Result<()> {
    let br = match &attach {
        Attach::Bridge(b) => Some(
            host.index_of(b)?
                .ok_or_else(|| anyhow!("bridge {b} does not exist on the host"))?,
        ),
        Attach::Ovs { .. } => None,
    };
    // The peer has a temporary name, unique on the host, until it is inside the slot and
    // renamed there.
    let peer = format!("{host_if}p");
    let hi = match host.index_of(host_if)? {
        Some(i) => i,
        None => {
            host.create_veth(host_if, &peer)
                .with_context(|| format!("creating veth {host_if}"))?;
            let p = host
                .index_of(&peer)?
                .ok_or_else(|| anyhow!("veth peer {peer} vanished"))?;
            host.move_to_netns_of(p, leader)
                .with_context(|| format!("moving {peer} into the slot"))?;
            host.index_of(host_if)?
                .ok_or_else(|| anyhow!("veth {host_if} vanished"))?
        }
    };
    match (br, &attach) {
        (Some(br), Attach::Bridge(b)) => host
            .set_state(hi, true, Some(br))
            .with_context(|| format!("attaching {host_if} to {b}"))?,
        // An OVS port is an OVSDB row (the caller adds it); a Linux bridge it may still be
        // on from an earlier config would take its frames first.
        _ => host
            .set_state(hi, true, Some(0))
            .with_context(|| format!("setting {host_if} up"))?,
    }

    let mut slot = Netlink::of_pid(leader)?;
    let idx = match slot.index_of(slot_if)? {
        Some(i) => i,
        None => {
            let p = slot
                .index_of(&peer)?
                .ok_or_else(|| anyhow!("the slot has no {slot_if}"))?;
            slot.rename_down(p, slot_if)
                .with_context(|| format!("renaming {peer} to {slot_if} in the slot"))?;
            p
        }
    };
    if matches!(attach, Attach::Ovs { tx_csum_off: true }) {
        set_tx_checksum(&slot, slot_if, false)
            .with_context(|| format!("turning off TX checksum offload on {slot_if}"))?;
    }
    slot.set_addresses(idx, slot_if, addresses)?;
    slot.set_state(idx, true, None)
        .with_context(|| format!("setting {slot_if} up"))?;
    Ok(())
}

/// Makes host device `name` a port of bridge `bridge`, and up, right away (networkd's file
/// does the same at every boot, but asynchronously after a reload).
pub fn attach_port(nl: &mut Netlink, name: &str, bridge: &str) -> anyhow::Result<()> {
    let br = nl
        .index_of(bridge)?
        .ok_or_else(|| anyhow!("bridge {bridge} does not exist"))?;
    let i = nl
        .index_of(name)?
        .ok_or_else(|| anyhow!("there is no host device {name}"))?;
    nl.set_state(i, true, Some(br))
        .with_context(|| format!("attaching {name} to {bridge}"))
}

/// Takes a host NIC out of whatever bridge it is a port of.
pub fn release_port(nl: &mut Netlink, name: &str) -> anyhow::Result<()> {
    if let Some(i) = nl.index_of(name)? {
        nl.set_nocontroller(i)
            .with_context(|| format!("releasing {name}"))?;
    }
    Ok(())
}
