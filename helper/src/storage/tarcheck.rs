//! Every member of a tar stream checked before GNU tar extracts it: the bytes pass through
//! this check on their way to `tar --extract`, so the archive is read once. Each member's
//! header (and a dumpdir's listing) is held back until it passed, so nothing of a refused
//! member ever reaches tar.
//!
//! GNU tar alone already keeps an extraction inside its directory (it strips a leading `/`,
//! refuses `..` members, and defers symlinks so no member is written through one), but it
//! *repairs* a hostile archive and goes on. An export file or a tarball comes from another
//! host, so a member that names a path outside the tree is a crafted file: it is refused,
//! and the caller throws the half-made tree away. GNU tar's own rules stay on as the second
//! line, should the two parsers ever read an archive differently.
//!
//! An incremental stream (`--listed-incremental`, a move's copy and its changes) is
//! extracted onto a tree that already exists, where the first dump may have left symlinks
//! (a slot's own, pointing anywhere on the host). GNU tar's deferred symlinks do not cover
//! those, so such a stream must also keep the two properties that make its extraction stay
//! inside the tree ([`Rules::incremental`]): every member's directory (and a hard link's
//! target's) is a member before it, so its dumpdir has already replaced whatever was at
//! that path with a real directory; and no dumpdir renames directories (`R`/`T`/`X`
//! entries): tar applies renames before anything else, by path, through whatever symlinks
//! the first dump left (seen here: a renamed directory landed in a host directory).

use std::cell::RefCell;
use std::collections::HashSet;
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
    #[error("member {0:?} comes before its directory (an incremental stream lists a directory before what is in it)")]
    Orphan(String),
    #[error("the dumpdir of {member:?} renames directories ({entry:?}); renames are not accepted")]
    Rename { member: String, entry: String },
    #[error("the dumpdir of {member:?} is malformed: {why}")]
    BadDumpdir { member: String, why: String },
    #[error("member {0:?} is a device node; a slot gets its own /dev from nspawn, other device nodes are refused")]
    Device(String),
    #[error("a malformed header: {0}")]
    Malformed(String),
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("passing the archive to tar: {0}")]
    Write(#[source] io::Error),
}

/// What a stream must keep beyond names inside the tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// A `--listed-incremental` stream extracted onto an existing tree (see the module doc).
    pub incremental: bool,
    /// A slot's root: no device nodes but the harmless ones of its /dev.
    pub no_devices: bool,
}

/// The largest dumpdir accepted (a directory of about two million names).
const DUMPDIR_CAP: u64 = 64 << 20;

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

/// Where the checked bytes go: straight to tar, or held back while a member is checked.
struct Gate<W> {
    out: W,
    held: Vec<u8>,
    holding: bool,
    total: u64,
    write_error: Option<io::Error>,
}

impl<W: Write> Gate<W> {
    fn pass(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.holding {
            self.held.extend_from_slice(bytes);
            return Ok(());
        }
        self.send(bytes)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.out.write_all(bytes) {
            let kind = e.kind();
            self.write_error = Some(e);
            return Err(io::Error::new(kind, "tar stopped reading"));
        }
        self.total += bytes.len() as u64;
        Ok(())
    }

    fn hold(&mut self) {
        self.holding = true;
    }

    /// What was held goes on, and what is read from now on goes straight through.
    fn release(&mut self) -> io::Result<()> {
        self.holding = false;
        let held = std::mem::take(&mut self.held);
        self.send(&held)
    }
}

/// Reads from `inner` and hands every byte read to the gate, so what the tar parser
/// consumed is exactly what GNU tar receives.
struct Tee<'g, R, W> {
    inner: R,
    gate: &'g RefCell<Gate<W>>,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.gate.borrow_mut().pass(&buf[..n])?;
        Ok(n)
    }
}

/// Copies the tar stream `from` into `to` (GNU tar's stdin), refusing the first member whose
/// name or hard-link target is absolute or has `..`. On refusal, the copy stops there: what
/// was passed on holds no part of the refused member, and the caller removes the tree tar
/// made. Returns the bytes copied.
pub fn copy_checked(from: impl Read, to: impl Write) -> Result<u64, Refused> {
    copy_checked_with(from, to, Rules::default())
}

