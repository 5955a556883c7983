//! What a slot file from elsewhere (an export, a move) asks of this host that it is not
//! trusted with: host access needs the admin's `--trust-config` (docs/security.md).

/// Keys of a slot.toml that give the slot the host (a privileged slot's root is the host's
/// root; a bind mounts any host path into it), as lines for the refusal message.
pub fn host_access(s: &slot_config::Slot) -> Vec<String> {
    let mut keys = Vec::new();
    if s.privileged {
        keys.push("privileged = true".to_string());
    }
    for b in &s.binds {
        keys.push(format!(
            "[[bind]] source = {:?} (host path, mounted at {:?})",
            b.source.display().to_string(),
            b.target.display().to_string()
        ));
    }
    keys
}
