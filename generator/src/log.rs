//! Where the generator's messages go. At boot there is no journal yet but there is the
//! kernel log, which journald imports later; under SLOT_OS_ROOT (tests) or without
//! /dev/kmsg, stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;

pub struct Log {
    kmsg: Option<Mutex<std::fs::File>>,
}

pub enum Level {
    Error = 3,
    Warning = 4,
}

impl Log {
    pub fn open(use_kmsg: bool) -> Self {
        let kmsg = use_kmsg
            .then(|| OpenOptions::new().write(true).open("/dev/kmsg").ok())
            .flatten()
            .map(Mutex::new);
        Log { kmsg }
    }

    pub fn log(&self, level: Level, msg: &str) {
        let level = level as u8;
        if let Some(k) = &self.kmsg {
            // One write per line: kmsg turns each write() into one record.
            let mut f = k.lock().unwrap_or_else(|e| e.into_inner());
            let mut ok = true;
            for line in msg.lines() {
                let rec = format!("<{level}>slot-os-generator[{}]: {line}\n", std::process::id());
                ok &= f.write_all(rec.as_bytes()).is_ok();
            }
            if ok {
                return;
            }
        }
        eprintln!("slot-os-generator: {msg}");
    }
}