/// [`copy_checked`] with the `rules` the stream must keep.
pub fn copy_checked_with(from: impl Read, to: impl Write, rules: Rules) -> Result<u64, Refused> {
    let gate = RefCell::new(Gate {
        out: to,
        held: Vec::new(),
        holding: true,
        total: 0,
        write_error: None,
    });
    let mut tee = Tee {
        inner: from,
        gate: &gate,
    };
    let result = check_members(&mut tee, rules);
    let write_error = || gate.borrow_mut().write_error.take();
    if let Some(e) = write_error() {
        return Err(Refused::Write(e));
    }
    result?;
    // The end-of-archive blocks (and any padding after them) go through as well.
    let released = gate.borrow_mut().release();
    let rest = released.and_then(|()| io::copy(&mut tee, &mut io::sink()));
    if let Err(e) = rest {
        return Err(match write_error() {
            Some(w) => Refused::Write(w),
            None => Refused::Read(e),
        });
    }
    let total = gate.borrow().total;
    Ok(total)
}

/// A member's name without its trailing `/` (GNU tar writes `./etc/` for a directory).
fn normal(name: &str) -> &str {
    match name.trim_end_matches('/') {
        "" => ".",
        n => n,
    }
}

/// The directory a member is in (`.` for `./x`), `None` for the tree's root itself.
fn parent(name: &str) -> Option<&str> {
    normal(name).rsplit_once('/').map(|(p, _)| p)
}

/// A pax record: key, value.
type PaxRecord = (Vec<u8>, Vec<u8>);

/// Pax records `(key, value)` of `data`, read by their length prefixes ("LEN KEY=VALUE\n"),
/// as GNU tar reads them. (tar-rs splits them at newlines, which binary xattr values, a
/// dumpdir or a crafted name hold, and then skips what it could not read: it would check a
/// name other than the one GNU tar extracts.)
fn pax_records(data: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) {
            break; // padding some writers leave at the end
        }
        let sp = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or("a pax record without its length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or("a pax record with a bad length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("a pax record that does not end where its length says".into());
        }
        let kv = &rest[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|b| *b == b'=')
            .ok_or("a pax record without `=`")?;
        out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// The local pax records of the member whose headers are in `held` after `pad` bytes (the
