//! Slot names and the names derived from them (units, host-side interfaces).

/// Longest slot name; machined allows 64 characters for a machine name.
pub const MAX_NAME_LEN: usize = 64;
/// Highest slot number: keeps every derived interface name within IFNAMSIZ (see `nic_host_ifname`).
pub const MAX_SLOT_NUMBER: u32 = 9999;
/// Highest NIC and bridge number, same reason.
pub const MAX_NIC_NUMBER: u32 = 99;
pub const MAX_BRIDGE_NUMBER: u32 = 9999;

/// Why a name (of a slot, an image, a backup) is refused; `kind` says which it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a {kind} name cannot be empty")]
    Empty { kind: &'static str },
    #[error("{kind} name {name:?} is {len} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong {
        kind: &'static str,
        name: String,
        len: usize,
    },
    #[error("{kind} name {name:?} contains '/' or '..'; use lowercase letters, digits and '-'")]
    Path { kind: &'static str, name: String },
    #[error("{kind} name {name:?} must start with a lowercase letter or a digit")]
    First { kind: &'static str, name: String },
    #[error("{kind} name {name:?} contains {c:?}; use lowercase letters, digits and '-'")]
    Char {
        kind: &'static str,
        name: String,
        c: char,
    },
}

/// Checks `[a-z0-9][a-z0-9-]*`, at most 64 characters, for a name of `kind` ("slot",
/// "image", "backup": slots, images and backups share machined's name space).
pub fn check_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    let named = || name.to_string();
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            name: named(),
            len: name.len(),
        });
    }
    if name.contains('/') || name.contains("..") {
        return Err(NameError::Path {
            kind,
            name: named(),
        });
    }
    let first = name.chars().next().unwrap_or('-');
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(NameError::First {
            kind,
            name: named(),
        });
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::Char {
            kind,
            name: named(),
            c,
        });
    }
    Ok(())
}

pub fn check_slot_name(name: &str) -> Result<(), NameError> {
    check_name("slot", name)
}

/// Fulcon's naming: slot 0 is `slot00`, slot 12 is `slot12`, slot 123 is `slot123`.
pub fn default_slot_name(number: u32) -> String {
    format!("slot{number:02}")
}

/// The number implied by a `slotNN` name, if it has that form.
pub fn number_from_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("slot")?;
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn unit_name(slot: &str) -> String {
    format!("systemd-nspawn@{slot}.service")
}

/// The instance of `slot-os-root@.service` that mounts an overlay slot's root.
pub fn root_unit_name(slot: &str) -> String {
    format!("slot-os-root@{slot}.service")
}

/// Host side of a slot's extra NIC: `vs-<slot number>-<nic number>`, at most
/// 2+1+4+1+2 = 10 characters, so it fits IFNAMSIZ whatever the slot's name.
pub fn nic_host_ifname(slot_number: u32, nic: u32) -> String {
    format!("vs-{slot_number}-{nic}")
}

/// Inside the slot, NIC n is `ethN` (Fulcon's `net-add ... NIC_NUMBER`).
pub fn nic_slot_ifname(nic: u32) -> String {
    format!("eth{nic}")
}

/// A bridge is named after its number: `slotbr<n>`, at most 10 characters.
pub fn bridge_ifname(number: u32) -> String {
    format!("slotbr{number}")
}

/// A bridge's VXLAN port: `slotvx<n>`, at most 10 characters.
pub fn vxlan_ifname(bridge: u32) -> String {
    format!("slotvx{bridge}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_slot_name("slot00").is_ok());
        assert!(check_slot_name("a-1").is_ok());
        assert!(check_slot_name("Slot").is_err());
        assert!(check_slot_name("-a").is_err());
        assert!(check_slot_name("a/b").is_err());
        assert!(check_slot_name("a..b").is_err());
        assert!(check_slot_name(&"a".repeat(65)).is_err());
        assert!(check_slot_name(&"a".repeat(64)).is_ok());
        assert_eq!(number_from_name("slot07"), Some(7));
        assert_eq!(number_from_name("slot7"), None);
        assert_eq!(number_from_name("web"), None);
        assert_eq!(default_slot_name(3), "slot03");
        assert!(nic_host_ifname(MAX_SLOT_NUMBER, MAX_NIC_NUMBER).len() <= 15);
        assert!(bridge_ifname(MAX_BRIDGE_NUMBER).len() <= 15);
    }
}
