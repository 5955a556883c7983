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
pub mod net;
pub mod net_info;
pub mod remove;
pub mod rename;
pub mod render;
pub mod resource;
pub mod top;
pub mod update;

pub use crate::config::Ctx;
