//! Malformed input: every truncation, bad lengths and markers, corruption;
//! always an error naming the field and offset, never a panic.

use super::*;

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
