//! The host's and the slots' networks, live: links and addresses over rtnetlink
//! (`netlink`), Open vSwitch bridges through OVSDB (`ovsdb`, `ovs`), and the iptables
//! FORWARD chain (`firewall`). networkd's files are the model's renderers; this is what
//! changes the kernel's state at once.

pub mod firewall;
pub mod netlink;
pub mod nic;
pub mod ovs;
pub mod ovsdb;
