//! Every operation on a slot goes to the journal as one structured entry
//! (`SYSLOG_IDENTIFIER=slot-os`, `SLOT=`, `OPERATION=`, `RESULT=`), so
//! `journalctl -t slot-os SLOT=slot01` is that slot's history. Without a journal, the
//! same line goes to stderr when it is a terminal, and nowhere otherwise.

use std::io::IsTerminal;
use std::path::Path;

use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }
    fn log(&self, record: &Record) {
        eprintln!("slot-os: {}", record.args());
    }
    fn flush(&self) {}
}

pub fn init() {
    let installed = if Path::new(JOURNAL_SOCKET).exists() {
        JournalLog::new()
            .map_err(|e| e.to_string())
            .and_then(|j| {
                j.with_syslog_identifier("slot-os".into())
                    .install()
                    .map_err(|e| e.to_string())
            })
            .is_ok()
    } else if std::io::stderr().is_terminal() {
        log::set_logger(&Stderr).is_ok()
    } else {
        false
    };
    if installed {
        log::set_max_level(LevelFilter::Info);
    }
}

/// One operation's outcome for one slot: RESULT=done or failed, and the line the user saw.
pub fn record(operation: &str, slot: &str, ok: bool, line: &str) {
    let (level, result) = match ok {
        true => (Level::Info, "done"),
        false => (Level::Error, "failed"),
    };
    log::log!(level, slot = slot, operation = operation, result = result; "{operation} {slot}: {line}");
}
