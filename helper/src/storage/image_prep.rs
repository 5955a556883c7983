//! Makes a copied root filesystem boot clean as a slot (`systemctl is-system-running` says
//! `running`): what belongs to the host's hardware and network is taken out, the slot's
//! own network comes from networkd on `host0`, and units that cannot work in a container
//! are masked, as systemd's container interface (systemd.io/CONTAINER_INTERFACE) expects
//! of a container's payload. Every change is listed in docs/notes/stockpkg.md with why.
//!
//! Over 400 lines: a quarter is tests; the rest is one pass over one image.
//!
//! Paths inside the image are opened without following symlinks: the image may be a
//! tarball from anywhere, and a symlinked `/etc/fstab` must not make us write on the host.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Why an image could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepError {
    #[error(
        "{path} in the image is a symlink or has one on its way; refusing to write through it"
    )]
    Symlink { path: String },
    #[error("{what} {path} in the image: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What was changed, one line each, for the user.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub changes: Vec<String>,
    pub warnings: Vec<String>,
}

pub const FSTAB: &str =
    "# slot-os: a slot mounts nothing from fstab. The host's entries were removed\n\
# when this image was made: its disks (by UUID) are not in a slot, and\n\
# systemd-remount-fs would fail on them. Add a slot's storage as [[bind]] in\n\
# /etc/slot-os/<slot>.toml on the host instead.\n";

pub const INTERFACES: &str =
    "# slot-os: the host's interfaces were removed when this image was made. A slot's\n\
# network is systemd-networkd on host0 (DHCP from the host's zone, see\n\
# /usr/lib/systemd/network/80-container-host0.network); extra NICs come from the host.\n\
auto lo\n\
iface lo inet loopback\n";

/// systemd's own container network file (shipped by the systemd package since v219); written
/// only into an image that lacks it.
pub const HOST0_NETWORK: &str =
    "# slot-os: the default network of a container (as systemd ships it).\n\
[Match]\nVirtualization=container\nName=host0\n\n[Network]\nDHCP=yes\nLinkLocalAddressing=yes\n";

/// Units masked if the image has them, with the reason shown to the user. Each one manages
/// hardware or the host's own network, which a slot does not have or must not touch.
pub const MASKED: &[(&str, &str)] = &[
    (
        "NetworkManager.service",
        "the host's network manager; a slot uses networkd on host0",
    ),
    (
        "NetworkManager-wait-online.service",
        "waits for NetworkManager",
    ),
    (
        "NetworkManager-dispatcher.service",
        "part of NetworkManager",
    ),
    ("ModemManager.service", "modems are the host's"),
    ("wpa_supplicant.service", "Wi-Fi is the host's"),
    (
        "systemd-networkd-wait-online.service",
        "a slot's services should not wait for all links",
    ),
    (
        "ifupdown-wait-online.service",
        "waits for ifupdown, which configures only lo in a slot",
    ),
    ("smartmontools.service", "disks are the host's"),
    ("smartd.service", "disks are the host's"),
    ("mdmonitor.service", "RAID is the host's"),
    ("lvm2-monitor.service", "LVM is the host's"),
    ("multipathd.service", "multipath is the host's"),
    ("iscsid.service", "iSCSI is the host's"),
    ("open-iscsi.service", "iSCSI is the host's"),
    ("lm-sensors.service", "sensors are the host's"),
    ("fwupd.service", "firmware is the host's"),
    ("fwupd-refresh.timer", "firmware is the host's"),
    ("e2scrub_reap.service", "file systems are the host's"),
    ("e2scrub_all.timer", "file systems are the host's"),
    ("fstrim.timer", "discard is the host's"),
    (
        "apparmor.service",
        "a slot cannot load AppArmor profiles into the host's kernel",
    ),
];

/// Prepares the image at `root` (a directory that will be renamed into place) in place.
pub fn prepare(root: &Path) -> Result<Report, PrepError> {
    let mut r = Report::default();
    fstab(root, &mut r)?;
    network(root, &mut r)?;
    for (unit, why) in MASKED {
        if unit_exists(root, unit)? && !is_masked(root, unit) {
            mask(root, unit)?;
            r.changes.push(format!("masked {unit}: {why}"));
        }
    }
    Ok(r)
}

fn fstab(root: &Path, r: &mut Report) -> Result<(), PrepError> {
    let had_entries = match read_in(root, "etc/fstab")? {
        Some(t) => t
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')),
        None => false,
    };
    write_in(root, "etc/fstab", FSTAB)?;
    if had_entries {
        r.changes
            .push("/etc/fstab: the host's entries removed (a slot mounts no disks)".into());
    }
    Ok(())
}

