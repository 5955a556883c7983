use std::fmt::Write;

use super::{header, slot_source, HOST_SOURCE};
use crate::host::{Vxlan, VxlanPeer};
use crate::names::bridge_ifname;
use crate::{Bridge, Nic, Slot};

/// `50-slot-os-slotbrN.netdev`
pub fn render_bridge_netdev(b: &Bridge) -> String {
    let mut s = header(HOST_SOURCE);
    let _ = write!(s, "\n[NetDev]\nName={}\nKind=bridge\n", b.ifname());
    s
}

/// `50-slot-os-slotbrN.network`: the host's addresses on the bridge.
pub fn render_bridge_network(b: &Bridge) -> String {
    let mut s = header(HOST_SOURCE);
    let _ = write!(s, "\n[Match]\nName={}\n\n[Network]\n", b.ifname());
    for a in &b.addresses {
        let _ = writeln!(s, "Address={a}");
    }
    // Up with its address even before any slot is attached, so the host side is reachable.
    s.push_str("ConfigureWithoutCarrier=yes\nIPv6AcceptRA=no\n");
    s
}

/// `50-slot-os-slotvxN.netdev`: the bridge's VXLAN port. `Independent=yes` creates it
/// without tying it to an underlying NIC's `.network` (those belong to the admin).
pub fn render_vxlan_netdev(b: &Bridge, v: &Vxlan) -> String {
    let mut s = header(HOST_SOURCE);
    let _ = write!(
        s,
        "\n[NetDev]\nName={}\nKind=vxlan\n\n[VXLAN]\nVNI={}\n",
        b.vxlan_ifname(),
        v.id
    );
    match v.peer {
        VxlanPeer::Remote(a) => {
            let _ = writeln!(s, "Remote={a}");
        }
        VxlanPeer::Group(a) => {
            let _ = writeln!(s, "Group={a}");
        }
    }
    if let Some(l) = v.local {
        let _ = writeln!(s, "Local={l}");
    }
    let _ = write!(s, "DestinationPort={}\nIndependent=yes\n", v.port);
    s
}

/// `50-slot-os-slotvxN.network`: the VXLAN port joins its bridge.
pub fn render_vxlan_network(b: &Bridge) -> String {
    let mut s = header(HOST_SOURCE);
    let _ = write!(
        s,
        "\n[Match]\nName={}\n\n[Network]\nBridge={}\nConfigureWithoutCarrier=yes\n",
        b.vxlan_ifname(),
        b.ifname()
    );
    s
}

/// `50-slot-os-slotbrN-DEV.network`: a host NIC enslaved to the bridge.
pub fn render_bridge_device_network(b: &Bridge, dev: &str) -> String {
    let mut s = header(HOST_SOURCE);
    let _ = write!(
        s,
        "\n[Match]\nName={dev}\n\n[Network]\nBridge={}\n",
        b.ifname()
    );
    s
}

/// `60-slot-os-vs-S-N.network`: the host side of a slot's extra NIC joins its bridge.
pub fn render_nic_network(slot: &Slot, nic: &Nic) -> String {
    let mut s = header(&slot_source(&slot.name));
    let _ = write!(
        s,
        "\n[Match]\nName={}\nDriver=veth\n\n[Network]\nBridge={}\n",
        slot.nic_host_ifname(nic.number),
        bridge_ifname(nic.bridge)
    );
    s
}

/// `50-slot-os-zone.network`: the NAT network every slot is on by default. nspawn makes
/// the zone bridge `vz-slots` when the first slot starts; this file, sorting before
/// systemd's stock 80-container-vz.network, gives it Fulcon's fixed address range.
pub fn render_nat_zone_network(address: &crate::Cidr) -> String {
    let mut s = header(HOST_SOURCE);
    let _ = write!(
        s,
        "\n[Match]\nName=vz-{}\nDriver=bridge\n\n[Network]\nAddress={address}\nDHCPServer=yes\nIPMasquerade=both\nConfigureWithoutCarrier=yes\nIPv6AcceptRA=no\n",
        crate::host::NAT_ZONE
    );
    s
}
