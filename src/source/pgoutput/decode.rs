//! Decoding one message: a cursor over the bytes that checks every length
//! and names the field and offset of anything malformed.

use bytes::Bytes;

use super::*;

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
