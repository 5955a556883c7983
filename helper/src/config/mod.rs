//! The helper's view of /etc/slot-os: where things are and what the host offers
//! ([`Ctx`]), naming slots on the command line ([`targets`]), and changing the files the
//! way a person would ([`edit`]). The model itself (types, validation, rendering) is the
//! `slot-config` crate below.

pub mod edit;
pub mod targets;
pub mod trust;

use slot_config::{load_dir, Config, HostFacts, Paths};

/// What every command needs: where things are, what the host offers, the config.
pub struct Ctx {
    pub paths: Paths,
    pub facts: HostFacts,
}

impl Ctx {
    pub fn new() -> Self {
        let paths = Paths::from_env();
        let facts = HostFacts::read(&paths);
        Ctx { paths, facts }
    }
    pub fn load(&self) -> Config {
        load_dir(&self.paths, &self.facts)
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}