fn network(root: &Path, r: &mut Report) -> Result<(), PrepError> {
    if let Some(t) = read_in(root, "etc/network/interfaces")? {
        if t != INTERFACES {
            write_in(root, "etc/network/interfaces", INTERFACES)?;
            r.changes.push("/etc/network/interfaces: loopback only (ifupdown no longer configures the host's NICs)".into());
        }
    }
    // netplan renders its YAML into networkd or NetworkManager files at every boot.
    if let Some(names) = list_in(root, "etc/netplan")? {
        for n in names
            .iter()
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        {
            remove_in(root, &format!("etc/netplan/{n}"))?;
            r.changes
                .push(format!("/etc/netplan/{n}: removed (the host's network)"));
        }
    }
    // NetworkManager's own connection profiles can hold the host's Wi-Fi and VPN secrets.
    if let Some(names) = list_in(root, "etc/NetworkManager/system-connections")? {
        for n in &names {
            remove_in(root, &format!("etc/NetworkManager/system-connections/{n}"))?;
        }
        if !names.is_empty() {
            r.changes
                .push("/etc/NetworkManager/system-connections: the host's profiles removed".into());
        }
    }
    if unit_exists(root, "systemd-networkd.service")? {
        let mut enabled = false;
        for (dir, name) in [
            ("multi-user.target.wants", "systemd-networkd.service"),
            ("sockets.target.wants", "systemd-networkd.socket"),
            ("", "dbus-org.freedesktop.network1.service"),
        ] {
            let target = if name.ends_with(".socket") {
                "systemd-networkd.socket"
            } else {
                "systemd-networkd.service"
            };
            let Some(unit_path) = unit_file(root, target)? else {
                continue;
            };
            let rel = if dir.is_empty() {
                format!("etc/systemd/system/{name}")
            } else {
                format!("etc/systemd/system/{dir}/{name}")
            };
            if lstat_in(root, &rel)?.is_none() {
                link_in(root, &rel, &unit_path)?;
                enabled = true;
            }
        }
        if is_masked(root, "systemd-networkd.service") {
            r.warnings.push(
                "systemd-networkd.service is masked in the image: host0 gets no address".into(),
            );
        } else if enabled {
            r.changes
                .push("systemd-networkd enabled: it configures host0 by DHCP".into());
        }
        let shipped = ["usr/lib/systemd/network", "lib/systemd/network"]
            .iter()
            .map(|d| lstat_in(root, &format!("{d}/80-container-host0.network")))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .any(|m| m.is_some());
        if !shipped && lstat_in(root, "etc/systemd/network/80-container-host0.network")?.is_none() {
            write_in(
                root,
                "etc/systemd/network/80-container-host0.network",
                HOST0_NETWORK,
            )?;
            r.changes
                .push("/etc/systemd/network/80-container-host0.network: DHCP on host0".into());
        }
    } else {
        r.warnings.push("the image has no systemd-networkd: host0 will not be configured (install systemd-networkd, or the systemd package that has it, in the image)".into());
    }
    Ok(())
}

/// `rel` under `root`, refusing `..` and absolute parts (callers pass constants, but a
/// name listed from the image passes through here too).
fn join(root: &Path, rel: &str) -> Result<PathBuf, PrepError> {
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(PrepError::Symlink {
            path: format!("/{rel}"),
        });
    }
    Ok(root.join(p))
}

/// Every directory from `root` down to `rel`'s parent must be a real directory (or absent):
/// a symlinked `/etc` or `/etc/systemd` in a tarball would otherwise redirect our writes.
fn check_parents(root: &Path, rel: &str) -> Result<(), PrepError> {
    let mut p = root.to_path_buf();
    let comps: Vec<_> = Path::new(rel).components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                // Debian's merged /usr has /lib -> usr/lib; reading through it is fine
                // for a relative link that stays inside, but we never write through one.
                return Err(PrepError::Symlink {
                    path: format!("/{}", p.strip_prefix(root).unwrap_or(&p).display()),
                });
            }
            Ok(m) if !m.is_dir() => {
                return Err(io(
                    "reading",
                    &p,
                    root,
                    std::io::Error::from(ErrorKind::NotADirectory),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("reading", &p, root, e)),
        }
    }
    Ok(())
}

