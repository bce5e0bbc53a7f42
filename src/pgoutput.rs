//! TEMPORARY stub (types only) until the decoder lands.
use crate::lsn::Lsn;
use bytes::Bytes;
#[derive(Debug, Clone, PartialEq)]
pub enum TupleValue {
    Null,
    UnchangedToast,
    Text(Bytes),
}
#[derive(Debug, Clone, PartialEq)]
pub struct TupleData(pub Vec<TupleValue>);
#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}
#[derive(Debug, Clone, PartialEq)]
pub enum OldTuple {
    Key(TupleData),
    Full(TupleData),
}
#[derive(Debug, Clone, PartialEq)]
pub enum LogicalMessage {
    Begin {
        final_lsn: Lsn,
        commit_timestamp_micros: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_timestamp_micros: i64,
    },
    Origin {
        commit_lsn: Lsn,
        name: String,
    },
    Relation(Relation),
    Type {
        id: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation_id: u32,
        new: TupleData,
    },
    Update {
        relation_id: u32,
        old: Option<OldTuple>,
        new: TupleData,
    },
    Delete {
        relation_id: u32,
        old: OldTuple,
    },
    Truncate {
        options: u8,
        relation_ids: Vec<u32>,
    },
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    Unknown {
        tag: u8,
    },
}
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("stub")]
    Stub,
}
impl LogicalMessage {
    pub fn decode(_buf: Bytes) -> Result<LogicalMessage, DecodeError> {
        Err(DecodeError::Stub)
    }
}
pub fn pg_micros_to_unix_micros(pg: i64) -> i64 {
    pg + 946_684_800_000_000
}
