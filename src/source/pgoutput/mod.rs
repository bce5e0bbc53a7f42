//! Decoder for PostgreSQL's `pgoutput` logical replication protocol, version 1.
//!
//! The walsender (or `pg_logical_slot_*_binary_changes`) hands out one message
//! at a time, and [`LogicalMessage::decode`] turns one such message into a
//! value. Transactions arrive whole and in commit order: a Begin, then the
//! changes, then a Commit. Before the first change to a relation in a
//! decoding session (and again after its schema changes) the server sends a
//! Relation message describing its columns, and a Type message for every
//! column type that is not built in; Insert, Update and Delete refer to the
//! relation by id only, so the caller keeps the latest Relation per id to
//! interpret their tuples. An Origin message may follow Begin when the
//! transaction was replicated from elsewhere, and a non-transactional
//! Message may arrive outside any transaction.
//!
//! ```text
//! Begin ── Relation ── Type? ── Insert ── Update ── Delete ── Truncate ── Commit
//!   │         └── once per relation, before its first change ──┘          │
//!   └──────────────────── one transaction, final LSN ... end LSN ─────────┘
//! ```
//!
//! The decoder is stateless, never panics, and reports malformed input as a
//! [`DecodeError`] naming the message tag, the field and its byte offset
//! (counted from the tag byte, which is offset 0). Text and binary column
//! values share the input buffer instead of being copied.

use bytes::Bytes;

use crate::model::Lsn;

/// Microseconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch (2000-01-01).
const PG_EPOCH_IN_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Column flag: 1 marks the column as part of the key.
#[cfg(test)]
const COLUMN_FLAG_KEY: u8 = 1;

/// Converts pgoutput's timestamp (µs since 2000-01-01) to µs since the Unix epoch.
///
/// Saturates instead of overflowing, so PostgreSQL's `infinity` stays extreme.
pub fn pg_micros_to_unix_micros(pg: i64) -> i64 {
    pg.saturating_add(PG_EPOCH_IN_UNIX_MICROS)
}

/// One column of a TupleData message part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// Byte1('n'): identifies the data as NULL value.
    Null,
    /// Byte1('u'): identifies unchanged TOASTed value (the actual value is not sent).
    UnchangedToast,
    /// Byte1('t'): identifies the data as text formatted value; holds the
    /// value of the column in text format (Int32 length, then the bytes).
    Text(Bytes),
    /// Byte1('b'): identifies the data as binary formatted value; holds the
    /// value of the column in binary format (only with the `binary` option).
    Binary(Bytes),
}

/// TupleData: one value per column of the relation, except generated columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData(pub Vec<TupleValue>);

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Flags for the column: either 0 for no flags or 1 which marks the
    /// column as part of the key.
    pub flags: u8,
    /// Name of the column.
    pub name: String,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Type modifier of the column (`atttypmod`).
    pub type_modifier: i32,
}

#[cfg(test)]
impl RelationColumn {
    /// Whether the column is part of the key (flag 1).
    pub fn is_key(&self) -> bool {
        self.flags & COLUMN_FLAG_KEY != 0
    }
}

/// The body of a Relation message: the shape of a table's tuples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// OID of the relation.
    pub id: u32,
    /// Namespace (empty string for `pg_catalog`).
    pub namespace: String,
    /// Relation name.
    pub name: String,
    /// Replica identity setting for the relation (same as `relreplident` in
    /// `pg_class`): `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// The columns, in order, except generated columns.
    pub columns: Vec<RelationColumn>,
}

/// The old row carried by an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// Byte1('K'): the following TupleData is a key (replica identity
    /// columns, others are null).
    Key(TupleData),
    /// Byte1('O'): the following TupleData is the whole old tuple
    /// (REPLICA IDENTITY FULL).
    Full(TupleData),
}

