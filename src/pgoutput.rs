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

use crate::lsn::Lsn;

/// Microseconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch (2000-01-01).
const PG_EPOCH_IN_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Truncate option bit: 1 for CASCADE.
pub const TRUNCATE_CASCADE: u8 = 1;
/// Truncate option bit: 2 for RESTART IDENTITY.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;
/// Column flag: 1 marks the column as part of the key.
pub const COLUMN_FLAG_KEY: u8 = 1;

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

impl OldTuple {
    /// The tuple, whichever form it came in.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(tuple) | OldTuple::Full(tuple) => tuple,
        }
    }
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

type Result<T> = std::result::Result<T, DecodeError>;

impl LogicalMessage {
    /// Decodes one pgoutput message; `buf` starts with the tag byte.
    pub fn decode(buf: Bytes) -> std::result::Result<LogicalMessage, DecodeError> {
        let Some(&tag) = buf.first() else {
            return Err(DecodeError::Empty);
        };
        let mut reader = Reader::new(buf);
        let message = match tag {
            b'B' => decode_begin(&mut reader)?,
            b'C' => decode_commit(&mut reader)?,
            b'O' => decode_origin(&mut reader)?,
            b'R' => LogicalMessage::Relation(decode_relation(&mut reader)?),
            b'Y' => decode_type(&mut reader)?,
            b'I' => decode_insert(&mut reader)?,
            b'U' => decode_update(&mut reader)?,
            b'D' => decode_delete(&mut reader)?,
            b'T' => decode_truncate(&mut reader)?,
            b'M' => decode_message(&mut reader)?,
            _ => return Ok(LogicalMessage::Unknown { tag }),
        };
        reader.finish()?;
        Ok(message)
    }
}

fn decode_begin(r: &mut Reader) -> Result<LogicalMessage> {
    Ok(LogicalMessage::Begin {
        final_lsn: r.lsn("final LSN")?,
        commit_timestamp_micros: r.i64("commit timestamp")?,
        xid: r.u32("xid")?,
    })
}

fn decode_commit(r: &mut Reader) -> Result<LogicalMessage> {
    Ok(LogicalMessage::Commit {
        flags: r.u8("commit flags")?,
        commit_lsn: r.lsn("commit LSN")?,
        end_lsn: r.lsn("end LSN")?,
        commit_timestamp_micros: r.i64("commit timestamp")?,
    })
}

fn decode_origin(r: &mut Reader) -> Result<LogicalMessage> {
    Ok(LogicalMessage::Origin {
        commit_lsn: r.lsn("origin commit LSN")?,
        name: r.string("origin name")?,
    })
}

