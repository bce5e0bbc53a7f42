//! Loop prevention: a write made by the applier must never come back as a
//! new event, and a write made by the application must never be suppressed.
//!
//! ```text
//!  applier transaction on a target:
//!    set_config('cdc_bridge.applying', <token>, true)   -- triggers keep the change's version/source
//!    pg_logical_emit_message(true, 'cdc_bridge.apply', <mark>)   -- first thing in the txn
//!    INSERT/UPDATE/DELETE ...                  -- the replicated change
//!  reader of that database sees:
//!    Begin, Message('cdc_bridge.apply', <mark>), Insert/Update/…, Commit
//!    └─ the right mark makes it drop every row event of this transaction (counted)
//! ```
//! The token is made once per installation and kept in the landlord's
//! bridge schema; the triggers accept it by its hash, the reader the mark
//! derived from it. An application role knows neither, so neither a
//! session setting nor a logical message of its own hides its writes.
//! The marker is transactional, so it exists exactly when the applier's
//! transaction commits and only in that transaction: an application write is
//! a different transaction and is never dropped, also when it touches a row
//! the bridge wrote last. Deletes are covered the same way (the applier's
//! tombstone write sits in the marked transaction). The source column then
//! tells operators which side wrote the current version of a row.

/// Prefix of the transactional logical message that marks an applier
/// transaction.
pub const APPLY_MARKER_PREFIX: &str = "cdc_bridge.apply";

/// Whether a logical message marks the transaction as the applier's own:
/// transactional, with the bridge's prefix, and carrying this
/// installation's marker (derived from the apply token, which application
/// roles do not know), so an application cannot hide its writes by
/// emitting a message of its own.
pub fn is_apply_marker(transactional: bool, prefix: &str, content: &[u8], expected: &str) -> bool {
    transactional
        && prefix == APPLY_MARKER_PREFIX
        && !expected.is_empty()
        && content == expected.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_transactional_marker_with_this_installations_mark_counts() {
        let mark = "4f2a";
        assert!(is_apply_marker(true, APPLY_MARKER_PREFIX, b"4f2a", mark));
        assert!(
            !is_apply_marker(false, APPLY_MARKER_PREFIX, b"4f2a", mark),
            "non-transactional messages are not tied to a txn"
        );
        assert!(!is_apply_marker(true, "someone.else", b"4f2a", mark));
        assert!(
            !is_apply_marker(true, APPLY_MARKER_PREFIX, b"", mark),
            "a forged marker without the mark is an application write"
        );
        assert!(!is_apply_marker(true, APPLY_MARKER_PREFIX, b"", ""));
    }
}
