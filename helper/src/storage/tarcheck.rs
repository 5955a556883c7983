//! Every member of a tar stream checked before GNU tar extracts it: the bytes pass through
//! this check on their way to `tar --extract`, so the archive is read once.
//!
//! GNU tar alone already keeps an extraction inside its directory (it strips a leading `/`,
//! refuses `..` members, and defers symlinks so no member is written through one), but it
//! *repairs* a hostile archive and goes on. An export file or a tarball comes from another
//! host, so a member that names a path outside the tree is a crafted file: it is refused,
//! and the caller throws the half-made tree away. GNU tar's own rules stay on as the second
//! line, should the two parsers ever read an archive differently.

use std::io::{self, Read, Write};
use std::path::{Component, Path};

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("member {0:?} is an absolute path")]
    Absolute(String),
    #[error("member {0:?} has a `..` component")]
    DotDot(String),
    #[error(
        "member {member:?} is a hard link to {target:?}, which is not a path inside the archive"
    )]
    LinkOut { member: String, target: String },
    #[error("a global extended header sets {0:?} for the members after it")]
    GlobalPath(String),
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("passing the archive to tar: {0}")]
    Write(#[source] io::Error),
}

/// A path is inside the tree: relative, and no `..` anywhere (a `..` that stays inside after
/// normalising is refused too: no honest archive writer makes one).
fn inside(name: &str) -> Result<(), fn(String) -> Refused> {
    let p = Path::new(name);
    if p.has_root() {
        return Err(Refused::Absolute);
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(Refused::DotDot);
    }
    Ok(())
}

/// Reads from `inner` and writes every byte read to `out`, so what the tar parser consumed
/// is exactly what GNU tar receives.
struct Tee<R, W> {
    inner: R,
    out: W,
    total: u64,
    write_error: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            self.write_error = Some(e);
            return Err(io::Error::new(kind, "tar stopped reading"));
        }
        self.total += n as u64;
        Ok(n)
    }
}

/// Copies the tar stream `from` into `to` (GNU tar's stdin), refusing the first member whose
/// name or hard-link target is absolute or has `..`. On refusal, the copy stops there: what
/// was passed on holds no refused member, and the caller removes the tree tar made.
/// Returns the bytes copied.
pub fn copy_checked(from: impl Read, to: impl Write) -> Result<u64, Refused> {
    let mut tee = Tee {
        inner: from,
        out: to,
        total: 0,
        write_error: None,
    };
    let result = check_members(&mut tee);
    if let Some(e) = tee.write_error.take() {
        return Err(Refused::Write(e));
    }
    result?;
    // The end-of-archive blocks (and any padding after them) go through as well.
    io::copy(&mut tee, &mut io::sink()).map_err(|e| match tee.write_error.take() {
        Some(w) => Refused::Write(w),
        None => Refused::Read(e),
    })?;
    Ok(tee.total)
}

fn check_members(r: &mut impl Read) -> Result<(), Refused> {
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries().map_err(Refused::Read)? {
        let mut entry = entry.map_err(Refused::Read)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // GNU tar applies a global `path`/`linkpath` to what follows; the tar crate does
            // not, so the two would read different names.
            if let Some(exts) = entry.pax_extensions().map_err(Refused::Read)? {
                for ext in exts {
                    let ext = ext.map_err(Refused::Read)?;
                    let key = ext.key().unwrap_or("?");
                    if key == "path" || key == "linkpath" {
                        return Err(Refused::GlobalPath(key.to_string()));
                    }
                }
            }
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        inside(&name).map_err(|refuse| refuse(name.clone()))?;
        if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            if inside(&target).is_err() {
                return Err(Refused::LinkOut {
                    member: name,
                    target,
                });
            }
        }
        // The data is read through (not skipped) so it reaches tar.
        io::copy(&mut entry, &mut io::sink()).map_err(Refused::Read)?;
    }
    Ok(())
}

/// The first members of a tar stream, read whole, and every byte read to get them, so the
/// stream can still be handed on from its start (`consumed` first, then the rest).
pub struct Front {
    pub members: Vec<(String, Vec<u8>)>,
    pub consumed: Vec<u8>,
}

