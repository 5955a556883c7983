//! What the capture knows about each entry of the tree it copied: the source's metadata
//! when it was read, whether that reading can be trusted later ("clean"), and the stage
//! copy's ctime (so a stage changed behind our back, e.g. by a killed run, is not
//! trusted). Kept between runs as `manifest` beside the stage, so the next capture copies
//! only what changed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::fs::Stat;

/// The metadata that decides "unchanged": any write, chmod, chown, xattr change, link
/// or unlink changes ctime (and most change more), a replaced file changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub rdev: u64,
}

impl Meta {
    pub fn of(st: &Stat) -> Meta {
        Meta {
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            ctime: (st.st_ctime, st.st_ctime_nsec as u32),
            rdev: st.st_rdev,
        }
    }
    pub fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    pub meta: Meta,
    /// The entry's ctime was older than the clock when it was read: a later change gives
    /// it a newer ctime, so equal metadata later means equal content. A ctime in the
    /// current clock tick ("racy", as git calls it) could hide a write in the same tick.
    pub clean: bool,
    /// ctime of the stage's copy right after we wrote it (0 for directories, whose
    /// stage ctime changes with every entry written into them).
    pub stage_ctime: (i64, u32),
    /// A regular file with holes (fewer blocks than its size): restores dig them again
    /// where the engine cannot (restic before 0.15).
    pub sparse: bool,
}

impl Record {
    /// Unchanged since recorded: same metadata, and the recording was trustworthy.
    pub fn same(&self, now: &Meta) -> bool {
        self.clean && self.meta == *now
    }
}

/// One directory of the tree: its own record and its entries by name.
#[derive(Debug, Clone, Default)]
pub struct Dir {
    pub rec: Record,
    pub entries: BTreeMap<OsString, Node>,
}

#[derive(Debug, Clone)]
pub enum Node {
    Dir(Dir),
    Leaf(Record),
}

impl Node {
    pub fn rec(&self) -> &Record {
        match self {
            Node::Dir(d) => &d.rec,
            Node::Leaf(r) => r,
        }
    }
}

impl Dir {
    /// Entries of the whole tree (the root included).
    pub fn count(&self) -> usize {
        1 + self
            .entries
            .values()
            .map(|n| match n {
                Node::Dir(d) => d.count(),
                Node::Leaf(_) => 1,
            })
            .sum::<usize>()
    }
}

const MAGIC: &[u8] = b"slot-os capture manifest 1\n";
const LEAF: u8 = 0;
const DIR: u8 = 1;
const END: u8 = 2;

fn put_rec(w: &mut impl Write, r: &Record) -> std::io::Result<()> {
    let m = &r.meta;
    for v in [m.ino, m.nlink, m.size, m.rdev] {
        w.write_all(&v.to_le_bytes())?;
    }
    for v in [m.mode, m.uid, m.gid] {
        w.write_all(&v.to_le_bytes())?;
    }
    for (s, ns) in [m.mtime, m.ctime, r.stage_ctime] {
        w.write_all(&s.to_le_bytes())?;
        w.write_all(&ns.to_le_bytes())?;
    }
    w.write_all(&[u8::from(r.clean) | (u8::from(r.sparse) << 1)])
}

fn get_rec(r: &mut impl Read) -> std::io::Result<Record> {
    let mut u64s = [0u64; 4];
    for v in &mut u64s {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        *v = u64::from_le_bytes(b);
    }
    let mut u32s = [0u32; 3];
    for v in &mut u32s {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        *v = u32::from_le_bytes(b);
    }
    let mut times = [(0i64, 0u32); 3];
    for t in &mut times {
        let (mut s, mut ns) = ([0u8; 8], [0u8; 4]);
        r.read_exact(&mut s)?;
        r.read_exact(&mut ns)?;
        *t = (i64::from_le_bytes(s), u32::from_le_bytes(ns));
    }
    let mut clean = [0u8];
    r.read_exact(&mut clean)?;
    Ok(Record {
        meta: Meta {
            ino: u64s[0],
            nlink: u64s[1],
            size: u64s[2],
            rdev: u64s[3],
            mode: u32s[0],
            uid: u32s[1],
            gid: u32s[2],
            mtime: times[0],
            ctime: times[1],
        },
        stage_ctime: times[2],
        clean: clean[0] & 1 == 1,
        sparse: clean[0] & 2 == 2,
    })
}

fn put_dir(w: &mut impl Write, d: &Dir) -> std::io::Result<()> {
    put_rec(w, &d.rec)?;
    for (name, node) in &d.entries {
        let n = name.as_bytes();
        w.write_all(&[if matches!(node, Node::Dir(_)) {
            DIR
        } else {
            LEAF
        }])?;
        w.write_all(&(n.len() as u32).to_le_bytes())?;
        w.write_all(n)?;
        match node {
            Node::Dir(sub) => put_dir(w, sub)?,
            Node::Leaf(r) => put_rec(w, r)?,
        }
    }
    w.write_all(&[END])
}

fn get_dir(r: &mut impl Read, depth: usize) -> std::io::Result<Dir> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    if depth > 4096 {
        return Err(bad("manifest nested too deep"));
    }
    let mut d = Dir {
        rec: get_rec(r)?,
        entries: BTreeMap::new(),
    };
    loop {
        let mut tag = [0u8];
        r.read_exact(&mut tag)?;
        if tag[0] == END {
            return Ok(d);
        }
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > 255 {
            return Err(bad("bad name length in manifest"));
        }
        let mut name = vec![0u8; len];
        r.read_exact(&mut name)?;
        let node = match tag[0] {
            DIR => Node::Dir(get_dir(r, depth + 1)?),
            LEAF => Node::Leaf(get_rec(r)?),
            _ => return Err(bad("bad tag in manifest")),
        };
        d.entries.insert(OsString::from_vec(name), node);
    }
}

/// Writes the tree to `path` (through a temporary file and a rename: a killed run leaves
/// the previous manifest or none, never half of one).
pub fn save(path: &Path, tree: &Dir) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let f = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(MAGIC)?;
        put_dir(&mut w, tree)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

/// The tree saved at `path`; `None` when there is none or it cannot be read (the capture
/// then copies everything again).
pub fn load(path: &Path) -> Option<Dir> {
    let f = File::open(path).ok()?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic).ok()?;
    if magic != MAGIC {
        return None;
    }
    get_dir(&mut r, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_refuses_damage() {
        let leaf = Record {
            meta: Meta {
                ino: 7,
                mode: libc::S_IFREG | 0o644,
                size: 3,
                ctime: (5, 6),
                ..Meta::default()
            },
            clean: true,
            stage_ctime: (9, 1),
            sparse: true,
        };
        let mut sub = Dir::default();
        sub.entries.insert(
            OsString::from_vec(b"\xffodd name".to_vec()),
            Node::Leaf(leaf),
        );
        let mut root = Dir::default();
        root.rec.meta.mode = libc::S_IFDIR | 0o755;
        root.entries.insert("etc".into(), Node::Dir(sub));
        root.entries.insert("f".into(), Node::Leaf(leaf));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest");
        save(&p, &root).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back.count(), 4);
        let Some(Node::Dir(etc)) = back.entries.get(std::ffi::OsStr::new("etc")) else {
            panic!("etc")
        };
        assert_eq!(
            etc.entries
                .get(std::ffi::OsStr::from_bytes(b"\xffodd name"))
                .map(|n| *n.rec()),
            Some(leaf)
        );
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&p, bytes).unwrap();
        assert!(load(&p).is_none(), "a cut manifest is not used");
    }
}