/// previous member's padding): the data of every `x` header before the member's own one.
fn local_pax(held: &[u8], pad: usize) -> Result<Vec<PaxRecord>, String> {
    let mut out = Vec::new();
    let mut at = pad;
    while at + 512 <= held.len() {
        let h = tar::Header::from_byte_slice(&held[at..at + 512]);
        let kind = h.entry_type();
        let extension =
            kind.is_pax_local_extensions() || kind.is_gnu_longname() || kind.is_gnu_longlink();
        if !extension {
            break;
        }
        let size = h.entry_size().map_err(|e| e.to_string())? as usize;
        let data = held
            .get(at + 512..at + 512 + size)
            .ok_or("an extension header cut short")?;
        if kind.is_pax_local_extensions() {
            out.extend(pax_records(data)?);
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    Ok(out)
}

fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

fn record(pax: &[PaxRecord], key: &str) -> Option<Vec<u8>> {
    pax.iter()
        .rev()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v.clone())
}

fn check_members<R: Read, W: Write>(tee: &mut Tee<'_, R, W>, rules: Rules) -> Result<(), Refused> {
    let gate = tee.gate;
    let mut archive = tar::Archive::new(tee);
    // Directories seen so far, for the incremental rule; the first member is the root.
    let mut dirs: HashSet<String> = HashSet::new();
    let mut first = true;
    let mut pad = 0;
    for entry in archive.entries().map_err(Refused::Read)? {
        let mut entry = entry.map_err(Refused::Read)?;
        let pax = local_pax(&gate.borrow().held, pad).map_err(Refused::Malformed)?;
        pad = padding(entry.size());
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // GNU tar applies a global `path`/`linkpath` to what follows; the tar crate does
            // not, so the two would read different names.
            let mut data = Vec::new();
            (&mut entry)
                .take(1 << 20)
                .read_to_end(&mut data)
                .map_err(Refused::Read)?;
            for (k, _) in pax_records(&data).map_err(Refused::Malformed)? {
                if k == b"path" || k == b"linkpath" {
                    return Err(Refused::GlobalPath(String::from_utf8_lossy(&k).into()));
                }
            }
            gate.borrow_mut().release().map_err(Refused::Read)?;
            io::copy(&mut entry, &mut io::sink()).map_err(Refused::Read)?;
            gate.borrow_mut().hold();
            continue;
        }
        // GNU tar takes a pax `path` over the header's name (and a long name).
        let name = record(&pax, "path").unwrap_or_else(|| entry.path_bytes().into_owned());
        let name = String::from_utf8_lossy(&name).into_owned();
        inside(&name).map_err(|refuse| refuse(name.clone()))?;
        // GNU format's listing member; POSIX format lists a directory in a pax record.
        let dumpdir = kind.as_byte() == b'D';
        if rules.incremental {
            let known = |p: Option<&str>| p.is_some_and(|p| dirs.contains(p));
            // The root comes first, as a directory; everything else inside a known one.
            let placed = match first {
                true => dumpdir || kind.is_dir(),
                false => known(parent(&name)),
            };
            if !placed {
                return Err(Refused::Orphan(name));
            }
            if dumpdir || kind.is_dir() {
                dirs.insert(normal(&name).to_string());
            }
        }
        first = false;
        if rules.no_devices && (kind.is_block_special() || kind.is_character_special()) {
            let h = entry.header();
            let dev = (
                h.device_major().ok().flatten().unwrap_or(u32::MAX),
                h.device_minor().ok().flatten().unwrap_or(u32::MAX),
            );
            let dir = parent(&name).unwrap_or("").trim_start_matches('.');
            if kind.is_block_special() || !crate::sys::inroot::harmless_char_device(dir, dev) {
                return Err(Refused::Device(name));
            }
        }
        if kind.is_hard_link() {
            let target = record(&pax, "linkpath")
                .or_else(|| entry.link_name_bytes().map(|t| t.into_owned()))
                .unwrap_or_default();
            let target = String::from_utf8_lossy(&target).into_owned();
            let orphan = rules.incremental && !parent(&target).is_some_and(|p| dirs.contains(p));
            if inside(&target).is_err() || orphan {
                return Err(Refused::LinkOut {
                    member: name,
                    target,
                });
            }
        }
        if rules.incremental {
            // tar acts on a dumpdir once it has read it whole: checked before it goes on.
            if let Some(listing) = listing_of(&mut entry, &name, &pax)? {
                check_dumpdir(&name, &listing)?;
            }
        }
        gate.borrow_mut().release().map_err(Refused::Read)?;
        // The data is read through (not skipped) so it reaches tar.
        io::copy(&mut entry, &mut io::sink()).map_err(Refused::Read)?;
        gate.borrow_mut().hold();
    }
    Ok(())
}

/// GNU tar's pax keyword for a directory's listing in POSIX-format incremental archives
/// (those with xattrs); GNU-format ones have `D` members whose data is the listing.
const PAX_DUMPDIR: &str = "GNU.dumpdir";

/// A member's directory listing, if it has one: a `D` member's data (read here) or its
/// `GNU.dumpdir` pax record.
fn listing_of<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    pax: &[PaxRecord],
) -> Result<Option<Vec<u8>>, Refused> {
    if entry.header().entry_type().as_byte() != b'D' {
        return Ok(record(pax, PAX_DUMPDIR));
    }
    if entry.size() > DUMPDIR_CAP {
        return Err(Refused::BadDumpdir {
            member: name.to_string(),
            why: format!("larger than {DUMPDIR_CAP} bytes"),
        });
    }
    let mut listing = Vec::new();
    entry.read_to_end(&mut listing).map_err(Refused::Read)?;
    Ok(Some(listing))
}

/// The first member of an incremental tar stream (its root) and its listing, and every byte
/// read to get them, so the stream can be handed on from its start: (consumed, listing).
pub fn first_listing(r: &mut impl Read) -> Result<(Vec<u8>, Vec<u8>), Refused> {
    struct Recorder<'a, R> {
        inner: &'a mut R,
        seen: &'a RefCell<Vec<u8>>,
    }
    impl<R: Read> Read for Recorder<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.seen.borrow_mut().extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }
    let seen = RefCell::new(Vec::new());
    // The archive and its entry borrow `seen`: they end with this block.
    let listing = {
        let mut archive = tar::Archive::new(Recorder {
            inner: r,
            seen: &seen,
        });
        let mut entries = archive.entries().map_err(Refused::Read)?;
        let mut first = match entries.next() {
            Some(e) => e.map_err(Refused::Read)?,
            None => {
                return Err(Refused::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the archive is empty",
                )))
            }
        };
        let name = String::from_utf8_lossy(&first.path_bytes()).into_owned();
        // Only the first member's headers were read so far.
        let pax = local_pax(&seen.borrow(), 0).map_err(Refused::Malformed)?;
        listing_of(&mut first, &name, &pax)?.unwrap_or_default()
    };
    Ok((seen.into_inner(), listing))
}

