//! The `slot-os` helper as a library: the binary is `cli::Cli::parse().exec()`, and tests
//! call the same functions directly.
//!
//! Rooms, top to bottom (imports only point down):
//! - [`cli`]: the list of commands;
//! - [`commands`]: one module per command, orchestrating the services;
//! - services: [`config`] (the helper's view of /etc/slot-os), [`dbus`] (systemd,
//!   machined, networkd), [`net`] (netlink, OVSDB, iptables), [`storage`] (images,
//!   archives, freezing), [`sys`] (namespaces, lock, journal, notify, limits);
//! - [`error`]: exit codes;
//! - the model, the `slot-config` crate.

pub mod cli;
pub mod commands;
pub mod config;
pub mod dbus;
pub mod error;
pub mod net;
pub mod storage;
pub mod sys;