fn io(what: &'static str, p: &Path, root: &Path, source: std::io::Error) -> PrepError {
    PrepError::Io {
        what,
        path: format!("/{}", p.strip_prefix(root).unwrap_or(p).display()),
        source,
    }
}

fn lstat_in(root: &Path, rel: &str) -> Result<Option<fs::Metadata>, PrepError> {
    let p = join(root, rel)?;
    if check_parents(root, rel).is_err() {
        // Lookups through a symlinked directory (e.g. /lib -> usr/lib) are answered "no":
        // the other spelling of the path is always checked too.
        return Ok(None);
    }
    match fs::symlink_metadata(&p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", &p, root, e)),
    }
}

fn read_in(root: &Path, rel: &str) -> Result<Option<String>, PrepError> {
    let p = join(root, rel)?;
    check_parents(root, rel)?;
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
    {
        Ok(mut f) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s)
                .map_err(|e| io("reading", &p, root, e))?;
            Ok(Some(s))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(PrepError::Symlink {
            path: format!("/{rel}"),
        }),
        Err(e) => Err(io("reading", &p, root, e)),
    }
}

/// Replaces `rel` with `text`: a new file renamed over the old one (a symlink there is
/// replaced, never written through).
fn write_in(root: &Path, rel: &str, text: &str) -> Result<(), PrepError> {
    let p = join(root, rel)?;
    check_parents(root, rel)?;
    let dir = p.parent().unwrap_or(root);
    fs::create_dir_all(dir).map_err(|e| io("creating", dir, root, e))?;
    check_parents(root, rel)?;
    let tmp = dir.join(format!(".slot-os-prep-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| io("writing", &tmp, root, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io("writing", &tmp, root, e))?;
    drop(f);
    fs::rename(&tmp, &p).map_err(|e| io("writing", &p, root, e))
}

fn remove_in(root: &Path, rel: &str) -> Result<(), PrepError> {
    let p = join(root, rel)?;
    check_parents(root, rel)?;
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", &p, root, e)),
    }
}

fn list_in(root: &Path, rel: &str) -> Result<Option<Vec<String>>, PrepError> {
    let p = join(root, rel)?;
    check_parents(root, rel)?;
    match fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(PrepError::Symlink {
                path: format!("/{rel}"),
            })
        }
        Ok(m) if !m.is_dir() => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", &p, root, e)),
    }
    let mut names: Vec<String> = fs::read_dir(&p)
        .map_err(|e| io("reading", &p, root, e))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(Some(names))
}

fn link_in(root: &Path, rel: &str, target: &str) -> Result<(), PrepError> {
    let p = join(root, rel)?;
    check_parents(root, rel)?;
    let dir = p.parent().unwrap_or(root);
    fs::create_dir_all(dir).map_err(|e| io("creating", dir, root, e))?;
    check_parents(root, rel)?;
    let _ = fs::remove_file(&p);
    symlink(target, &p).map_err(|e| io("linking", &p, root, e))
}

/// Where the image's package manager put `unit` (absolute, as seen inside the slot).
fn unit_file(root: &Path, unit: &str) -> Result<Option<String>, PrepError> {
    for d in ["usr/lib/systemd/system", "lib/systemd/system"] {
        if lstat_in(root, &format!("{d}/{unit}"))?.is_some_and(|m| m.is_file()) {
            return Ok(Some(format!("/{d}/{unit}")));
        }
    }
    Ok(None)
}

fn unit_exists(root: &Path, unit: &str) -> Result<bool, PrepError> {
    Ok(unit_file(root, unit)?.is_some())
}

fn is_masked(root: &Path, unit: &str) -> bool {
    let rel = format!("etc/systemd/system/{unit}");
    check_parents(root, &rel).is_ok()
        && fs::read_link(root.join(rel)).is_ok_and(|t| t == Path::new("/dev/null"))
}

