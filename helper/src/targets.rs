//! Resolving `all | NUMBER | NAME` arguments to configured slots.

use slot_config::{Config, Slot};

use crate::error::bad_input;

/// The slots named by `args`, in slot-number order, each once. Unknown names or numbers
/// are bad input (exit 2) and nothing is done.
pub fn resolve<'c>(cfg: &'c Config, args: &[String]) -> anyhow::Result<Vec<&'c Slot>> {
    if args.is_empty() {
        return Err(bad_input("no slot given; name slots by number (0), by name (slot00), or `all`"));
    }
    let mut out: Vec<&Slot> = Vec::new();
    for a in args {
        let found: Vec<&Slot> = if a == "all" {
            cfg.slots.iter().collect()
        } else {
            vec![resolve_one(cfg, a)?]
        };
        for s in found {
            if !out.iter().any(|o| o.name == s.name) {
                out.push(s);
            }
        }
    }
    out.sort_by_key(|s| s.number);
    Ok(out)
}

pub fn resolve_one<'c>(cfg: &'c Config, arg: &str) -> anyhow::Result<&'c Slot> {
    let found = if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        arg.parse::<u32>().ok().and_then(|n| cfg.slot_by_number(n))
    } else {
        cfg.slot(arg)
    };
    found.ok_or_else(|| {
        let known: Vec<String> = cfg.slots.iter().map(|s| format!("{} ({})", s.number, s.name)).collect();
        let hint = if cfg.skipped.iter().any(|s| s == arg) {
            format!("; its file has errors, run `slot-os check`")
        } else if known.is_empty() {
            "; there are no slots (run `slot-os build N`)".to_string()
        } else {
            format!("; slots: {}", known.join(", "))
        };
        bad_input(format!("unknown slot {arg:?}{hint}"))
    })
}

/// Splits Fulcon's `TARGETS : REST` (or `TARGETS -- REST`) argument form.
pub fn split_colon(args: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let i = args.iter().position(|a| a == ":" || a == "--")?;
    Some((args[..i].to_vec(), args[i + 1..].to_vec()))
}
