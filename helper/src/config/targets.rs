//! Resolving `all | NUMBER | NAME` arguments to configured slots.

use slot_config::{Config, Slot};

use crate::error::bad_input;

/// The slots named by `args`, in slot-number order, each once. Unknown names or numbers
/// are bad input (exit 2) and nothing is done.
pub fn resolve<'c>(cfg: &'c Config, args: &[String]) -> anyhow::Result<Vec<&'c Slot>> {
    if args.is_empty() {
        return Err(bad_input(
            "no slot given; name slots by number (0), by name (slot00), or `all`",
        ));
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
    // Numbered slots first, in number order; slots without a number after them, by name.
    out.sort_by(|a, b| {
        (a.number.is_none(), a.number, &a.name).cmp(&(b.number.is_none(), b.number, &b.name))
    });
    Ok(out)
}

pub fn resolve_one<'c>(cfg: &'c Config, arg: &str) -> anyhow::Result<&'c Slot> {
    let found = if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        arg.parse::<u32>().ok().and_then(|n| cfg.slot_by_number(n))
    } else {
        cfg.slot(arg)
    };
    found.ok_or_else(|| {
        let known: Vec<String> = cfg
            .slots
            .iter()
            .map(|s| format!("{} ({})", s.number_text(), s.name))
            .collect();
        let hint = if cfg.skipped.iter().any(|s| s == arg) {
            "; its file has errors, run `slot-os check`".to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use slot_config::{load_dir, CpuSet, HostFacts, Paths};

    fn cfg() -> (Config, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!(
            "slot-os-targets-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let dir = root.join("etc/slot-os");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["slot00", "slot01", "slot02"] {
            std::fs::write(dir.join(format!("{f}.toml")), "").unwrap();
        }
        std::fs::write(dir.join("web.toml"), "number = 10").unwrap();
        std::fs::write(dir.join("broken.toml"), "number = ").unwrap();
        let c = load_dir(
            &Paths::with_root(&root),
            &HostFacts {
                cpus: CpuSet::from_cpus(0..2),
                mem_total: None,
            },
        );
        (c, root)
    }

    fn names(v: &[&Slot]) -> Vec<String> {
        v.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn resolves_numbers_names_and_all() {
        let (c, root) = cfg();
        let a = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&resolve(&c, &a(&["all"])).unwrap()),
            ["slot00", "slot01", "slot02", "web"]
        );
        assert_eq!(
            names(&resolve(&c, &a(&["2", "slot00", "0"])).unwrap()),
            ["slot00", "slot02"]
        );
        assert_eq!(names(&resolve(&c, &a(&["10"])).unwrap()), ["web"]);
        let e = resolve(&c, &a(&["99"])).unwrap_err();
        assert!(e.downcast_ref::<crate::error::BadInput>().is_some());
        assert!(e.to_string().contains("unknown slot \"99\""), "{e}");
        assert!(resolve(&c, &a(&["broken"]))
            .unwrap_err()
            .to_string()
            .contains("slot-os check"));
        assert!(resolve(&c, &[]).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn splits_fulcon_colon() {
        let v: Vec<String> = ["all", ":", "rm", "-f", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (t, c) = split_colon(&v).unwrap();
        assert_eq!(t, ["all"]);
        assert_eq!(c, ["rm", "-f", "x"]);
        assert!(split_colon(&v[..1]).is_none());
    }
}
