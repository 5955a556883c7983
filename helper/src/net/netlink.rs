//! Over 400 lines on purpose: every message the helper sends to the kernel's rtnetlink is
//! here, one short method each, beside the socket that sends it.
//!
//! The helper's one rtnetlink client: a synchronous `NETLINK_ROUTE` socket per network
//! namespace, reused for every request made there (netavark's `network/netlink.rs`). A socket
//! stays in the namespace it was opened in, so a slot's socket is opened by a short-lived
//! thread that enters the slot's namespace (`sys::netns`), and used from the caller's
//! thread afterwards. No async runtime: one request, one answer, on this thread.
//!
//! Waiting for a link or an address subscribes to the kernel's link and address
//! notifications ([`Netlink::wait_until`]) instead of polling.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use slot_config::Cidr;

use crate::sys::netns;

const ENODEV: i32 = libc::ENODEV;
const EEXIST: i32 = libc::EEXIST;
/// Multicast groups of link and address changes (RTNLGRP_LINK, _IPV4_IFADDR, _IPV6_IFADDR).
const RTMGRP_LINK: u32 = 1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a netlink socket: {0}")]
    Open(#[source] io::Error),
    #[error("entering the network namespace of PID {pid}: {source}")]
    Netns { pid: u32, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The kernel refused a request (a negative errno).
    #[error("{}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    #[error("unreadable netlink message: {0}")]
    Decode(String),
}

impl Error {
    fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel(e) => Some(*e),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Interface names with their addresses and prefix lengths.
pub type Interfaces = Vec<(String, Vec<(IpAddr, u8)>)>;

/// A link's traffic counters, as the kernel counts them on that link (`ip -s link`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

pub struct Netlink {
    sock: Socket,
    /// The namespace's PID (`None` = ours), for sockets of other kinds opened later.
    pid: Option<u32>,
    seq: u32,
    buf: Vec<u8>,
}

fn open_socket(groups: u32) -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind(&SocketAddr::new(0, groups))?;
    if groups == 0 {
        sock.connect(&SocketAddr::new(0, 0))?;
    }
    Ok(sock)
}

impl Netlink {
    /// A socket in this process's network namespace.
    pub fn here() -> Result<Netlink> {
        Ok(Netlink::from_socket(
            open_socket(0).map_err(Error::Open)?,
            None,
        ))
    }

    /// A socket in the network namespace of `pid` (a slot's leader).
    pub fn of_pid(pid: u32) -> Result<Netlink> {
        let sock = netns::in_netns_of(pid, || open_socket(0)).map_err(|e| match e {
            netns::Error::Enter(source) => Error::Netns { pid, source },
            netns::Error::Run(e) => Error::Open(e),
        })?;
        Ok(Netlink::from_socket(sock, Some(pid)))
    }

    /// Sockets in the namespaces of many PIDs, all opened by one thread; `None` where a
    /// namespace could not be entered (a machine gone meanwhile, not root).
    pub fn of_pids(pids: &[u32]) -> Vec<Option<Netlink>> {
        netns::in_each_netns_of(pids, || open_socket(0))
            .into_iter()
            .zip(pids)
            .map(|(s, &pid)| s.ok().map(|s| Netlink::from_socket(s, Some(pid))))
            .collect()
    }

    /// `None` = ours, else the PID whose namespace this socket is in.
    pub fn for_pid(pid: Option<u32>) -> Result<Netlink> {
        match pid {
            None => Netlink::here(),
            Some(p) => Netlink::of_pid(p),
        }
    }

    /// The PID whose network namespace this socket is in (`None` = ours).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn from_socket(sock: Socket, pid: Option<u32>) -> Netlink {
        Netlink {
            sock,
            pid,
            seq: 0,
            // Dumps come in messages of up to 32 KiB.
            buf: vec![0; 64 * 1024],
        }
    }

    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock.send(&out, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut found = Vec::new();
        loop {
            let n = loop {
                match self.sock.recv(&mut &mut self.buf[..], 0) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| Error::Decode(e.to_string()))?;
                let len = m.header.length as usize;
                // A reply to an earlier request this socket gave up on: not ours.
                if m.header.sequence_number == self.seq {
                    match m.payload {
                        NetlinkPayload::Done(_) => return Ok(found),
                        NetlinkPayload::Error(e) => match e.code {
                            Some(code) => return Err(Error::Kernel(-code.get())),
                            None => return Ok(found),
                        },
                        NetlinkPayload::InnerMessage(msg) => {
                            found.push(msg);
                            if !dump && flags & NLM_F_ACK == 0 {
                                return Ok(found);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request(msg, NLM_F_ACK | flags).map(drop)
    }

    /// The index of link `name`, `None` if there is none.
    pub fn index_of(&mut self, name: &str) -> Result<Option<u32>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(found) => Ok(found.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.errno() == Some(ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn link_exists(&mut self, name: &str) -> Result<bool> {
        Ok(self.index_of(name)?.is_some())
    }

    /// Every object of one kind: `request` dumped, the answers of kind `pick` kept.
    fn dump<T>(
        &mut self,
        request: RouteNetlinkMessage,
        pick: fn(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>> {
        Ok(self
            .request(request, NLM_F_DUMP)?
            .into_iter()
            .filter_map(pick)
            .collect())
    }

    pub fn links(&mut self) -> Result<Vec<LinkMessage>> {
        self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            |r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            },
        )
    }

    pub fn address_messages(&mut self) -> Result<Vec<AddressMessage>> {
        self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            |r| match r {
                RouteNetlinkMessage::NewAddress(a) => Some(a),
                _ => None,
            },
        )
    }

    /// Interfaces (except lo) and all their addresses.
    pub fn interfaces(&mut self) -> Result<Interfaces> {
        let links = self.links()?;
        let addrs = self.address_messages()?;
        Ok(links
            .iter()
            .filter_map(|l| {
                let name = link_name(l).filter(|n| n != "lo")?;
                let mine = addrs
                    .iter()
                    .filter(|m| m.header.index == l.header.index)
                    .filter_map(|m| address_of(m).map(|ip| (ip, m.header.prefix_len)))
                    .collect();
                Some((name, mine))
            })
            .collect())
    }

    /// The addresses machined's GetMachineAddresses reports, in its order (systemd's
    /// `local_addresses()`): no host-scope or deprecated addresses, global scope first,
    /// IPv4 before IPv6.
    pub fn machine_addresses(&mut self) -> Result<Vec<IpAddr>> {
        let mut found: Vec<(u8, u32, IpAddr)> = self
            .address_messages()?
            .iter()
            .filter(|m| !matches!(m.header.scope, AddressScope::Host | AddressScope::Nowhere))
            .filter(|m| !deprecated(m))
            // For IPv4, IFA_LOCAL is the interface's own address (IFA_ADDRESS may be the
            // peer's on point-to-point links).
            .filter_map(|m| {
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                local
                    .or_else(|| address_of(m))
                    .map(|ip| (u8::from(m.header.scope), m.header.index, ip))
            })
            .collect();
        found.sort_by_key(|(scope, index, ip)| (*scope, ip.is_ipv6(), *index));
        Ok(found.into_iter().map(|(_, _, ip)| ip).collect())
    }

    /// The id this namespace knows the network namespace of `pid` by (what `ip link`
    /// shows as `link-netnsid`); `None` when it has none (no link here has its peer there).
    pub fn nsid_of_pid(&mut self, pid: u32) -> Result<Option<i32>> {
        let mut m = NsidMessage::default();
        m.attributes.push(NsidAttribute::Pid(pid));
        Ok(self
            .request(RouteNetlinkMessage::GetNsId(m), 0)?
            .into_iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewNsId(n) => n.attributes.into_iter().find_map(|a| match a {
                    NsidAttribute::Id(id) if id >= 0 => Some(id),
                    _ => None,
                }),
                _ => None,
            }))
    }

    /// The links of this namespace whose peer is in another namespace (the host ends of
    /// veth pairs), with their counters, by that namespace's id.
    pub fn links_by_peer_netns(&mut self) -> Result<HashMap<i32, Vec<LinkCounters>>> {
        let mut by: HashMap<i32, Vec<LinkCounters>> = HashMap::new();
        for l in self.links()? {
            let mut nsid = None;
            let mut c = LinkCounters::default();
            for a in &l.attributes {
                match a {
                    LinkAttribute::LinkNetNsId(id) => nsid = Some(*id),
                    LinkAttribute::IfName(n) => c.name = n.clone(),
                    LinkAttribute::Stats64(s) => {
                        c.rx_bytes = s.rx_bytes;
                        c.tx_bytes = s.tx_bytes;
                        c.rx_packets = s.rx_packets;
                        c.tx_packets = s.tx_packets;
                    }
                    _ => {}
                }
            }
            if let Some(id) = nsid.filter(|id| *id >= 0) {
                by.entry(id).or_default().push(c);
            }
        }
        for v in by.values_mut() {
            v.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(by)
    }

    fn new_link(&mut self, m: LinkMessage) -> Result<()> {
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    fn set_link(&mut self, m: LinkMessage) -> Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Creates a Linux bridge unless a link of that name exists; true if it was created.
    pub fn ensure_bridge(&mut self, name: &str) -> Result<bool> {
        if self.index_of(name)?.is_some() {
            return Ok(false);
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        match self.new_link(m) {
            Ok(()) => Ok(true),
            // A slot's nspawn made it meanwhile, which is as good.
            Err(e) if e.errno() == Some(EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.new_link(m)
    }

    /// Moves a link into the network namespace of `pid`.
    pub fn move_to_netns_of(&mut self, index: u32, pid: u32) -> Result<()> {
        let mut m = link(index);
        m.attributes.push(LinkAttribute::NetNsPid(pid));
        self.set_link(m)
    }

    /// Sets a link up or down, optionally with a new controller (`Some(0)` = none).
    pub fn set_state(&mut self, index: u32, up: bool, controller: Option<u32>) -> Result<()> {
        let mut m = link(index);
        if let Some(c) = controller {
            m.attributes.push(LinkAttribute::Controller(c));
        }
        if up {
            m.header.flags |= LinkFlags::Up;
        } else {
            m.header.flags.remove(LinkFlags::Up);
        }
        m.header.change_mask |= LinkFlags::Up;
        self.set_link(m)
    }

    /// Takes a link out of its bridge, leaving its up/down state alone.
    pub fn set_nocontroller(&mut self, index: u32) -> Result<()> {
        let mut m = link(index);
        m.attributes.push(LinkAttribute::Controller(0));
        self.set_link(m)
    }

    /// Renames a link (and sets it down: a link that is up cannot be renamed).
    pub fn rename_down(&mut self, index: u32, name: &str) -> Result<()> {
        let mut m = link(index);
        m.header.flags.remove(LinkFlags::Up);
        m.header.change_mask |= LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.set_link(m)
    }

    /// Deletes link `name` (one end of a veth pair deletes both); absent is fine.
    pub fn delete_link(&mut self, name: &str) -> Result<()> {
        if let Some(i) = self.index_of(name)? {
            match self.ack(RouteNetlinkMessage::DelLink(link(i)), 0) {
                Err(e) if e.errno() == Some(ENODEV) => {}
                r => r?,
            }
        }
        Ok(())
    }

    pub fn add_address(&mut self, index: u32, a: &Cidr) -> Result<()> {
        let m = address_message(index, a.addr, a.prefix);
        self.ack(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn delete_address(&mut self, m: AddressMessage) -> Result<()> {
        self.ack(RouteNetlinkMessage::DelAddress(m), 0)
    }

    /// Addresses on link `index` (not link-local IPv6), with their messages for deletion.
    fn addresses_on(&mut self, index: u32) -> Result<Vec<(IpAddr, u8, AddressMessage)>> {
        Ok(self
            .address_messages()?
            .into_iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| address_of(&m).map(|ip| (ip, m.header.prefix_len, m)))
            .filter(|(ip, _, _)| !is_link_local6(ip))
            .collect())
    }

    /// Link `index` with exactly `addresses` (stale ones of a changed config go).
    pub fn set_addresses(
        &mut self,
        index: u32,
        ifname: &str,
        addresses: &[Cidr],
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let current = self.addresses_on(index)?;
        for a in addresses {
            if !current
                .iter()
                .any(|(ip, p, _)| (*ip, *p) == (a.addr, a.prefix))
            {
                self.add_address(index, a)
                    .with_context(|| format!("adding {a} to {ifname}"))?;
            }
        }
        for (ip, prefix, m) in current {
            if !addresses.iter().any(|a| a.addr == ip && a.prefix == prefix) {
                self.delete_address(m)
                    .with_context(|| format!("removing {ip} from {ifname}"))?;
            }
        }
        Ok(())
    }

    /// True once link `name` exists and has every address in `addresses`.
    pub fn has_addresses(&mut self, name: &str, addresses: &[Cidr]) -> Result<bool> {
        let Some(i) = self.index_of(name)? else {
            return Ok(false);
        };
        let have = self.addresses_on(i)?;
        Ok(addresses.iter().all(|a| {
            have.iter()
                .any(|(ip, p, _)| (*ip, *p) == (a.addr, a.prefix))
        }))
    }

    /// Waits until `ready` holds, re-checking it whenever a link or an address of this
    /// namespace changes, for at most `limit`; false if it never did.
    pub fn wait_until(
        &mut self,
        limit: Duration,
        mut ready: impl FnMut(&mut Netlink) -> Result<bool>,
    ) -> Result<bool> {
        // Subscribed before the first check, so a change right after it is not missed.
        let watch = self.watch(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)?;
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if ready(self)? {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            if wait_readable(watch.as_fd(), left)? {
                // Drained: the check above reads the state itself, whatever changed.
                while watch.recv(&mut &mut buf[..], libc::MSG_DONTWAIT).is_ok() {}
            }
        }
    }

    /// A socket receiving the notifications of `groups` in this socket's namespace.
    fn watch(&self, groups: u32) -> Result<Socket> {
        match self.pid {
            None => open_socket(groups).map_err(Error::Open),
            Some(pid) => netns::in_netns_of(pid, || open_socket(groups)).map_err(|e| match e {
                netns::Error::Enter(source) => Error::Netns { pid, source },
                netns::Error::Run(e) => Error::Open(e),
            }),
        }
    }
}

fn wait_readable(fd: BorrowedFd, limit: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = limit.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one pollfd that lives across the call.
    match unsafe { libc::poll(&mut p, 1, ms) } {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            e => Err(e),
        },
    }
}

fn link(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

fn link_name(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })
}

fn deprecated(m: &AddressMessage) -> bool {
    let long = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Flags(f) => Some(f.contains(AddressFlags::Deprecated)),
        _ => None,
    });
    long.unwrap_or_else(|| m.header.flags.contains(AddressHeaderFlags::Deprecated))
}

pub fn is_link_local6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

fn address_message(index: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = prefix;
    m.attributes.push(AddressAttribute::Address(addr));
    m.attributes.push(AddressAttribute::Local(addr));
    match addr {
        IpAddr::V4(v4) => {
            m.header.family = AddressFamily::Inet;
            if prefix < 31 {
                let brd = u32::from(v4) | (u32::MAX >> u32::from(prefix));
                m.attributes
                    .push(AddressAttribute::Broadcast(std::net::Ipv4Addr::from(brd)));
            }
        }
        IpAddr::V6(_) => m.header.family = AddressFamily::Inet6,
    }
    m
}

/// Waits (by notifications, for at most `limit`) until link `name` exists in our namespace
/// and has every address in `addresses`; false if it did not.
pub fn wait_for_link(name: &str, addresses: &[Cidr], limit: Duration) -> Result<bool> {
    let mut nl = Netlink::here()?;
    nl.wait_until(limit, |nl| nl.has_addresses(name, addresses))
}

/// Per leader PID: the host ends (in this namespace) of the links into its network
/// namespace, with their counters: one link dump and one namespace-id question per PID, no
/// namespace entered. A PID gone meanwhile has none.
pub fn host_links_of(leaders: &[u32]) -> Result<Vec<Vec<LinkCounters>>> {
    let mut nl = Netlink::here()?;
    let mut by = nl.links_by_peer_netns()?;
    Ok(leaders
        .iter()
        .map(|&pid| match nl.nsid_of_pid(pid) {
            Ok(Some(id)) => by.remove(&id).unwrap_or_default(),
            _ => Vec::new(),
        })
        .collect())
}

/// Per leader PID: the addresses machined would report for it, or `None` if its namespace
/// could not be read here (the caller asks machined instead).
pub fn machine_addresses_of(leaders: &[u32]) -> Vec<Option<Vec<IpAddr>>> {
    Netlink::of_pids(leaders)
        .into_iter()
        .map(|nl| nl.and_then(|mut nl| nl.machine_addresses().ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_dumps() {
        let mut nl = Netlink::here().unwrap();
        let addrs = nl.machine_addresses().unwrap();
        assert!(addrs.iter().all(|a| !a.is_loopback()), "{addrs:?}");
        let lo = nl.index_of("lo").unwrap();
        assert!(lo.is_some());
        assert_eq!(nl.index_of("no-such-link0").unwrap(), None);
        // The socket is reused: a second dump answers as the first.
        assert_eq!(nl.machine_addresses().unwrap(), addrs);
        assert!(nl.interfaces().unwrap().iter().all(|(n, _)| n != "lo"));
    }

    #[test]
    fn a_wait_for_what_holds_returns_at_once() {
        let mut nl = Netlink::here().unwrap();
        let t0 = Instant::now();
        assert!(nl
            .wait_until(Duration::from_secs(5), |nl| nl.link_exists("lo"))
            .unwrap());
        assert!(!nl
            .wait_until(Duration::from_millis(50), |nl| nl
                .link_exists("no-such-link0"))
            .unwrap());
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn address_messages_carry_local_and_broadcast() {
        let m = address_message(3, "10.0.0.2".parse().unwrap(), 24);
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Broadcast("10.0.0.255".parse().unwrap())));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Local("10.0.0.2".parse().unwrap())));
        let m6 = address_message(3, "fd00::2".parse().unwrap(), 64);
        assert_eq!(m6.header.family, AddressFamily::Inet6);
    }

    #[test]
    #[ignore = "needs root: makes links in a private network namespace (cargo test -- --ignored)"]
    fn links_and_addresses_in_a_private_namespace() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut nl = Netlink::here().unwrap();
            assert!(nl.ensure_bridge("tbr0").unwrap());
            assert!(!nl.ensure_bridge("tbr0").unwrap());
            let br = nl.index_of("tbr0").unwrap().unwrap();
            nl.create_veth("tv0", "tv0p").unwrap();
            let v = nl.index_of("tv0").unwrap().unwrap();
            nl.set_state(v, true, Some(br)).unwrap();
            let a: Cidr = "10.9.0.1/24".parse().unwrap();
            let b: Cidr = "fd09::1/64".parse().unwrap();
            nl.set_addresses(br, "tbr0", &[a, b]).unwrap();
            assert!(nl.has_addresses("tbr0", &[a, b]).unwrap());
            // Exactly the configured addresses: the one no longer asked for goes.
            nl.set_addresses(br, "tbr0", std::slice::from_ref(&b))
                .unwrap();
            assert!(!nl.has_addresses("tbr0", std::slice::from_ref(&a)).unwrap());
            let ifs = nl.interfaces().unwrap();
            assert!(ifs.iter().any(|(n, _)| n == "tv0p"), "{ifs:?}");
            // Both ends here: no link of this namespace has its peer elsewhere.
            assert!(nl.links_by_peer_netns().unwrap().is_empty());
            // A link that appears while we wait ends the wait by its notification.
            // (A thread made here shares this namespace.)
            let t = std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                Netlink::here().unwrap().create_veth("tv1", "tv1p").unwrap();
            });
            let t0 = Instant::now();
            assert!(wait_for_link("tv1", &[], Duration::from_secs(5)).unwrap());
            assert!(t0.elapsed() < Duration::from_secs(2));
            t.join().unwrap();
            nl.delete_link("tv0").unwrap();
            nl.delete_link("tv0").unwrap();
            assert_eq!(nl.index_of("tv0p").unwrap(), None);
            crate::net::nic::release_port(&mut nl, "tv1").unwrap();
        })
        .join()
        .unwrap();
    }
}
