//! Loop prevention: a write made by the applier must never come back as a
//! new event, and a write made by the application must never be suppressed.
//!
//! ```text
//!  applier transaction on a target:
//!    SET LOCAL cdc_bridge.applying = on        -- triggers keep the change's version/source
//!    SELECT pg_logical_emit_message(true, 'cdc_bridge.apply', '')   -- first thing in the txn
//!    INSERT/UPDATE/DELETE ...                  -- the replicated change
//!  reader of that database sees:
//!    Begin, Message('cdc_bridge.apply'), Insert/Update/…, Commit
//!    └─ the marker makes it drop every row event of this transaction (counted)
//! ```
//! The marker is transactional, so it exists exactly when the applier's
//! transaction commits and only in that transaction: an application write is
//! a different transaction and is never dropped, also when it touches a row
//! the bridge wrote last. Deletes are covered the same way (the applier's
//! tombstone write sits in the marked transaction). The source column then
//! tells operators which side wrote the current version of a row.

/// Prefix of the transactional logical message that marks an applier
/// transaction.
pub const APPLY_MARKER_PREFIX: &str = "cdc_bridge.apply";

/// Statements the applier runs first in every target transaction.
pub const APPLY_TRANSACTION_PREAMBLE: &str =
    "SET LOCAL cdc_bridge.applying = 'on'; SELECT pg_logical_emit_message(true, 'cdc_bridge.apply', '')";

/// Whether a logical message marks the transaction as the applier's own.
pub fn is_apply_marker(transactional: bool, prefix: &str) -> bool {
    transactional && prefix == APPLY_MARKER_PREFIX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_transactional_marker_counts() {
        assert!(is_apply_marker(true, APPLY_MARKER_PREFIX));
        assert!(
            !is_apply_marker(false, APPLY_MARKER_PREFIX),
            "non-transactional messages are not tied to a txn"
        );
        assert!(!is_apply_marker(true, "someone.else"));
        assert!(APPLY_TRANSACTION_PREAMBLE.contains(APPLY_MARKER_PREFIX));
    }
}