/// Masking, as `systemctl mask` does: a link to /dev/null in /etc/systemd/system.
fn mask(root: &Path, unit: &str) -> Result<(), PrepError> {
    link_in(root, &format!("etc/systemd/system/{unit}"), "/dev/null")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "slot-os-prep-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        for p in [
            "etc/network",
            "etc/netplan",
            "usr/lib/systemd/system",
            "usr/lib/systemd/network",
        ] {
            fs::create_dir_all(d.join(p)).unwrap();
        }
        symlink("usr/lib", d.join("lib")).unwrap();
        fs::write(
            d.join("etc/fstab"),
            "UUID=1234-abcd / ext4 errors=remount-ro 0 1\nUUID=99 none swap sw 0 0\n",
        )
        .unwrap();
        fs::write(
            d.join("etc/network/interfaces"),
            "auto lo\niface lo inet loopback\nallow-hotplug ens3\niface ens3 inet dhcp\n",
        )
        .unwrap();
        fs::write(d.join("etc/netplan/01-netcfg.yaml"), "network: {}\n").unwrap();
        for u in [
            "systemd-networkd.service",
            "systemd-networkd.socket",
            "NetworkManager.service",
            "smartmontools.service",
        ] {
            fs::write(d.join("usr/lib/systemd/system").join(u), "[Unit]\n").unwrap();
        }
        fs::write(
            d.join("usr/lib/systemd/network/80-container-host0.network"),
            "",
        )
        .unwrap();
        d
    }

    #[test]
    fn stock_root_becomes_slot_ready() {
        let d = tree();
        let r = prepare(&d).unwrap();
        assert_eq!(fs::read_to_string(d.join("etc/fstab")).unwrap(), FSTAB);
        assert_eq!(
            fs::read_to_string(d.join("etc/network/interfaces")).unwrap(),
            INTERFACES
        );
        assert!(!d.join("etc/netplan/01-netcfg.yaml").exists());
        assert_eq!(
            fs::read_link(
                d.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
            )
            .unwrap(),
            Path::new("/usr/lib/systemd/system/systemd-networkd.service")
        );
        assert_eq!(
            fs::read_link(
                d.join("etc/systemd/system/sockets.target.wants/systemd-networkd.socket")
            )
            .unwrap(),
            Path::new("/usr/lib/systemd/system/systemd-networkd.socket")
        );
        assert!(d
            .join("etc/systemd/system/dbus-org.freedesktop.network1.service")
            .symlink_metadata()
            .is_ok());
        assert!(is_masked(&d, "NetworkManager.service"));
        assert!(is_masked(&d, "smartmontools.service"));
        // Units the image does not have are not masked (no dangling masks to confuse).
        assert!(d
            .join("etc/systemd/system/ModemManager.service")
            .symlink_metadata()
            .is_err());
        // systemd ships the host0 file: none written.
        assert!(!d
            .join("etc/systemd/network/80-container-host0.network")
            .exists());
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.changes.len(), 6, "{:?}", r.changes);
        // Twice is the same as once.
        let again = prepare(&d).unwrap();
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn host0_file_written_where_systemd_lacks_it() {
        let d = tree();
        fs::remove_file(d.join("usr/lib/systemd/network/80-container-host0.network")).unwrap();
        prepare(&d).unwrap();
        assert_eq!(
            fs::read_to_string(d.join("etc/systemd/network/80-container-host0.network")).unwrap(),
            HOST0_NETWORK
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn symlinks_out_of_the_image_are_refused() {
        let d = tree();
        let outside = d.with_extension("outside");
        let _ = fs::remove_dir_all(&outside);
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("fstab"), "host\n").unwrap();
        fs::remove_file(d.join("etc/fstab")).unwrap();
        symlink(outside.join("fstab"), d.join("etc/fstab")).unwrap();
        let e = prepare(&d).unwrap_err();
        assert!(matches!(e, PrepError::Symlink { .. }), "{e}");
        assert_eq!(fs::read_to_string(outside.join("fstab")).unwrap(), "host\n");

        // A symlinked directory on the way (/etc/systemd -> outside) is refused too.
        fs::remove_file(d.join("etc/fstab")).unwrap();
        fs::remove_dir_all(d.join("etc/network")).unwrap();
        symlink(&outside, d.join("etc/network")).unwrap();
        fs::write(outside.join("interfaces"), "host\n").unwrap();
        let e = prepare(&d).unwrap_err();
        assert!(matches!(e, PrepError::Symlink { .. }), "{e}");
        assert_eq!(
            fs::read_to_string(outside.join("interfaces")).unwrap(),
            "host\n"
        );
        fs::remove_dir_all(d).unwrap();
        fs::remove_dir_all(outside).unwrap();
    }

    #[test]
    fn no_networkd_is_a_warning() {
        let d = tree();
        fs::remove_file(d.join("usr/lib/systemd/system/systemd-networkd.service")).unwrap();
        let r = prepare(&d).unwrap();
        assert!(
            r.warnings.iter().any(|w| w.contains("no systemd-networkd")),
            "{:?}",
            r.warnings
        );
        fs::remove_dir_all(d).unwrap();
    }
}