fn decode_relation(r: &mut Reader) -> Result<Relation> {
    let id = r.u32("relation id")?;
    let namespace = r.string("namespace")?;
    let name = r.string("relation name")?;
    let replica_identity = r.u8("replica identity")?;
    let count = usize::from(r.u16("column count")?);
    let mut columns = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        columns.push(decode_column(r)?);
    }
    Ok(Relation {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn decode_column(r: &mut Reader) -> Result<RelationColumn> {
    Ok(RelationColumn {
        flags: r.u8("column flags")?,
        name: r.string("column name")?,
        type_oid: r.u32("column type OID")?,
        type_modifier: r.i32("column type modifier")?,
    })
}

fn decode_type(r: &mut Reader) -> Result<LogicalMessage> {
    Ok(LogicalMessage::Type {
        id: r.u32("type OID")?,
        namespace: r.string("type namespace")?,
        name: r.string("type name")?,
    })
}

fn decode_insert(r: &mut Reader) -> Result<LogicalMessage> {
    let relation_id = r.u32("relation id")?;
    r.expect_marker(b'N', "'N' (new tuple)")?;
    let new = decode_tuple(r)?;
    Ok(LogicalMessage::Insert { relation_id, new })
}

fn decode_update(r: &mut Reader) -> Result<LogicalMessage> {
    let relation_id = r.u32("relation id")?;
    let offset = r.pos;
    let old = match r.u8("tuple marker")? {
        b'N' => None,
        b'K' => Some(OldTuple::Key(decode_tuple(r)?)),
        b'O' => Some(OldTuple::Full(decode_tuple(r)?)),
        found => return Err(r.unexpected(offset, "'K', 'O' or 'N'", found)),
    };
    if old.is_some() {
        r.expect_marker(b'N', "'N' (new tuple)")?;
    }
    let new = decode_tuple(r)?;
    Ok(LogicalMessage::Update {
        relation_id,
        old,
        new,
    })
}

fn decode_delete(r: &mut Reader) -> Result<LogicalMessage> {
    let relation_id = r.u32("relation id")?;
    let offset = r.pos;
    let old = match r.u8("tuple marker")? {
        b'K' => OldTuple::Key(decode_tuple(r)?),
        b'O' => OldTuple::Full(decode_tuple(r)?),
        found => return Err(r.unexpected(offset, "'K' or 'O'", found)),
    };
    Ok(LogicalMessage::Delete { relation_id, old })
}

fn decode_truncate(r: &mut Reader) -> Result<LogicalMessage> {
    let count = r.u32("relation count")?;
    let options = r.u8("truncate options")?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let mut relation_ids = Vec::with_capacity(count.min(r.remaining() / 4));
    for _ in 0..count {
        relation_ids.push(r.u32("truncated relation id")?);
    }
    Ok(LogicalMessage::Truncate {
        options,
        relation_ids,
    })
}

fn decode_message(r: &mut Reader) -> Result<LogicalMessage> {
    let flags = r.u8("message flags")?;
    let lsn = r.lsn("message LSN")?;
    let prefix = r.string("message prefix")?;
    let content = r.counted("message content length", "message content")?;
    Ok(LogicalMessage::Message {
        transactional: flags & 1 != 0,
        lsn,
        prefix,
        content,
    })
}

fn decode_tuple(r: &mut Reader) -> Result<TupleData> {
    let count = usize::from(r.u16("tuple column count")?);
    let mut values = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        values.push(decode_value(r)?);
    }
    Ok(TupleData(values))
}

fn decode_value(r: &mut Reader) -> Result<TupleValue> {
    let offset = r.pos;
    match r.u8("tuple column kind")? {
        b'n' => Ok(TupleValue::Null),
        b'u' => Ok(TupleValue::UnchangedToast),
        b't' => Ok(TupleValue::Text(
            r.counted("text value length", "text value")?,
        )),
        b'b' => Ok(TupleValue::Binary(
            r.counted("binary value length", "binary value")?,
        )),
        found => Err(DecodeError::BadColumnKind {
            tag: r.tag,
            offset,
            found,
        }),
    }
}

/// A cursor over one message that checks every read against its length.
struct Reader {
    buf: Bytes,
    pos: usize,
    tag: char,
}

impl Reader {
    /// Starts just after the tag byte; `buf` must not be empty.
    fn new(buf: Bytes) -> Self {
        let tag = char::from(buf.first().copied().unwrap_or_default());
        Reader { buf, pos: 1, tag }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes as a shared slice of the input.
    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                tag: self.tag,
                field,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let bytes = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(&self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    fn lsn(&mut self, field: &'static str) -> Result<Lsn> {
        Ok(Lsn(u64::from_be_bytes(self.array(field)?)))
    }

    /// An Int32 length followed by that many bytes.
    fn counted(&mut self, length_field: &'static str, field: &'static str) -> Result<Bytes> {
        let offset = self.pos;
        let value = self.i32(length_field)?;
        let len = usize::try_from(value).map_err(|_| DecodeError::NegativeLength {
            tag: self.tag,
            field: length_field,
            offset,
            value,
        })?;
        self.take(len, field)
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, field: &'static str) -> Result<String> {
        let offset = self.pos;
        let rest = self.buf.get(offset..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(self.missing_nul(field, offset));
        };
        let text =
            std::str::from_utf8(&rest[..len]).map_err(|source| DecodeError::InvalidUtf8 {
                tag: self.tag,
                field,
                offset,
                source,
            })?;
        let text = text.to_owned();
        self.pos += len + 1;
        Ok(text)
    }

    fn expect_marker(&mut self, expected: u8, description: &'static str) -> Result<()> {
        let offset = self.pos;
        match self.u8("tuple marker")? {
            found if found == expected => Ok(()),
            found => Err(self.unexpected(offset, description, found)),
        }
    }

    fn missing_nul(&self, field: &'static str, offset: usize) -> DecodeError {
        DecodeError::MissingNul {
            tag: self.tag,
            field,
            offset,
        }
    }

    fn unexpected(&self, offset: usize, expected: &'static str, found: u8) -> DecodeError {
        DecodeError::UnexpectedMarker {
            tag: self.tag,
            offset,
            expected,
            found,
        }
    }

    /// Succeeds only when every byte of the message was consumed.
    fn finish(self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes {
                tag: self.tag,
                offset: self.pos,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes messages the way the PostgreSQL 15 walsender does: network
    /// byte order integers and NUL-terminated strings.
    struct Enc(Vec<u8>);

    impl Enc {
        fn tag(tag: u8) -> Self {
            Enc(vec![tag])
        }

        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }

        fn u8(self, value: u8) -> Self {
            self.raw(&[value])
        }

        fn u16(self, value: u16) -> Self {
            self.raw(&value.to_be_bytes())
        }

        fn u32(self, value: u32) -> Self {
            self.raw(&value.to_be_bytes())
        }

        fn i32(self, value: i32) -> Self {
            self.raw(&value.to_be_bytes())
        }

        fn i64(self, value: i64) -> Self {
            self.raw(&value.to_be_bytes())
        }

        fn string(self, text: &str) -> Self {
            self.raw(text.as_bytes()).u8(0)
        }

        fn counted(self, bytes: &[u8]) -> Self {
            self.i32(i32::try_from(bytes.len()).unwrap()).raw(bytes)
        }

        fn tuple(self, values: &[TupleValue]) -> Self {
            let count = u16::try_from(values.len()).unwrap();
            values.iter().fold(self.u16(count), Enc::value)
        }

        fn value(self, value: &TupleValue) -> Self {
            match value {
                TupleValue::Null => self.u8(b'n'),
                TupleValue::UnchangedToast => self.u8(b'u'),
                TupleValue::Text(bytes) => self.u8(b't').counted(bytes),
                TupleValue::Binary(bytes) => self.u8(b'b').counted(bytes),
            }
        }

        fn build(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    fn text(value: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(value.as_bytes()))
    }

    fn decode(message: Enc) -> LogicalMessage {
        LogicalMessage::decode(message.build()).expect("well-formed message")
    }

    fn decode_err(message: Enc) -> DecodeError {
        LogicalMessage::decode(message.build()).expect_err("malformed message")
    }

    fn hex(text: &str) -> Bytes {
        let digit = |i: usize| u8::from_str_radix(&text[i..i + 2], 16).unwrap();
        (0..text.len()).step_by(2).map(digit).collect()
    }

    fn begin() -> Enc {
        Enc::tag(b'B').i64(0x16_B374_D848).i64(1_000_000).u32(741)
    }

    fn relation() -> Enc {
        Enc::tag(b'R')
            .u32(16389)
            .string("public")
            .string("items")
            .u8(b'd')
            .u16(2)
            .u8(1)
            .string("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .string("label")
            .u32(1043)
            .i32(36)
    }

    fn update_with_old(marker: u8) -> Enc {
        Enc::tag(b'U')
            .u32(16389)
            .u8(marker)
            .tuple(&[text("1"), TupleValue::Null])
            .u8(b'N')
            .tuple(&[text("2"), text("b")])
    }

    fn logical_message(flags: u8) -> Enc {
        Enc::tag(b'M')
            .u8(flags)
            .i64(0x1_0000_0010)
            .string("audit")
            .counted(b"\x00\xffpayload")
    }

    /// One well-formed message of every kind, together using every field kind.
    fn every_kind_of_message() -> Vec<Bytes> {
        let values = [
            text("x"),
            TupleValue::Null,
            TupleValue::UnchangedToast,
            TupleValue::Binary(hex("0102")),
        ];
        vec![
            begin().build(),
            Enc::tag(b'C').u8(0).i64(1).i64(2).i64(3).build(),
            Enc::tag(b'O').i64(9).string("upstream").build(),
            relation().build(),
            Enc::tag(b'Y')
                .u32(1)
                .string("public")
                .string("mood")
                .build(),
            Enc::tag(b'I').u32(7).u8(b'N').tuple(&values).build(),
            Enc::tag(b'U').u32(7).u8(b'N').tuple(&values).build(),
            update_with_old(b'K').build(),
            update_with_old(b'O').build(),
            Enc::tag(b'D').u32(7).u8(b'K').tuple(&[text("1")]).build(),
            Enc::tag(b'D').u32(7).u8(b'O').tuple(&values).build(),
            Enc::tag(b'T').u32(2).u8(3).u32(10).u32(11).build(),
            logical_message(1).build(),
        ]
    }

    #[test]
    fn begin_carries_final_lsn_commit_timestamp_and_xid() {
        let expected = LogicalMessage::Begin {
            final_lsn: Lsn(0x16_B374_D848),
            commit_timestamp_micros: 1_000_000,
            xid: 741,
        };
        assert_eq!(decode(begin()), expected);
    }

    #[test]
    fn commit_carries_flags_both_lsns_and_timestamp() {
        let message = Enc::tag(b'C').u8(0).i64(0x10).i64(0x20).i64(-5);
        let expected = LogicalMessage::Commit {
            flags: 0,
            commit_lsn: Lsn(0x10),
            end_lsn: Lsn(0x20),
            commit_timestamp_micros: -5,
        };
        assert_eq!(decode(message), expected);
    }

    #[test]
    fn origin_names_the_origin_and_its_commit_lsn() {
        let message = Enc::tag(b'O').i64(0x42).string("node_a");
        let expected = LogicalMessage::Origin {
            commit_lsn: Lsn(0x42),
            name: "node_a".into(),
        };
        assert_eq!(decode(message), expected);
    }

    #[test]
    fn relation_lists_columns_with_key_flag_type_and_modifier() {
        let LogicalMessage::Relation(relation) = decode(relation()) else {
            panic!("expected a relation");
        };
        assert_eq!((relation.id, relation.replica_identity), (16389, b'd'));
        assert_eq!((&*relation.namespace, &*relation.name), ("public", "items"));
        let keys: Vec<bool> = relation
            .columns
            .iter()
            .map(RelationColumn::is_key)
            .collect();
        assert_eq!(keys, [true, false]);
        let label = &relation.columns[1];
        assert_eq!(
            (&*label.name, label.type_oid, label.type_modifier),
            ("label", 1043, 36)
        );
    }

    #[test]
    fn type_message_names_a_custom_type() {
        let message = Enc::tag(b'Y').u32(16400).string("public").string("mood");
        let expected = LogicalMessage::Type {
            id: 16400,
            namespace: "public".into(),
            name: "mood".into(),
        };
        assert_eq!(decode(message), expected);
    }

    #[test]
    fn insert_decodes_text_and_null_values_in_column_order() {
        let values = [text("1"), TupleValue::Null, text("")];
        let message = Enc::tag(b'I').u32(16389).u8(b'N').tuple(&values);
        let expected = LogicalMessage::Insert {
            relation_id: 16389,
            new: TupleData(values.to_vec()),
        };
        assert_eq!(decode(message), expected);
    }

    #[test]
    fn text_values_share_the_input_buffer() {
        let buf = Enc::tag(b'I').u32(1).u8(b'N').tuple(&[text("abc")]).build();
        let range = buf.as_ptr_range();
        let Ok(LogicalMessage::Insert { new, .. }) = LogicalMessage::decode(buf.clone()) else {
            panic!("expected an insert");
        };
        let TupleValue::Text(value) = &new.0[0] else {
            panic!("expected a text value");
        };
        assert!(range.contains(&value.as_ptr()));
    }

    #[test]
    fn binary_value_is_decoded_as_binary() {
        let binary = TupleValue::Binary(hex("00ff"));
        let message = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .tuple(std::slice::from_ref(&binary));
        let LogicalMessage::Insert { new, .. } = decode(message) else {
            panic!("expected an insert");
        };
        assert_eq!(new, TupleData(vec![binary]));
    }

    #[test]
    fn update_with_unchanged_toast_value_is_not_null() {
        let values = [text("1"), TupleValue::UnchangedToast];
        let message = Enc::tag(b'U').u32(5).u8(b'N').tuple(&values);
        let LogicalMessage::Update { new, .. } = decode(message) else {
            panic!("expected an update");
        };
        assert_eq!(new.0[1], TupleValue::UnchangedToast);
        assert_ne!(new.0[1], TupleValue::Null);
    }

    #[test]
    fn update_without_old_tuple_has_no_old() {
        let message = Enc::tag(b'U').u32(5).u8(b'N').tuple(&[text("1")]);
        let expected = LogicalMessage::Update {
            relation_id: 5,
            old: None,
            new: TupleData(vec![text("1")]),
        };
        assert_eq!(decode(message), expected);
    }

    #[test]
    fn update_with_key_part_keeps_the_old_key() {
        let LogicalMessage::Update { old, new, .. } = decode(update_with_old(b'K')) else {
            panic!("expected an update");
        };
        let key = TupleData(vec![text("1"), TupleValue::Null]);
        assert_eq!(old, Some(OldTuple::Key(key)));
        assert_eq!(new, TupleData(vec![text("2"), text("b")]));
    }

    #[test]
    fn update_with_old_part_keeps_the_full_old_tuple() {
        let LogicalMessage::Update { old, .. } = decode(update_with_old(b'O')) else {
            panic!("expected an update");
        };
        let full = TupleData(vec![text("1"), TupleValue::Null]);
        assert_eq!(old.as_ref().map(OldTuple::tuple), Some(&full));
        assert_eq!(old, Some(OldTuple::Full(full)));
    }

    #[test]
    fn delete_with_key_part_carries_the_key() {
        let message = Enc::tag(b'D').u32(9).u8(b'K').tuple(&[text("7")]);
        let expected = LogicalMessage::Delete {
            relation_id: 9,
            old: OldTuple::Key(TupleData(vec![text("7")])),
        };
        assert_eq!(decode(message), expected);
    }

    #[test]
    fn delete_with_old_part_carries_the_full_row() {
        let row = [text("7"), TupleValue::Null, text("x")];
        let message = Enc::tag(b'D').u32(9).u8(b'O').tuple(&row);
        let expected = LogicalMessage::Delete {
            relation_id: 9,
            old: OldTuple::Full(TupleData(row.to_vec())),
        };
        assert_eq!(decode(message), expected);
    }

    #[test]
    fn truncate_lists_several_relations_and_its_options() {
        let options = TRUNCATE_CASCADE | TRUNCATE_RESTART_IDENTITY;
        let message = Enc::tag(b'T').u32(3).u8(options).u32(10).u32(11).u32(12);
        let expected = LogicalMessage::Truncate {
            options: 3,
            relation_ids: vec![10, 11, 12],
        };
        assert_eq!(decode(message), expected);
    }

    #[test]
    fn non_transactional_message_keeps_prefix_and_binary_content() {
        let expected = LogicalMessage::Message {
            transactional: false,
            lsn: Lsn(0x1_0000_0010),
            prefix: "audit".into(),
            content: Bytes::from_static(b"\x00\xffpayload"),
        };
        assert_eq!(decode(logical_message(0)), expected);
    }

    #[test]
    fn transactional_message_is_flagged_transactional() {
        let LogicalMessage::Message { transactional, .. } = decode(logical_message(1)) else {
            panic!("expected a logical decoding message");
        };
        assert!(transactional);
    }

    #[test]
    fn unknown_tags_are_reported_not_rejected() {
        for tag in [b'S', b'E', b'c', b'A', 0x00, 0xFF] {
            let buf = Bytes::from(vec![tag, 1, 2, 3]);
            let decoded = LogicalMessage::decode(buf);
            assert_eq!(decoded, Ok(LogicalMessage::Unknown { tag }));
        }
    }

    #[test]
    fn pg_timestamps_convert_to_unix_micros() {
        assert_eq!(pg_micros_to_unix_micros(0), 946_684_800_000_000);
        assert_eq!(pg_micros_to_unix_micros(-946_684_800_000_000), 0);
        assert_eq!(pg_micros_to_unix_micros(i64::MAX), i64::MAX);
    }

    // Captured from PostgreSQL 15.18 with pg_logical_slot_peek_binary_changes
    // (proto_version 1) for `CREATE TABLE items (id int PRIMARY KEY, label
    // text, body text)` with body stored EXTERNAL and a 5000-byte body in row
    // 1, then: BEGIN; INSERT INTO items VALUES (2, 'two', NULL);
    // UPDATE items SET label = 'third' WHERE id = 1; COMMIT;
    const REAL_BEGIN: &str = "420000000001947cc00003043819dfa908000002e5";
    const REAL_RELATION: &str = concat!(
        "52000040057075626c6963006974656d730064000301696400000000",
        "17ffffffff006c6162656c0000000019ffffffff00626f6479000000",
        "0019ffffffff"
    );
    const REAL_INSERT: &str = "49000040054e0003740000000132740000000374776f6e";
    const REAL_UPDATE: &str = "55000040054e00037400000001317400000005746869726475";
    const REAL_COMMIT: &str = "43000000000001947cc00000000001947cf00003043819dfa908";
    const REAL_COMMIT_TIMESTAMP: i64 = 0x0003_0438_19DF_A908;

    fn decode_hex(message: &str) -> LogicalMessage {
        LogicalMessage::decode(hex(message)).expect("real server bytes decode")
    }

    #[test]
    fn real_postgres_15_transaction_frames_its_changes() {
        let begin = LogicalMessage::Begin {
            final_lsn: "0/1947CC0".parse().unwrap(),
            commit_timestamp_micros: REAL_COMMIT_TIMESTAMP,
            xid: 741,
        };
        let commit = LogicalMessage::Commit {
            flags: 0,
            commit_lsn: "0/1947CC0".parse().unwrap(),
            end_lsn: "0/1947CF0".parse().unwrap(),
            commit_timestamp_micros: REAL_COMMIT_TIMESTAMP,
        };
        assert_eq!(decode_hex(REAL_BEGIN), begin);
        assert_eq!(decode_hex(REAL_COMMIT), commit);
        assert_eq!(
            pg_micros_to_unix_micros(REAL_COMMIT_TIMESTAMP),
            1_795_748_728_899_848
        );
    }

    #[test]
    fn real_postgres_15_relation_describes_the_table() {
        let LogicalMessage::Relation(relation) = decode_hex(REAL_RELATION) else {
            panic!("expected a relation");
        };
        assert_eq!(
            (relation.id, &*relation.namespace, &*relation.name),
            (16389, "public", "items")
        );
        assert_eq!(relation.replica_identity, b'd');
        let columns: Vec<_> = relation
            .columns
            .iter()
            .map(|c| (c.is_key(), &*c.name, c.type_oid, c.type_modifier))
            .collect();
        let expected = [
            (true, "id", 23, -1),
            (false, "label", 25, -1),
            (false, "body", 25, -1),
        ];
        assert_eq!(columns, expected);
    }

    #[test]
    fn real_postgres_15_insert_and_toast_update_decode() {
        let insert = LogicalMessage::Insert {
            relation_id: 16389,
            new: TupleData(vec![text("2"), text("two"), TupleValue::Null]),
        };
        let update = LogicalMessage::Update {
            relation_id: 16389,
            old: None,
            new: TupleData(vec![text("1"), text("third"), TupleValue::UnchangedToast]),
        };
        assert_eq!(decode_hex(REAL_INSERT), insert);
        assert_eq!(decode_hex(REAL_UPDATE), update);
    }

    #[test]
    fn empty_buffer_is_an_error() {
        assert_eq!(
            LogicalMessage::decode(Bytes::new()),
            Err(DecodeError::Empty)
        );
    }

    #[test]
    fn every_truncation_of_every_message_is_an_error() {
        for message in every_kind_of_message() {
            assert!(LogicalMessage::decode(message.clone()).is_ok());
            for len in 1..message.len() {
                let cut = message.slice(..len);
                assert!(
                    LogicalMessage::decode(cut).is_err(),
                    "{message:?} cut at {len}"
                );
            }
        }
    }

    #[test]
    fn truncated_lsn_names_the_field_and_offset() {
        let err = decode_err(Enc::tag(b'B').raw(&[0; 5]));
        let expected = DecodeError::Truncated {
            tag: 'B',
            field: "final LSN",
            offset: 1,
            needed: 8,
            available: 5,
        };
        assert_eq!(err, expected);
    }

    #[test]
    fn truncated_int32_names_the_field_and_offset() {
        let err = decode_err(Enc::tag(b'B').i64(1).i64(2).u16(3));
        assert!(matches!(
            err,
            DecodeError::Truncated {
                field: "xid",
                offset: 17,
                needed: 4,
                available: 2,
                ..
            }
        ));
    }

    #[test]
    fn truncated_int16_column_count_is_an_error() {
        let err = decode_err(Enc::tag(b'I').u32(1).u8(b'N').u8(0));
        let expected_field = "tuple column count";
        assert!(
            matches!(err, DecodeError::Truncated { field, offset: 6, .. } if field == expected_field)
        );
    }

    #[test]
    fn text_value_shorter_than_its_length_is_an_error() {
        let message = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(10)
            .raw(b"abc");
        let err = decode_err(message);
        let expected = DecodeError::Truncated {
            tag: 'I',
            field: "text value",
            offset: 13,
            needed: 10,
            available: 3,
        };
        assert_eq!(err, expected);
    }

    #[test]
    fn tuple_with_fewer_columns_than_announced_is_an_error() {
        let message = Enc::tag(b'I').u32(1).u8(b'N').u16(3).u8(b'n');
        let err = decode_err(message);
        assert!(matches!(
            err,
            DecodeError::Truncated {
                field: "tuple column kind",
                ..
            }
        ));
    }

    #[test]
    fn string_without_nul_terminator_is_an_error() {
        let err = decode_err(Enc::tag(b'O').i64(1).raw(b"node"));
        let expected = DecodeError::MissingNul {
            tag: 'O',
            field: "origin name",
            offset: 9,
        };
        assert_eq!(err, expected);
    }

    #[test]
    fn invalid_utf8_in_a_name_is_an_error() {
        let message = Enc::tag(b'Y').u32(1).raw(b"pub\xffl\0").string("t");
        let err = decode_err(message);
        assert!(matches!(
            err,
            DecodeError::InvalidUtf8 {
                field: "type namespace",
                offset: 5,
                ..
            }
        ));
    }

    #[test]
    fn unknown_tuple_column_kind_is_an_error() {
        let err = decode_err(Enc::tag(b'I').u32(1).u8(b'N').u16(1).u8(b'x'));
        let expected = DecodeError::BadColumnKind {
            tag: 'I',
            offset: 8,
            found: b'x',
        };
        assert_eq!(err, expected);
    }

    #[test]
    fn misplaced_tuple_markers_are_errors() {
        let insert = Enc::tag(b'I').u32(1).u8(b'K').tuple(&[]);
        let update = Enc::tag(b'U').u32(1).u8(b'X').tuple(&[]);
        let update_twice_old = Enc::tag(b'U')
            .u32(1)
            .u8(b'K')
            .tuple(&[])
            .u8(b'O')
            .tuple(&[]);
        let delete = Enc::tag(b'D').u32(1).u8(b'N').tuple(&[]);
        for message in [insert, update, update_twice_old, delete] {
            assert!(matches!(
                decode_err(message),
                DecodeError::UnexpectedMarker { .. }
            ));
        }
    }

    #[test]
    fn negative_lengths_are_errors() {
        let value = Enc::tag(b'I').u32(1).u8(b'N').u16(1).u8(b't').i32(-1);
        let content = Enc::tag(b'M').u8(0).i64(0).string("p").i32(-2);
        for message in [value, content] {
            assert!(matches!(
                decode_err(message),
                DecodeError::NegativeLength { .. }
            ));
        }
    }

    #[test]
    fn huge_truncate_count_fails_without_allocating_it() {
        let err = decode_err(Enc::tag(b'T').u32(u32::MAX).u8(0).u32(1));
        assert!(matches!(err, DecodeError::Truncated { offset: 10, .. }));
    }

    #[test]
    fn trailing_bytes_after_a_message_are_an_error() {
        let err = decode_err(Enc::tag(b'C').u8(0).i64(1).i64(2).i64(3).u8(0xAA));
        let expected = DecodeError::TrailingBytes {
            tag: 'C',
            offset: 26,
            extra: 1,
        };
        assert_eq!(err, expected);
    }

    #[test]
    fn error_messages_name_the_tag_field_and_offset() {
        let err = decode_err(Enc::tag(b'O').i64(1).raw(b"node")).to_string();
        assert_eq!(
            err,
            "pgoutput 'O' message: origin name at offset 9 has no NUL terminator"
        );
    }

    #[test]
    fn corrupted_messages_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for message in every_kind_of_message() {
            for _ in 0..500 {
                let mut bytes = message.to_vec();
                let index = usize::try_from(next() % bytes.len() as u64).unwrap();
                bytes[index.max(1)] ^= u8::try_from(next() % 255 + 1).unwrap();
                let _ = LogicalMessage::decode(Bytes::from(bytes));
            }
        }
    }
}