/// The entries of a dumpdir (GNU tar's listing of a directory in an incremental archive):
/// a control letter and a name each.
pub fn dumpdir_entries(listing: &[u8]) -> Vec<(u8, String)> {
    listing
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| (e[0], String::from_utf8_lossy(&e[1..]).into_owned()))
        .collect()
}

/// A dumpdir may only list names in its own directory (`Y` in this dump, `N` not, `D` a
/// directory); renames (`R`, `T`, and `X`, their temporary directory) are refused.
fn check_dumpdir(member: &str, listing: &[u8]) -> Result<(), Refused> {
    let bad = |why: String| Refused::BadDumpdir {
        member: member.to_string(),
        why,
    };
    if listing.last().is_some_and(|b| *b != 0) {
        return Err(bad("its last entry is not terminated".into()));
    }
    for (code, name) in dumpdir_entries(listing) {
        match code {
            b'Y' | b'N' | b'D' => {
                if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                    return Err(bad(format!("entry {:?} is not a name in it", name)));
                }
            }
            b'R' | b'T' | b'X' => {
                return Err(Refused::Rename {
                    member: member.to_string(),
                    entry: format!("{}{name}", code as char),
                })
            }
            other => return Err(bad(format!("unknown entry kind {:?}", other as char))),
        }
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

    /// GNU tar's own incremental dumps of `src`: level 0, then `change` runs, then level 1.
    fn gnu_dumps(
        format: &str,
        change: impl FnOnce(&Path),
    ) -> (tempfile::TempDir, Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), b"f").unwrap();
        std::fs::write(src.join("gone"), b"g").unwrap();
        let dump = |snar: &str| {
            let out = std::process::Command::new("tar")
                .args(["--create", "--file=-"])
                .arg(format!("--format={format}"))
                .arg(format!(
                    "--listed-incremental={}",
                    dir.path().join(snar).display()
                ))
                .arg("-C")
                .arg(&src)
                .arg(".")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let l0 = dump("snar0");
        std::fs::copy(dir.path().join("snar0"), dir.path().join("snar1")).unwrap();
        change(&src);
        let l1 = dump("snar1");
        (dir, l0, l1)
    }

    fn check_inc(a: &[u8]) -> Result<Vec<u8>, Refused> {
        let mut out = Vec::new();
        let rules = Rules {
            incremental: true,
            no_devices: true,
        };
        copy_checked_with(a, &mut out, rules).map(|_| out)
    }

    /// GNU format (`D` members) and POSIX format (`GNU.dumpdir` pax records, what GNU tar
    /// writes once xattrs are asked for).
    const FORMATS: [&str; 2] = ["gnu", "posix"];

    #[test]
    fn gnu_incremental_dumps_pass_whole() {
        for f in FORMATS {
            let (_d, l0, l1) = gnu_dumps(f, |src| {
                std::fs::remove_file(src.join("gone")).unwrap();
                std::fs::write(src.join("d/new"), b"n").unwrap();
                std::fs::hard_link(src.join("d/new"), src.join("link")).unwrap();
            });
            assert_eq!(check_inc(&l0).unwrap(), l0, "{f}");
            assert_eq!(check_inc(&l1).unwrap(), l1, "{f}");
            let (consumed, listing) = first_listing(&mut &l1[..]).unwrap();
            assert_eq!(consumed, l1[..consumed.len()], "{f}");
            let names: Vec<_> = dumpdir_entries(&listing);
            assert!(names.contains(&(b'D', "d".to_string())), "{f}: {names:?}");
            assert!(
                names.contains(&(b'Y', "link".to_string())),
                "{f}: {names:?}"
            );
        }
    }

    #[test]
    fn renamed_directories_are_refused_before_tar_reads_a_byte() {
        for f in FORMATS {
            let (_d, _l0, l1) = gnu_dumps(f, |src| {
                std::fs::rename(src.join("d"), src.join("e")).unwrap();
            });
            match check_inc(&l1) {
                Err(Refused::Rename { member, entry }) => {
                    assert_eq!(member, "./", "{f}");
                    assert_eq!(entry, "R./d", "{f}");
                }
                other => panic!("{f}: {other:?}"),
            }
            // The renames are in the first member: nothing at all reached tar.
            let mut out = Vec::new();
            let _ = copy_checked_with(
                &l1[..],
                &mut out,
                Rules {
                    incremental: true,
                    no_devices: false,
                },
            );
            assert!(out.is_empty(), "{f}: {} bytes reached tar", out.len());
            // Outside incremental extraction tar ignores dumpdirs: nothing to refuse there.
            assert_eq!(check(&l1).unwrap(), l1, "{f}");
        }
    }

    fn dumpdir(name: &str, listing: &[u8]) -> (String, tar::EntryType, String, Vec<u8>) {
        (
            name.into(),
            tar::EntryType::new(b'D'),
            String::new(),
            listing.to_vec(),
        )
    }

    fn archive_of(members: &[(String, tar::EntryType, String, Vec<u8>)]) -> Vec<u8> {
        let m: Vec<(&str, tar::EntryType, &str, &[u8])> = members
            .iter()
            .map(|(n, k, l, d)| (n.as_str(), *k, l.as_str(), d.as_slice()))
            .collect();
        archive(&m)
    }

    fn file(name: &str) -> (String, tar::EntryType, String, Vec<u8>) {
        (
            name.into(),
            tar::EntryType::Regular,
            String::new(),
            b"x".to_vec(),
        )
    }

    #[test]
    fn members_before_their_directory_are_refused() {
        let root = dumpdir("./", b"Da\0Yf\0\0");
        let ok = archive_of(&[
            root.clone(),
            dumpdir("./a/", b"Yg\0\0"),
            file("./a/g"),
            file("./f"),
        ]);
        assert_eq!(check_inc(&ok).unwrap(), ok);
        // ./a/g without ./a/ before it: on the target ./a may be a symlink the first dump left.
        let orphan = archive_of(&[root.clone(), file("./a/g")]);
        assert!(matches!(check_inc(&orphan), Err(Refused::Orphan(n)) if n == "./a/g"));
        let first_not_dir = archive_of(&[file("./f")]);
        assert!(matches!(check_inc(&first_not_dir), Err(Refused::Orphan(_))));
        let link = archive_of(&[
            root.clone(),
            (
                "./h".into(),
                tar::EntryType::Link,
                "./a/g".into(),
                Vec::new(),
            ),
        ]);
        assert!(matches!(check_inc(&link), Err(Refused::LinkOut { .. })));
        // A refused member never reaches tar: only the members before it did.
        let mut out = Vec::new();
        let _ = copy_checked_with(
            &orphan[..],
            &mut out,
            Rules {
                incremental: true,
                no_devices: false,
            },
        );
        assert_eq!(out, archive_of(&[root])[..out.len()]);
        assert_eq!(out.len(), 512 + 7, "the root's header and listing only");
    }

    #[test]
    fn malformed_dumpdirs_are_refused() {
        for listing in [
            &b"Ya/b\0\0"[..],
            b"Y..\0\0",
            b"Y\0Yx\0\0",
            b"Qx\0\0",
            b"Yx",
            b"Xtmp\0\0",
            b"Rold\0Tnew\0\0",
        ] {
            let a = archive_of(&[dumpdir("./", listing)]);
            assert!(
                matches!(
                    check_inc(&a),
                    Err(Refused::BadDumpdir { .. } | Refused::Rename { .. })
                ),
                "{listing:?}"
            );
        }
    }

    #[test]
    fn device_nodes_outside_dev_are_refused() {
        let dev = |name: &str, kind: tar::EntryType, major: u32, minor: u32| {
            let mut a = archive(&[
                ("./", tar::EntryType::Directory, "", b""),
                ("./dev/", tar::EntryType::Directory, "", b""),
            ]);
            a.truncate(1024); // without the end-of-archive blocks
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o600);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            a.extend_from_slice(h.as_bytes());
            a.extend_from_slice(&[0u8; 1024]);
            a
        };
        let null = dev("./dev/null", tar::EntryType::Char, 1, 3);
        assert_eq!(check_inc(&null).unwrap(), null);
        for a in [
            dev("./dev/sda", tar::EntryType::Block, 8, 0),
            dev("./dev/mem", tar::EntryType::Char, 1, 1),
            dev("./null", tar::EntryType::Char, 1, 3),
        ] {
            assert!(matches!(check_inc(&a), Err(Refused::Device(_))));
        }
    }

    /// A pax record as GNU tar writes one: its length counts itself.
    fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = [key.as_bytes(), b"=", value, b"\n"].concat();
        let mut len = body.len() + 2;
        while format!("{len} ").len() + body.len() != len {
            len += 1;
        }
        [format!("{len} ").into_bytes(), body].concat()
    }

    /// A member preceded by a local pax header holding `records`.
    fn with_pax(records: &[u8], name: &str, kind: tar::EntryType, link: &str) -> Vec<u8> {
        let mut a = Vec::new();
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_path("PaxHeaders/m").unwrap();
        x.set_size(records.len() as u64);
        x.set_mode(0o644);
        x.set_cksum();
        a.extend_from_slice(x.as_bytes());
        a.extend_from_slice(records);
        a.resize(a.len().div_ceil(512) * 512, 0);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(name).unwrap();
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        a.extend_from_slice(h.as_bytes());
        a.extend_from_slice(&[0u8; 1024]);
        a
    }

    #[test]
    fn pax_records_are_read_by_length_as_gnu_tar_reads_them() {
        // A binary xattr value with newlines (file capabilities have them) passes whole.
        let xattr = pax_record("SCHILY.xattr.security.capability", b"\x01\n\x00\x02\n\n");
        let a = with_pax(&xattr, "innocent", tar::EntryType::Regular, "");
        assert_eq!(check(&a).unwrap(), a);
        assert!(check_inc(&with_pax(&xattr, "./", tar::EntryType::Directory, "")).is_ok());
        // tar-rs cannot read a `path` with a newline and checks the header's name instead;
        // GNU tar extracts the pax path.
        let path = pax_record("path", b"../../etc/cron.d/x\ny");
        let a = with_pax(&path, "innocent", tar::EntryType::Regular, "");
        assert!(matches!(check(&a), Err(Refused::DotDot(n)) if n.starts_with("../../etc")));
        let link = pax_record("linkpath", b"/etc/shadow\n");
        let a = with_pax(&link, "innocent", tar::EntryType::Link, "harmless");
        assert!(
            matches!(check(&a), Err(Refused::LinkOut { target, .. }) if target.starts_with("/etc/shadow"))
        );
        // A dumpdir with a newline in a name is read whole, and its renames still refused.
        let dd = pax_record("GNU.dumpdir", b"Ya\nb\0R./p\0T./q\0\0");
        let a = with_pax(&dd, "./", tar::EntryType::Directory, "");
        assert!(matches!(check_inc(&a), Err(Refused::Rename { .. })));
        let bad = with_pax(b"99 path=x\n", "innocent", tar::EntryType::Regular, "");
        assert!(matches!(check(&bad), Err(Refused::Malformed(_))));
    }

    #[test]
    fn gnu_tar_posix_dumps_with_binary_xattrs_pass_whole() {
        let (_d, l0, _l1) = gnu_dumps("posix", |_| {});
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cap");
        std::fs::write(&f, b"x").unwrap();
        let set = std::process::Command::new("setfattr")
            .args(["-n", "user.bin", "-v", "0x0a010a0a00"])
            .arg(&f)
            .status();
        if !set.is_ok_and(|s| s.success()) {
            eprintln!("skipped the xattr part: no setfattr or no user xattrs here");
            assert_eq!(check_inc(&l0).unwrap(), l0);
            return;
        }
        let out = std::process::Command::new("tar")
            .args(["--create", "--file=-", "--xattrs", "--xattrs-include=*"])
            .arg(format!(
                "--listed-incremental={}",
                dir.path().join("snar").display()
            ))
            .arg("-C")
            .arg(dir.path())
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(check_inc(&out.stdout).unwrap(), out.stdout);
    }
}