/// One pgoutput (protocol version 1) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage {
    /// Byte1('B'): identifies the message as a begin message.
    Begin {
        /// The final LSN of the transaction.
        final_lsn: Lsn,
        /// Commit timestamp of the transaction, in microseconds since the
        /// PostgreSQL epoch (2000-01-01).
        commit_timestamp_micros: i64,
        /// Xid of the transaction.
        xid: u32,
    },
    /// Byte1('C'): identifies the message as a commit message.
    Commit {
        /// Flags; currently unused.
        flags: u8,
        /// The LSN of the commit.
        commit_lsn: Lsn,
        /// The end LSN of the transaction.
        end_lsn: Lsn,
        /// Commit timestamp of the transaction, in microseconds since the
        /// PostgreSQL epoch (2000-01-01).
        commit_timestamp_micros: i64,
    },
    /// Byte1('O'): identifies the message as an origin message. There can be
    /// several inside a single transaction.
    Origin {
        /// The LSN of the commit on the origin server.
        commit_lsn: Lsn,
        /// Name of the origin.
        name: String,
    },
    /// Byte1('R'): identifies the message as a relation message.
    Relation(Relation),
    /// Byte1('Y'): identifies the message as a type message.
    Type {
        /// OID of the data type.
        id: u32,
        /// Namespace (empty string for `pg_catalog`).
        namespace: String,
        /// Name of the data type.
        name: String,
    },
    /// Byte1('I'): identifies the message as an insert message.
    Insert {
        /// OID of the relation corresponding to the ID in the relation message.
        relation_id: u32,
        /// Byte1('N') then TupleData: the contents of the new tuple.
        new: TupleData,
    },
    /// Byte1('U'): identifies the message as an update message.
    Update {
        /// OID of the relation corresponding to the ID in the relation message.
        relation_id: u32,
        /// Optional 'K' (the key changed) or 'O' (REPLICA IDENTITY FULL)
        /// part; never both.
        old: Option<OldTuple>,
        /// Byte1('N') then TupleData: the contents of the new tuple.
        new: TupleData,
    },
    /// Byte1('D'): identifies the message as a delete message.
    Delete {
        /// OID of the relation corresponding to the ID in the relation message.
        relation_id: u32,
        /// 'K' (identity index) or 'O' (REPLICA IDENTITY FULL) part.
        old: OldTuple,
    },
    /// Byte1('T'): identifies the message as a truncate message.
    Truncate {
        /// Option bits for TRUNCATE: 1 for CASCADE, 2 for RESTART IDENTITY.
        options: u8,
        /// OIDs of the relations corresponding to the IDs in the relation messages.
        relation_ids: Vec<u32>,
    },
    /// Byte1('M'): identifies the message as a logical decoding message.
    Message {
        /// Flags: either 0 for no flags or 1 if the message is transactional.
        transactional: bool,
        /// The LSN of the logical decoding message.
        lsn: Lsn,
        /// The prefix of the logical decoding message.
        prefix: String,
        /// The content of the logical decoding message.
        content: Bytes,
    },
    /// A tag this decoder does not know (for example a later protocol
    /// version's stream messages); reported rather than rejected.
    Unknown {
        /// The message's first byte.
        tag: u8,
    },
}

/// A message that does not follow the pgoutput format.
///
/// Offsets count bytes from the start of the message, the tag being offset 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer holds no byte at all, not even a tag.
    #[error("empty pgoutput message: expected at least a one-byte tag")]
    Empty,
    /// A field runs past the end of the message.
    #[error(
        "pgoutput {tag:?} message truncated: {field} at offset {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        tag: char,
        field: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// A String field has no terminating NUL before the end of the message.
    #[error("pgoutput {tag:?} message: {field} at offset {offset} has no NUL terminator")]
    MissingNul {
        tag: char,
        field: &'static str,
        offset: usize,
    },
    /// A String field is not UTF-8.
    #[error("pgoutput {tag:?} message: {field} at offset {offset} is not valid UTF-8: {source}")]
    InvalidUtf8 {
        tag: char,
        field: &'static str,
        offset: usize,
        source: std::str::Utf8Error,
    },
    /// A length field is negative.
    #[error("pgoutput {tag:?} message: {field} at offset {offset} is negative ({value})")]
    NegativeLength {
        tag: char,
        field: &'static str,
        offset: usize,
        value: i32,
    },
    /// A TupleData column starts with a byte other than 'n', 'u', 't' or 'b'.
    #[error(
        "pgoutput {tag:?} message: tuple column kind at offset {offset} is 0x{found:02X}, expected 'n', 'u', 't' or 'b'"
    )]
    BadColumnKind { tag: char, offset: usize, found: u8 },
    /// A marker byte ('N', 'K', 'O') is not one allowed at this place.
    #[error(
        "pgoutput {tag:?} message: expected {expected} at offset {offset}, found 0x{found:02X}"
    )]
    UnexpectedMarker {
        tag: char,
        offset: usize,
        expected: &'static str,
        found: u8,
    },
    /// Bytes remain after the last field of the message.
    #[error("pgoutput {tag:?} message: {extra} unexpected trailing bytes at offset {offset}")]
    TrailingBytes {
        tag: char,
        offset: usize,
        extra: usize,
    },
}

mod decode;
#[cfg(test)]
mod tests;
