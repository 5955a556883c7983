//! A running machine's addresses read straight from its network namespace over rtnetlink,
//! the way machined's GetMachineAddresses does it, but without machined forking a child per
//! machine (one after the other: ~2 ms each here, which made `list` scale with the number of
//! running slots). A helper thread enters each machine's netns (setns, needs root), opens a
//! NETLINK_ROUTE socket there and dumps the addresses; the filter and the order are
//! machined's (systemd's `local_addresses()`): no host-scope or deprecated addresses, global
//! scope first, IPv4 before IPv6. Where this cannot be done (not root, machine gone), the
//! caller asks machined instead.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sched::{setns, CloneFlags};

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;

/// Per leader PID: its netns' addresses, or `None` if they could not be read here.
pub(crate) fn addresses_of_leaders(leaders: &[u32]) -> Vec<Option<Vec<IpAddr>>> {
    if leaders.is_empty() {
        return Vec::new();
    }
    // Our own threads are not worth a netns change; a helper thread is (setns only moves
    // the calling thread, and the thread ends with it).
    std::thread::scope(|s| {
        s.spawn(|| leaders.iter().map(|&pid| in_netns_of(pid).ok()).collect())
            .join()
            .unwrap_or_else(|_| leaders.iter().map(|_| None).collect())
    })
}

fn in_netns_of(pid: u32) -> io::Result<Vec<IpAddr>> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    // The socket belongs to the netns it was made in, whatever the thread does next.
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    dump_addresses(&sock)
}

#[repr(C)]
struct Request {
    nlh: libc::nlmsghdr,
    ifa: IfAddrMsg,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IfAddrMsg {
    family: u8,
    prefixlen: u8,
    flags: u8,
    scope: u8,
    index: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn dump_addresses(sock: &OwnedFd) -> io::Result<Vec<IpAddr>> {
    let req = Request {
        nlh: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: libc::RTM_GETADDR,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        ifa: IfAddrMsg {
            family: libc::AF_UNSPEC as u8,
            prefixlen: 0,
            flags: 0,
            scope: 0,
            index: 0,
        },
    };
    // SAFETY: sends the bytes of a plain repr(C) struct that lives across the call.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            (&req as *const Request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found: Vec<(u8, u32, IpAddr)> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: receives into a buffer we own, at most its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if parse_messages(&buf[..n as usize], &mut found)? {
            break;
        }
    }
    // machined's order: by scope (global first), then IPv4 before IPv6, then interface.
    found.sort_by_key(|(scope, index, ip)| (*scope, ip.is_ipv6(), *index));
    Ok(found.into_iter().map(|(_, _, ip)| ip).collect())
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Parses one recv's worth of netlink messages into (scope, ifindex, address); true once
/// the dump is done.
fn parse_messages(b: &[u8], found: &mut Vec<(u8, u32, IpAddr)>) -> io::Result<bool> {
    const HDR: usize = size_of::<libc::nlmsghdr>();
    const IFA: usize = size_of::<IfAddrMsg>();
    let mut off = 0;
    while off + HDR <= b.len() {
        let len = u32_at(b, off) as usize;
        let kind = u16_at(b, off + 4);
        if len < HDR || off + len > b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad netlink message",
            ));
        }
        match i32::from(kind) {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                let errno = if len >= HDR + 4 {
                    u32_at(b, off + HDR) as i32
                } else {
                    0
                };
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
            _ if kind == libc::RTM_NEWADDR && len >= HDR + IFA => {
                let m = off + HDR;
                let (family, scope, index) = (b[m], b[m + 3], u32_at(b, m + 4));
                let mut flags = u32::from(b[m + 2]);
                let (mut address, mut local) = (None, None);
                let mut a = m + align4(IFA);
                while a + 4 <= off + len {
                    let alen = u16_at(b, a) as usize;
                    let atype = u16_at(b, a + 2);
                    if alen < 4 || a + alen > off + len {
                        break;
                    }
                    let data = &b[a + 4..a + alen];
                    match atype {
                        IFA_ADDRESS => address = ip_from(family, data),
                        IFA_LOCAL => local = ip_from(family, data),
                        IFA_FLAGS if data.len() >= 4 => flags = u32_at(data, 0),
                        _ => {}
                    }
                    a += align4(alen);
                }
                let skip = scope == libc::RT_SCOPE_HOST
                    || scope == libc::RT_SCOPE_NOWHERE
                    || flags & libc::IFA_F_DEPRECATED != 0;
                // For IPv4, IFA_LOCAL is the interface's own address (IFA_ADDRESS may be the
                // peer's on point-to-point links).
                if let (false, Some(ip)) = (skip, local.or(address)) {
                    found.push((scope, index, ip));
                }
            }
            _ => {}
        }
        off += align4(len);
    }
    Ok(false)
}

fn ip_from(family: u8, data: &[u8]) -> Option<IpAddr> {
    match (i32::from(family), data.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(
            data[0], data[1], data[2], data[3],
        ))),
        (libc::AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_netns_addresses() {
        // Reading our own netns (no setns) must at least not fail; loopback is filtered.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        assert!(fd >= 0);
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let addrs = super::dump_addresses(&sock).unwrap();
        assert!(addrs.iter().all(|a| !a.is_loopback()), "{addrs:?}");
    }

    #[test]
    fn parses_a_dump() {
        // one RTM_NEWADDR: AF_INET, /24, scope global, ifindex 2, IFA_ADDRESS + IFA_LOCAL
        let mut m: Vec<u8> = Vec::new();
        let body: Vec<u8> = [
            vec![libc::AF_INET as u8, 24, 0, 0],
            2u32.to_ne_bytes().to_vec(),
            vec![8, 0, 1, 0, 10, 0, 0, 9],
            vec![8, 0, 2, 0, 10, 0, 0, 2],
        ]
        .concat();
        let len = 16 + body.len() as u32;
        m.extend(len.to_ne_bytes());
        m.extend(libc::RTM_NEWADDR.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        // then NLMSG_DONE
        m.extend(20u32.to_ne_bytes());
        m.extend((libc::NLMSG_DONE as u16).to_ne_bytes());
        m.extend([0u8; 14]);
        let mut found = Vec::new();
        assert!(super::parse_messages(&m, &mut found).unwrap());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].2, "10.0.0.2".parse::<std::net::IpAddr>().unwrap());
    }
}