/// Reads the first `count` members of the tar stream `r` that are not directories (each at
/// most `cap` bytes), for a look at an archive's metadata before anything of it is
/// unpacked. Fewer members, or a bigger one, is an error; the names are checked as
/// [`copy_checked`] checks them.
pub fn read_front(r: &mut impl Read, count: usize, cap: u64) -> Result<Front, Refused> {
    struct Recorder<'a, R> {
        inner: &'a mut R,
        seen: Vec<u8>,
    }
    impl<R: Read> Read for Recorder<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.seen.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }
    let mut archive = tar::Archive::new(Recorder {
        inner: r,
        seen: Vec::new(),
    });
    let mut members = Vec::new();
    {
        let mut entries = archive.entries().map_err(Refused::Read)?;
        while members.len() < count {
            let mut e = match entries.next() {
                Some(e) => e.map_err(Refused::Read)?,
                None => {
                    return Err(Refused::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the archive has fewer than {count} members"),
                    )))
                }
            };
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            inside(&name).map_err(|refuse| refuse(name.clone()))?;
            if e.header().entry_type().is_dir() {
                continue;
            }
            if e.size() > cap {
                return Err(Refused::Read(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("member {name:?} is larger than {cap} bytes"),
                )));
            }
            let mut data = Vec::new();
            e.read_to_end(&mut data).map_err(Refused::Read)?;
            members.push((name, data));
        }
    }
    Ok(Front {
        members,
        consumed: archive.into_inner().seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(members: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // set_path refuses `..` and absolute names: write the raw name, as an attacker would.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if !link.is_empty() {
                let raw = &mut h.as_old_mut().linkname;
                raw[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn check(a: &[u8]) -> Result<Vec<u8>, Refused> {
        let mut out = Vec::new();
        copy_checked(a, &mut out).map(|_| out)
    }

    #[test]
    fn an_honest_archive_passes_byte_for_byte() {
        let a = archive(&[
            ("rootfs/", tar::EntryType::Directory, "", b""),
            (
                "rootfs/etc/hostname",
                tar::EntryType::Regular,
                "",
                b"slot00\n",
            ),
            (
                "rootfs/etc/h2",
                tar::EntryType::Link,
                "rootfs/etc/hostname",
                b"",
            ),
            (
                "rootfs/etc/abs",
                tar::EntryType::Symlink,
                "/etc/shadow",
                b"",
            ),
            ("rootfs/etc/up", tar::EntryType::Symlink, "../../x", b""),
        ]);
        assert_eq!(check(&a).unwrap(), a);
    }

    #[test]
    fn absolute_members_are_refused() {
        let a = archive(&[("/root/target/x", tar::EntryType::Regular, "", b"pwned")]);
        assert!(matches!(check(&a), Err(Refused::Absolute(n)) if n == "/root/target/x"));
    }

    #[test]
    fn dotdot_members_are_refused() {
        let a = archive(&[
            ("rootfs/ok", tar::EntryType::Regular, "", b"fine"),
            ("rootfs/../../x", tar::EntryType::Regular, "", b"pwned"),
        ]);
        assert!(matches!(check(&a), Err(Refused::DotDot(n)) if n == "rootfs/../../x"));
    }

    #[test]
    fn hard_links_out_of_the_tree_are_refused() {
        for target in ["/etc/shadow", "../../etc/shadow", "rootfs/../../../x"] {
            let a = archive(&[("rootfs/hl", tar::EntryType::Link, target, b"")]);
            assert!(
                matches!(check(&a), Err(Refused::LinkOut { target: ref t, .. }) if t == target),
                "{target}"
            );
        }
    }

    #[test]
    fn long_names_are_checked_whole() {
        // A GNU long name (type L) carries the real name; the header's own is truncated.
        let long = format!("rootfs/{}/../../../../x", "d".repeat(120));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "rootfs/placeholder", &b""[..])
            .unwrap();
        let mut a = b.into_inner().unwrap();
        // Rebuild with a long name entry in front.
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::GNULongName);
        l.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        l.set_size(long.len() as u64 + 1);
        l.set_cksum();
        let mut body = long.clone().into_bytes();
        body.push(0);
        body.resize(body.len().div_ceil(512) * 512, 0);
        let mut crafted = l.as_bytes().to_vec();
        crafted.extend_from_slice(&body);
        crafted.append(&mut a);
        assert!(matches!(check(&crafted), Err(Refused::DotDot(n)) if n == long));
    }

    #[test]
    fn gnu_tar_sparse_archives_pass_whole() {
        // Exports and backups are made with `tar --sparse`: the sparse map must be read as
        // GNU tar wrote it, or the check would lose its place in the stream.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let f = std::fs::File::create(root.join("sparse")).unwrap();
        f.set_len(8 << 20).unwrap();
        std::fs::write(root.join("small"), b"data").unwrap();
        let out = std::process::Command::new("tar")
            .args(["--create", "--sparse", "--file=-", "-C"])
            .arg(&root)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(check(&out.stdout).unwrap(), out.stdout);
    }

    #[test]
    fn a_reader_that_stops_is_reported_as_such() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let a = archive(&[("rootfs/x", tar::EntryType::Regular, "", b"x")]);
        assert!(matches!(
            copy_checked(&a[..], Closed),
            Err(Refused::Write(_))
        ));
    }

    #[test]
    fn the_front_is_read_and_the_stream_goes_on_whole() {
        let a = archive(&[
            ("meta/", tar::EntryType::Directory, "", b""),
            ("meta/a", tar::EntryType::Regular, "", b"first"),
            ("meta/b", tar::EntryType::Regular, "", b"second!"),
            ("rootfs/x", tar::EntryType::Regular, "", b"x"),
        ]);
        let mut r = &a[..];
        let front = read_front(&mut r, 2, 100).unwrap();
        assert_eq!(front.members[0], ("meta/a".to_string(), b"first".to_vec()));
        assert_eq!(
            front.members[1],
            ("meta/b".to_string(), b"second!".to_vec())
        );
        let mut whole = front.consumed.clone();
        whole.extend_from_slice(r);
        assert_eq!(whole, a);
        assert_eq!(check(&whole).unwrap(), a);
        let mut r = &a[..];
        assert!(read_front(&mut r, 2, 5).is_err(), "a member over the cap");
        let mut r = &a[..512];
        assert!(read_front(&mut r, 2, 100).is_err(), "a cut archive");
    }
}
