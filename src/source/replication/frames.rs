//! Backend messages of the replication connection, parsed with length
//! checks: frames off the read buffer, CopyData (XLogData and keepalives),
//! DataRow, ErrorResponse.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};

use super::{ReplicationError, StreamMessage};
use crate::model::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Splits one complete backend message (tag, body) off the buffer.
pub(super) fn split_frame(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, ReplicationError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(ReplicationError::Protocol(format!(
            "message length {len} is below 4"
        )));
    }
    if buf.len() < len + 1 {
        buf.reserve(len + 1 - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(len + 1);
    let tag = frame[0];
    frame.advance(5);
    Ok(Some((tag, frame.freeze())))
}

pub(super) fn parse_copy_data(mut body: Bytes) -> Result<StreamMessage, ReplicationError> {
    ensure_len(&body, 1)?;
    match body.get_u8() {
        b'w' => {
            ensure_len(&body, 24)?;
            let _wal_start = body.get_u64();
            let wal_end = Lsn(body.get_u64());
            let _send_time = body.get_i64();
            Ok(StreamMessage::XLogData {
                wal_end,
                data: body,
            })
        }
        b'k' => {
            ensure_len(&body, 17)?;
            let wal_end = Lsn(body.get_u64());
            let _send_time = body.get_i64();
            Ok(StreamMessage::Keepalive {
                wal_end,
                reply_requested: body.get_u8() == 1,
            })
        }
        other => Err(ReplicationError::Protocol(format!(
            "unknown CopyData kind {:?}",
            other as char
        ))),
    }
}

pub(super) fn parse_data_row(mut body: Bytes) -> Result<Vec<Option<String>>, ReplicationError> {
    ensure_len(&body, 2)?;
    let count = body.get_i16().max(0) as usize;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let len = read_i32(&mut body)?;
        if len < 0 {
            values.push(None);
            continue;
        }
        ensure_len(&body, len as usize)?;
        let raw = body.split_to(len as usize);
        let text = String::from_utf8(raw.to_vec())
            .map_err(|_| ReplicationError::Protocol("non-UTF-8 value in DataRow".into()))?;
        values.push(Some(text));
    }
    Ok(values)
}

pub(super) fn server_error(body: Bytes) -> ReplicationError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let value = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            _ => {}
        }
    }
    ReplicationError::Server {
        code,
        message,
        detail,
    }
}

pub(super) fn unexpected(tag: u8, phase: &str) -> ReplicationError {
    ReplicationError::Protocol(format!(
        "unexpected message {:?} during {phase}",
        tag as char
    ))
}

pub(super) fn ensure_len(body: &Bytes, needed: usize) -> Result<(), ReplicationError> {
    if body.remaining() < needed {
        return Err(ReplicationError::Protocol(format!(
            "message too short: needed {needed} more bytes, have {}",
            body.remaining()
        )));
    }
    Ok(())
}

pub(super) fn read_i32(body: &mut Bytes) -> Result<i32, ReplicationError> {
    ensure_len(body, 4)?;
    Ok(body.get_i32())
}

pub(super) fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    unix - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::retry::{Classify, ErrorClass};

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn splits_frames_only_when_complete() {
        let bytes = frame(b'd', b"kpayload");
        let mut buf = BytesMut::from(&bytes[..6]);
        assert!(split_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[6..]);
        let (tag, body) = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(tag, b'd');
        assert_eq!(&body[..], b"kpayload");
        assert!(buf.is_empty());
    }

    #[test]
    fn decodes_keepalive_with_reply_request() {
        let mut body = vec![b'k'];
        body.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.push(1);
        match parse_copy_data(Bytes::from(body)).unwrap() {
            StreamMessage::Keepalive {
                wal_end,
                reply_requested,
            } => {
                assert_eq!(wal_end.to_string(), "1/10");
                assert!(reply_requested);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_xlogdata_is_an_error_not_a_panic() {
        assert!(parse_copy_data(Bytes::from_static(b"w\0\0")).is_err());
        assert!(parse_copy_data(Bytes::new()).is_err());
    }

    #[test]
    fn server_error_keeps_sqlstate_and_detail() {
        let err = server_error(Bytes::from_static(
            b"SERROR\0C42704\0Mreplication slot \"x\" does not exist\0Dmore\0\0",
        ));
        assert_eq!(err.sql_state(), Some("42704"));
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert!(err.to_string().contains("does not exist (more)"));
    }

    #[test]
    fn data_row_keeps_nulls() {
        let mut body = vec![0, 2];
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"hi");
        let row = parse_data_row(Bytes::from(body)).unwrap();
        assert_eq!(row, vec![None, Some("hi".to_string())]);
    }
}
