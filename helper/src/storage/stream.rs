//! The export stream (`export N FILE`, `export N -`, `import`): its layout and its
//! end-to-end checksum.
//!
//! Layout: a zstd-compressed tar of `slot-os-export/manifest.json` and
//! `slot-os-export/slot.toml` first, then the root under `rootfs/`.
//!
//! An export is a zstd stream; its SHA-256 (of the compressed bytes) follows it as a zstd
//! *skippable frame*, which every zstd decoder passes over, so `zstd -dc FILE | tar -t`
//! still works. A stream cannot carry its checksum in its header (it is only known at the
//! end), and an importer reading from a pipe must not store the stream to check it first:
//! [`Verified`] holds back the last [`TRAILER_LEN`] bytes while passing the rest on, and
//! fails at the end unless they are the trailer of exactly what it passed on.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// 2: the stream ends with its checksum trailer. `import` still reads 1 (files only).
pub const FORMAT: u32 = 2;
pub const META_DIR: &str = "slot-os-export";
pub const MANIFEST: &str = "slot-os-export/manifest.json";
pub const SLOT_TOML: &str = "slot-os-export/slot.toml";

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Manifest {
    pub format: u32,
    pub slot: String,
    /// `None` (null) for a slot without a number.
    pub number: Option<u32>,
    pub created_unix: u64,
    pub exported_by: String,
}

/// zstd's first skippable-frame magic (0x184D2A50, little-endian).
const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
const LABEL: &[u8; 16] = b"slot-os-sha256\0\0";
const PAYLOAD_LEN: usize = LABEL.len() + 32;
/// Frame header (magic, size) + label + digest.
pub const TRAILER_LEN: usize = 8 + PAYLOAD_LEN;

/// The trailer for a stream whose compressed bytes hash to `digest`.
pub fn trailer(digest: &[u8; 32]) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..4].copy_from_slice(&SKIPPABLE_MAGIC);
    t[4..8].copy_from_slice(&(PAYLOAD_LEN as u32).to_le_bytes());
    t[8..24].copy_from_slice(LABEL);
    t[24..].copy_from_slice(digest);
    t
}

/// The digest a trailer carries, if `bytes` is one.
pub fn parse_trailer(bytes: &[u8]) -> Option<[u8; 32]> {
    if bytes.len() != TRAILER_LEN
        || bytes[..4] != SKIPPABLE_MAGIC
        || bytes[4..8] != (PAYLOAD_LEN as u32).to_le_bytes()
        || &bytes[8..24] != LABEL
    {
        return None;
    }
    let mut d = [0u8; 32];
    d.copy_from_slice(&bytes[24..]);
    Some(d)
}

/// Passes on a stream without its trailer and checks the trailer at the end: the last read
/// is an `InvalidData` error if the stream was cut, damaged or has no trailer.
pub struct Verified<R> {
    inner: R,
    held: Vec<u8>,
    hasher: Sha256,
    total: u64,
    ended: bool,
}

impl<R: Read> Verified<R> {
    pub fn new(inner: R) -> Self {
        Verified {
            inner,
            held: Vec::with_capacity(TRAILER_LEN + (1 << 20)),
            hasher: Sha256::new(),
            total: 0,
            ended: false,
        }
    }

    /// Bytes passed on so far (the stream without its trailer).
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.ended {
            return Ok(0);
        }
        // Keep more than a trailer's worth held, so whatever is beyond it can go out.
        while self.held.len() <= TRAILER_LEN {
            let start = self.held.len();
            self.held.resize(start + buf.len().max(64 << 10), 0);
            let n = self.inner.read(&mut self.held[start..])?;
            self.held.truncate(start + n);
            if n == 0 {
                self.ended = true;
                let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
                return match parse_trailer(&self.held) {
                    Some(d) if d == digest => Ok(0),
                    Some(_) => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the stream's SHA-256 does not match its trailer: it was damaged on the way",
                    )),
                    None => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the stream ends without its checksum trailer: it was cut short or is not a slot-os export",
                    )),
                };
            }
        }
        let n = (self.held.len() - TRAILER_LEN).min(buf.len());
        buf[..n].copy_from_slice(&self.held[..n]);
        self.held.drain(..n);
        self.hasher.update(&buf[..n]);
        self.total += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(payload: &[u8]) -> Vec<u8> {
        let d: [u8; 32] = Sha256::digest(payload).into();
        let mut s = payload.to_vec();
        s.extend_from_slice(&trailer(&d));
        s
    }

    /// Reads in small, odd chunks, as a pipe may deliver them.
    fn read_all(r: impl Read) -> io::Result<Vec<u8>> {
        struct Trickle<R>(R);
        impl<R: Read> Read for Trickle<R> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(7);
                self.0.read(&mut buf[..n])
            }
        }
        let mut out = Vec::new();
        Trickle(r).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_whole_stream_passes_without_its_trailer() {
        for len in [0, 1, 55, 56, 57, 100_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let s = stream(&payload);
            assert_eq!(read_all(Verified::new(&s[..])).unwrap(), payload, "{len}");
        }
    }

    #[test]
    fn damage_anywhere_is_an_error_at_the_end() {
        let payload = vec![7u8; 5000];
        let good = stream(&payload);
        for at in [0, 2500, 4999, 5000 + 30, good.len() - 1] {
            let mut s = good.clone();
            s[at] ^= 1;
            let e = read_all(Verified::new(&s[..])).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{at}");
        }
    }

    #[test]
    fn a_cut_stream_or_none_is_refused() {
        let good = stream(&[1u8; 3000]);
        for cut in [0, 10, 2999, good.len() - 1] {
            let e = read_all(Verified::new(&good[..cut])).unwrap_err();
            assert!(e.to_string().contains("without its checksum"), "{cut}: {e}");
        }
    }

    #[test]
    fn zstd_skips_the_trailer() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut z = Command::new("zstd")
            .args(["-q", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        z.stdin.take().unwrap().write_all(b"hello export").unwrap();
        let compressed = z.wait_with_output().unwrap().stdout;
        let s = stream(&compressed);
        let mut d = Command::new("zstd")
            .args(["-d", "-q", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        d.stdin.take().unwrap().write_all(&s).unwrap();
        let out = d.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello export");
    }
}
