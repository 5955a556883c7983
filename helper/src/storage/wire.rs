//! The wire between `slot-os move` (the source) and `slot-os move-receive` (the target):
//! framed messages over one byte stream each way, the stdin and stdout of whatever carries
//! them (ssh, or the admin's `--via` command), so the moved bytes go through it once.
//!
//! A frame is a kind byte, a big-endian u32 length and that many bytes: JSON for messages,
//! raw bytes for data. A data stream is `Stream` (JSON: what it is), `Data` frames of at
//! most [`CHUNK`] bytes, and `End` (its length and SHA-256, checked by the reader). Every
//! kind byte is distinct across both directions, so a relay can tell them apart.

use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sys::tool;

/// Bumped when a message changes meaning; the target refuses another.
pub const PROTOCOL: u32 = 1;
/// Data frames carry at most this much.
pub const CHUNK: usize = 1 << 20;
/// The largest frame read (a message, or a data chunk with room to spare).
const MAX_FRAME: u32 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    // source → target
    Hello,
    Stream,
    Data,
    End,
    Commit,
    Abort,
    Forget,
    Query,
    // target → source
    Ready,
    Refused,
    Applied,
    Started,
    RolledBack,
    Status,
}

const KINDS: [(Kind, u8); 14] = [
    (Kind::Hello, b'H'),
    (Kind::Stream, b'S'),
    (Kind::Data, b'D'),
    (Kind::End, b'E'),
    (Kind::Commit, b'C'),
    (Kind::Abort, b'A'),
    (Kind::Forget, b'F'),
    (Kind::Query, b'Q'),
    (Kind::Ready, b'R'),
    (Kind::Refused, b'N'),
    (Kind::Applied, b'P'),
    (Kind::Started, b'B'),
    (Kind::RolledBack, b'X'),
    (Kind::Status, b'K'),
];

impl Kind {
    pub fn byte(self) -> u8 {
        KINDS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or(0, |(_, b)| *b)
    }
    fn from_byte(b: u8) -> Option<Kind> {
        KINDS.iter().find(|(_, x)| *x == b).map(|(k, _)| *k)
    }
}

