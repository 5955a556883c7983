use std::fmt::Write;

use super::{header, slot_source};
use crate::{DefaultNetwork, HostConfig, Slot, TasksMax};

pub const DROPIN_NAME: &str = "50-slot-os.conf";
pub const NSPAWN_TEMPLATE_UNIT: &str = "/usr/lib/systemd/system/systemd-nspawn@.service";
pub const MACHINES_TARGET: &str = "/usr/lib/systemd/system/machines.target";
/// Accepts slot traffic in the FORWARD chain (units/slot-os-forward.service).
pub const FORWARD_UNIT: &str = "slot-os-forward.service";
/// The oneshot unit (units/) that puts the config's OVS bridges into OVSDB at boot.
pub const OVS_UNIT: &str = "slot-os-ovs.service";
pub const OVS_UNIT_PATH: &str = "/usr/lib/systemd/system/slot-os-ovs.service";
/// networkd, which Debian installs disabled; pulled in at boot when bridges exist.
pub const NETWORKD_UNIT: &str = "systemd-networkd.service";
pub const NETWORKD_UNIT_PATH: &str = "/usr/lib/systemd/system/systemd-networkd.service";
/// The directory `make install` puts the helper in: the Makefile's `build` passes its
/// `BINDIR` (`PREFIX/bin`) as `SLOT_OS_BINDIR`; a plain `cargo build` means a distribution's
/// `/usr/bin` (the packages and the test harness install there).
pub const BINDIR: &str = match option_env!("SLOT_OS_BINDIR") {
    Some(d) => d,
    None => "/usr/bin",
};

/// The helper's path, as the units the generator writes run it.
pub fn helper() -> String {
    format!("{BINDIR}/slot-os")
}

/// The stock unit's command line (systemd 252), repeated only when the image directory
/// must be named because the slot boots an image not named after it.
const STOCK_EXEC: &str = "systemd-nspawn --quiet --keep-unit --boot --link-journal=try-guest --network-veth -U --settings=override --machine=%i";

/// `systemd-nspawn@<slot>.service.d/50-slot-os.conf`: resources and ordering.
pub fn render_dropin(slot: &Slot, host: &HostConfig) -> String {
    let mut s = header(&slot_source(&slot.name));
    s.push_str("\n[Unit]\n");
    match slot.number {
        Some(n) => {
            let _ = writeln!(s, "Description=slot-os slot {} (number {n})", slot.name);
        }
        None => {
            let _ = writeln!(s, "Description=slot-os slot {}", slot.name);
        }
    }
    if !slot.nics.is_empty() || host.network != DefaultNetwork::None {
        // networkd makes the bridges the extra veths join, and serves DHCP on the NAT zone
        // (or the ve- link). Debian installs it disabled, so the slot pulls it in; its own
        // unit wants systemd-networkd.socket, so that comes along.
        s.push_str("Wants=systemd-networkd.service\nAfter=systemd-networkd.service\n");
        // Slot traffic crosses the FORWARD chain (routed, and bridged through
        // br_netfilter); a DROP policy as Docker sets would cut it off.
        let _ = write!(s, "Wants={FORWARD_UNIT}\nAfter={FORWARD_UNIT}\n");
    }
    if slot.is_overlay() {
        // Its root is an overlay mounted by this unit, which goes away with the slot
        // (StopWhenUnneeded=yes): the mount exists exactly while the slot runs.
        let root = slot.root_unit();
        let _ = write!(s, "Requires={root}\nAfter={root}\n");
    }
    let on_ovs = slot.nics.iter().any(|n| host.is_ovs(n.bridge));
    if on_ovs {
        // Its OVS bridges are in OVSDB before it starts, and it stops before OVS does.
        let _ = write!(s, "Wants={OVS_UNIT}\nAfter={OVS_UNIT}\n");
    }
    s.push_str("\n[Service]\n");
    // The disk quota lives in the file system, not in the unit: this (re)applies the
    // config's value (or lifts one the config no longer has) before every start, however
    // the slot is started. Without '-' when there is a limit: a slot whose quota cannot
    // be enforced does not start.
    let _ = writeln!(
        s,
        "ExecStartPre={}{} disk-apply %i",
        if slot.resources.limits.disk_bytes().is_some() {
            ""
        } else {
            "-"
        },
        helper()
    );
    if matches!(host.network, DefaultNetwork::Nat { .. }) {
        // The zone bridge is made and configured by networkd (DHCP server up) before nspawn
        // joins the slot to it, so the slot's first DHCP request is answered.
        let _ = writeln!(s, "ExecStartPre=-{} zone-ready", helper());
    }
    let r = &slot.resources;
    let _ = writeln!(s, "CPUQuota={}%", r.cpu_quota);
    if let Some(cpus) = &r.cpus {
        let _ = writeln!(s, "AllowedCPUs={cpus}");
    }
    let _ = writeln!(s, "MemoryMax={}", r.memory);
    let l = &r.limits;
    match l.tasks_max {
        Some(TasksMax::Count(n)) => {
            let _ = writeln!(s, "TasksMax={n}");
        }
        Some(TasksMax::None) => s.push_str("TasksMax=infinity\n"),
        None => {}
    }
    if let Some(w) = l.io_weight {
        let _ = writeln!(s, "IOWeight={w}");
    }
    // systemd finds the block device of the file system that holds this path; the
    // machines directory holds every slot root. Bytes, not K/M/G: systemd reads those
    // suffixes as powers of 1000, the config as powers of 1024.
    for (key, bw) in [
        ("IOReadBandwidthMax", l.io_read_bandwidth_max),
        ("IOWriteBandwidthMax", l.io_write_bandwidth_max),
    ] {
        if let Some(b) = bw.and_then(|b| b.0.bytes()) {
            let _ = writeln!(s, "{key}={} {b}", host.machines_dir.display());
        }
    }
    if !slot.nics.is_empty() {
        // nspawn leaves VirtualEthernetExtra= NICs down and without addresses
        // (systemd#15402); this completes them after every start, before the start job
        // ends. '-': a NIC that cannot be set up must not keep the slot from running.
        let _ = writeln!(s, "ExecStartPost=-{} net-apply %i", helper());
    }
    if on_ovs {
        // The veths vanish with the slot; their OVSDB ports would linger as errors.
        let _ = writeln!(s, "ExecStopPost=-{} net-release %i", helper());
    }
    if slot.image_name() != slot.name {
        let dir = host.machines_dir.join(slot.image_name());
        let dir = crate::syntax::exec_word(&format!("--directory={}", dir.display()));
        let _ = write!(s, "ExecStart=\nExecStart={STOCK_EXEC} {dir}\n");
    }
    s
}
