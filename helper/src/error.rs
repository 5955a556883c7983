//! Exit codes, in one place: 0 ok, 1 the operation failed, 2 bad usage or bad input
//! (nothing changed). Modules return their own typed errors; this is where they are
//! sorted into the two failure codes.

use slot_config::names::NameError;

/// Bad input: the command changed nothing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

/// 2 when anything in the error's chain is bad input (the command changed nothing),
/// else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let bad = e.chain().any(|c| c.is::<BadInput>() || c.is::<NameError>());
    if bad {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_anywhere_in_the_chain_is_exit_2() {
        assert_eq!(exit_code(&bad_input("no")), 2);
        assert_eq!(exit_code(&bad_input("no").context("while doing x")), 2);
        let e = anyhow::Error::new(slot_config::names::check_slot_name("A").unwrap_err());
        assert_eq!(exit_code(&e), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("failed")), 1);
    }
}