/// The source's first message: the slot and what it asks of the target.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Hello {
    pub protocol: u32,
    /// Names this move in both hosts' markers.
    pub id: String,
    pub slot: String,
    pub number: Option<u32>,
    /// The slot's TOML as the source has it.
    pub toml: String,
    /// Running: the target starts it after the handover.
    pub running: bool,
    pub trust_config: bool,
    pub source: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Ready {
    pub host: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Refused {
    pub message: String,
    /// Bad input (the source exits 2): nothing was changed.
    pub bad_input: bool,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct StreamStart {
    /// "copy" (level 0) or "changes" (level 1).
    pub phase: String,
    /// zstd-compressed tar, else plain tar.
    pub compressed: bool,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct StreamEnd {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Applied {
    pub phase: String,
    pub ms: u64,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Started {
    /// false: the slot was moved stopped and stays stopped.
    pub booted: bool,
    pub ms: u64,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct RolledBack {
    pub message: String,
}

/// `Query` and `Forget`: a move the source asks about or is done with.
#[derive(Serialize, Deserialize, Debug)]
pub struct MoveRef {
    pub id: String,
    pub slot: String,
}

/// The target's word on a move: "have" (the slot is the target's now), "gone" (the target
/// has no part of it and never will), "busy" (still being decided there; ask again).
#[derive(Serialize, Deserialize, Debug)]
pub struct Status {
    pub state: String,
    pub detail: String,
}

pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = kind.byte();
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    w.write_all(payload)
}

/// The next frame, or `None` at a clean end of stream (before a frame began).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(Kind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        let n = r.read(&mut head[got..])?;
        if n == 0 {
            return match got {
                0 => Ok(None),
                _ => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
        got += n;
    }
    let kind = Kind::from_byte(head[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {:#04x}", head[0]),
        )
    })?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

pub fn send<T: Serialize>(w: &mut impl Write, kind: Kind, msg: &T) -> anyhow::Result<()> {
    write_frame(w, kind, &serde_json::to_vec(msg)?)?;
    w.flush()?;
    Ok(())
}

pub fn decode<T: DeserializeOwned>(kind: Kind, payload: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(payload).with_context(|| format!("a malformed {kind:?} message"))
}

/// The next frame, which must be there: the end of the stream is an error.
pub fn next_frame(r: &mut impl Read) -> anyhow::Result<(Kind, Vec<u8>)> {
    read_frame(r)?.context("the other side closed the connection")
}

/// Writes a data stream as `Data` frames; [`DataWriter::finish`] sends its `End`.
pub struct DataWriter<'w, W: Write> {
    out: &'w mut W,
    buf: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
}

impl<'w, W: Write> DataWriter<'w, W> {
    pub fn new(out: &'w mut W) -> Self {
        DataWriter {
            out,
            buf: Vec::with_capacity(CHUNK),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn flush_chunk(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_frame(self.out, Kind::Data, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends what is buffered and the stream's `End`; returns the bytes sent.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        self.flush_chunk()?;
        let end = StreamEnd {
            bytes: self.bytes,
            sha256: crate::storage::archive::hex(&std::mem::take(&mut self.hasher).finalize()),
        };
        send(self.out, Kind::End, &end)?;
        Ok(self.bytes)
    }
}

impl<W: Write> Write for DataWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flush_chunk()?;
        self.out.flush()
    }
}

/// Reads a data stream's `Data` frames as one byte stream; at its `End` it checks the length
/// and SHA-256 and reads 0. Anything else (another frame, the connection's end) is an error.
pub struct DataReader<'r, R: Read> {
    inner: &'r mut R,
    chunk: Vec<u8>,
    at: usize,
    hasher: Sha256,
    bytes: u64,
    ended: bool,
}

impl<'r, R: Read> DataReader<'r, R> {
    pub fn new(inner: &'r mut R) -> Self {
        DataReader {
            inner,
            chunk: Vec::new(),
            at: 0,
            hasher: Sha256::new(),
            bytes: 0,
            ended: false,
        }
    }

    /// The bytes read so far.
    pub fn received(&self) -> u64 {
        self.bytes
    }

    /// Whether the stream's `End` was read and matched.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match read_frame(self.inner)? {
                Some((Kind::Data, d)) => {
                    self.hasher.update(&d);
                    self.chunk = d;
                    self.at = 0;
                }
                Some((Kind::End, e)) => {
                    let end: StreamEnd = serde_json::from_slice(&e)
                        .map_err(|_| invalid("a malformed end of stream".into()))?;
                    let sum =
                        crate::storage::archive::hex(&std::mem::take(&mut self.hasher).finalize());
                    let read = self.bytes;
                    if end.bytes != read || end.sha256 != sum {
                        return Err(invalid(format!(
                            "the stream arrived damaged: {read} bytes with SHA-256 {sum}, sent {} bytes with {}",
                            end.bytes, end.sha256
                        )));
                    }
                    self.ended = true;
                    return Ok(0);
                }
                Some((Kind::Abort, _)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        "the source gave up the move",
                    ))
                }
                Some((k, _)) => return Err(invalid(format!("{k:?} in the middle of a stream"))),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended in the middle of a stream",
                    ))
                }
            }
        }
        let n = (self.chunk.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The other slot-os: a child process (ssh or the `--via` command) whose stdin and stdout
/// are the wire. It is in a process group of its own (a Ctrl-C reaches only us; we decide
/// what ends it) and dies with us.
pub struct Peer {
    child: Child,
    tx: Option<ChildStdin>,
    pub rx: ChildStdout,
}

impl Peer {
    fn child(argv: &[String]) -> anyhow::Result<Child> {
        use std::os::unix::process::CommandExt;
        let (prog, args) = argv
            .split_first()
            .context("no command to reach the target")?;
        tool(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("running {}", argv.join(" ")))
    }

    pub fn spawn(argv: &[String]) -> anyhow::Result<Peer> {
        let mut child = Peer::child(argv)?;
        let tx = child.stdin.take().context("stdin")?;
        let rx = child.stdout.take().context("stdout")?;
        Ok(Peer {
            child,
            tx: Some(tx),
            rx,
        })
    }

    /// Our end of the wire (the other side's stdin).
    pub fn tx(&mut self) -> io::Result<&mut ChildStdin> {
        self.tx
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the connection was closed"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes our end: the other side reads the end of its input.
    pub fn close_tx(&mut self) {
        drop(self.tx.take());
    }

    /// Ends the connection now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes our end and waits for the other side to exit.
    pub fn close(mut self) -> anyhow::Result<()> {
        drop(self.tx.take());
        let mut rest = Vec::new();
        let _ = self.rx.read_to_end(&mut rest);
        let st = self.child.wait()?;
        if !st.success() {
            bail!("the connection ended with {st}");
        }
        Ok(())
    }

    /// One question, one answer, within `limit` (a target that cannot be reached must not
    /// hold up the command that asks).
    pub fn ask(
        argv: &[String],
        kind: Kind,
        msg: &impl Serialize,
        limit: Duration,
    ) -> anyhow::Result<(Kind, Vec<u8>)> {
        let mut child = Peer::child(argv)?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let mut rx = child.stdout.take().context("stdout")?;
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(next_frame(&mut rx));
        });
        // Whether or not the question got through, an answer that comes is the answer.
        let sent = send(&mut stdin, kind, msg);
        let answer = match done.recv_timeout(limit) {
            Ok(Err(e)) => Err(match sent {
                Err(s) => s.context(format!("{e:#}")),
                Ok(()) => e,
            }),
            Ok(a) => a,
            Err(_) => Err(anyhow::anyhow!("no answer within {} s", limit.as_secs())),
        };
        let _ = child.kill();
        let _ = child.wait();
        answer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Reaped if still around; a finished child is only waited for.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_distinct_bytes() {
        let mut bytes: Vec<u8> = KINDS.iter().map(|(_, b)| *b).collect();
        bytes.sort();
        bytes.dedup();
        assert_eq!(bytes.len(), KINDS.len());
        for (k, b) in KINDS {
            assert_eq!(Kind::from_byte(b), Some(k));
            assert_eq!(k.byte(), b);
        }
    }

    #[test]
    fn a_stream_goes_through_frames_and_is_checked() {
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 253) as u8).collect();
        let mut wire = Vec::new();
        send(
            &mut wire,
            Kind::Stream,
            &StreamStart {
                phase: "copy".into(),
                compressed: false,
            },
        )
        .unwrap();
        let mut w = DataWriter::new(&mut wire);
        w.write_all(&data).unwrap();
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        send(&mut wire, Kind::Commit, &()).unwrap();

        let mut r = &wire[..];
        let (k, p) = next_frame(&mut r).unwrap();
        assert_eq!(k, Kind::Stream);
        let s: StreamStart = decode(k, &p).unwrap();
        assert_eq!(s.phase, "copy");
        let mut got = Vec::new();
        let mut dr = DataReader::new(&mut r);
        dr.read_to_end(&mut got).unwrap();
        assert!(dr.ended());
        assert_eq!(got, data);
        assert_eq!(next_frame(&mut r).unwrap().0, Kind::Commit);
        assert!(read_frame(&mut r).unwrap().is_none(), "a clean end");
    }

    #[test]
    fn damage_cuts_and_strangers_are_errors() {
        let mut wire = Vec::new();
        let mut w = DataWriter::new(&mut wire);
        w.write_all(b"some bytes of a slot").unwrap();
        w.finish().unwrap();
        let read = |bytes: &[u8]| {
            let mut r = bytes;
            let mut out = Vec::new();
            DataReader::new(&mut r).read_to_end(&mut out).map(|_| out)
        };
        assert_eq!(read(&wire).unwrap(), b"some bytes of a slot");
        let mut bad = wire.clone();
        bad[7] ^= 1; // a byte of the data
        let e = read(&bad).unwrap_err();
        assert!(e.to_string().contains("arrived damaged"), "{e}");
        for cut in [3, 10, wire.len() - 1] {
            assert!(read(&wire[..cut]).is_err(), "cut at {cut}");
        }
        let mut other = Vec::new();
        write_frame(&mut other, Kind::Commit, b"").unwrap();
        assert!(read(&other).is_err());
        assert!(read_frame(&mut &[b'Z', 0, 0, 0, 0][..]).is_err());
        assert!(
            read_frame(&mut &[b'D', 0xff, 0, 0, 0][..]).is_err(),
            "oversized"
        );
    }

    #[test]
    fn an_answer_that_never_comes_is_given_up_on() {
        let argv: Vec<String> = ["sh", "-c", "cat >/dev/null; sleep 30"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = Peer::ask(&argv, Kind::Query, &(), Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("no answer"), "{e}");
        // An answer that comes is read.
        let echo: Vec<String> = ["sh", "-c", "printf 'K\\0\\0\\0\\002{}'"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (k, p) = Peer::ask(&echo, Kind::Query, &(), Duration::from_secs(20)).unwrap();
        assert_eq!((k, p), (Kind::Status, b"{}".to_vec()));
    }
}
