//! One module per subcommand: its clap arguments and its `exec`. Commands orchestrate the
//! services below them (config, dbus, net, storage, sys); none imports another command's
//! internals or the command list (cli.rs) above.

pub mod autostart;
pub mod backup;
pub mod br_info;
pub mod bridge;
pub mod build;
pub mod check;
pub mod console;
pub mod create;
pub mod disk_apply;
pub mod docs;
pub mod exec;
pub mod export;
pub mod forward;
pub mod import;
pub mod info;
pub mod lifecycle;
pub mod list;
pub mod make_base_image;
pub mod metrics;
pub mod move_receive;
pub mod move_slot;
pub mod net;
pub mod net_info;
pub mod rebase;
pub mod remove;
pub mod rename;
pub mod render;
pub mod resource;
pub mod root;
pub mod top;
pub mod update;

pub use crate::config::Ctx;

/// A human size for tables: 512B, 1.5G, 300M.
pub(crate) fn human(b: u64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if v >= 100.0 {
        format!("{v:.0}{}", units[i])
    } else {
        format!("{v:.1}{}", units[i])
    }
}

/// A slot's disk as its quota reports it: "300.0M/10.0G" (used/limit), "300.0M/-" without
/// a limit, "-" where no quota tracks the slot's directory.
pub(crate) fn disk_text(u: Option<crate::storage::quota::Usage>) -> String {
    match u {
        Some(u) => format!(
            "{}/{}",
            human(u.used),
            u.limit.map_or_else(|| "-".to_string(), human)
        ),
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::quota::Usage;

    #[test]
    fn sizes_and_disk_columns() {
        assert_eq!(super::human(512), "512B");
        assert_eq!(super::human(1536 << 20), "1.5G");
        assert_eq!(super::human(300 << 20), "300M");
        let u = |used, limit| Some(Usage { used, limit });
        assert_eq!(super::disk_text(u(300 << 20, Some(10 << 30))), "300M/10.0G");
        assert_eq!(super::disk_text(u(0, None)), "0B/-");
        assert_eq!(super::disk_text(None), "-");
    }
}
