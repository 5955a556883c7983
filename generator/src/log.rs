//! Where the generator's messages go. At boot there is no journal yet but there is the
//! kernel log, which journald imports later. Inside a container (nspawn gives it no
//! /dev/kmsg) the journal's syslog socket, which is up at every daemon-reload. Under
//! SLOT_OS_ROOT (tests), or when neither exists, stderr, which PID 1 sends to the console.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

enum Sink {
    Kmsg(Mutex<std::fs::File>),
    Syslog(UnixDatagram),
    Stderr,
}

pub struct Log {
    sink: Sink,
}

#[derive(Clone, Copy)]
pub enum Level {
    Error = 3,
    Warning = 4,
}

const SYSLOG_SOCKETS: [&str; 2] = ["/run/systemd/journal/dev-log", "/dev/log"];
/// syslog facility "daemon", as systemd's own generators log.
const FACILITY_DAEMON: u8 = 3;

impl Log {
    pub fn open(system: bool) -> Self {
        if !system {
            return Log { sink: Sink::Stderr };
        }
        // Only a real kmsg device: writing to a missing /dev/kmsg must not create a file.
        if std::fs::metadata("/dev/kmsg").is_ok_and(|m| m.file_type().is_char_device()) {
            if let Ok(f) = OpenOptions::new().write(true).open("/dev/kmsg") {
                return Log {
                    sink: Sink::Kmsg(Mutex::new(f)),
                };
            }
        }
        for path in SYSLOG_SOCKETS {
            if let Ok(sock) = UnixDatagram::unbound() {
                if sock.connect(path).is_ok() {
                    return Log {
                        sink: Sink::Syslog(sock),
                    };
                }
            }
        }
        Log { sink: Sink::Stderr }
    }

    pub fn log(&self, level: Level, msg: &str) {
        let pid = std::process::id();
        let sev = level as u8;
        let ok = match &self.sink {
            Sink::Kmsg(k) => {
                // One write per line: kmsg turns each write() into one record.
                let mut f = k.lock().unwrap_or_else(|e| e.into_inner());
                msg.lines().all(|line| {
                    f.write_all(format!("<{sev}>slot-os-generator[{pid}]: {line}\n").as_bytes())
                        .is_ok()
                })
            }
            Sink::Syslog(s) => msg.lines().all(|line| {
                s.send(
                    format!(
                        "<{}>slot-os-generator[{pid}]: {line}",
                        FACILITY_DAEMON * 8 + sev
                    )
                    .as_bytes(),
                )
                .is_ok()
            }),
            Sink::Stderr => false,
        };
        if !ok {
            eprintln!("slot-os-generator: {msg}");
        }
    }
}
