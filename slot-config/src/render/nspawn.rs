use std::fmt::Write;

use super::{header, slot_source};
use crate::host::NAT_ZONE;
use crate::storage::UID_RANGE;
use crate::syntax::{bind_word, strv_word};
use crate::{DefaultNetwork, Slot};

/// `/run/systemd/nspawn/<slot>.nspawn`. Only what differs from the stock
/// `systemd-nspawn@.service` command line is written, so systemd's defaults stay in force.
pub fn render_nspawn(slot: &Slot, network: &DefaultNetwork) -> String {
    let mut s = header(&slot_source(&slot.name));
    s.push_str("\n[Exec]\n");
    if slot.boot {
        s.push_str("Boot=yes\n");
        // Makes `start` return only once the slot's own systemd reports it has booted.
        s.push_str("NotifyReady=yes\n");
    } else {
        s.push_str("Boot=no\n");
        let args: Vec<String> = slot.command.iter().map(|a| strv_word(a)).collect();
        let _ = writeln!(s, "Parameters={}", args.join(" "));
    }
    if slot.privileged {
        s.push_str("PrivateUsers=no\n");
    } else if let Some(base) = slot.uid_base() {
        // The range the layers were idmapped to by slot-os-root@NAME.service: the tree
        // already appears shifted, so nspawn must neither pick a range nor chown.
        let _ = writeln!(s, "PrivateUsers={base}:{UID_RANGE}");
    }
    for (k, v) in &slot.environment {
        let _ = writeln!(s, "Environment={}", strv_word(&format!("{k}={v}")));
    }
    let shifted = slot.uid_base().is_some();
    if !slot.binds.is_empty() || shifted {
        s.push_str("\n[Files]\n");
        if shifted {
            s.push_str("PrivateUsersOwnership=off\n");
        }
        for b in &slot.binds {
            let key = if b.read_only { "BindReadOnly" } else { "Bind" };
            let _ = writeln!(
                s,
                "{key}={}:{}",
                bind_word(&b.source.to_string_lossy()),
                bind_word(&b.target.to_string_lossy())
            );
        }
    }
    // Any [Network] section replaces the unit's --network-veth, so the default NIC is
    // always stated.
    let default_nic = match network {
        DefaultNetwork::Nat { .. } => Some(format!("Zone={NAT_ZONE}")),
        DefaultNetwork::Veth if !slot.nics.is_empty() => Some("VirtualEthernet=yes".to_string()),
        DefaultNetwork::Veth => None,
        DefaultNetwork::None => Some("Private=yes\nVirtualEthernet=no".to_string()),
    };
    if let Some(d) = default_nic {
        let _ = write!(s, "\n[Network]\n{d}\n");
        for n in &slot.nics {
            let _ = writeln!(
                s,
                "VirtualEthernetExtra={}:{}",
                slot.nic_host_ifname(n.number),
                n.slot_ifname()
            );
        }
    }
    s
}
