//! Decoder tests: every message kind and both old-tuple forms (here), and
//! malformed input (`malformed`).

mod malformed;

use super::*;

/// Truncate option bit: 1 for CASCADE.
const TRUNCATE_CASCADE: u8 = 1;
/// Truncate option bit: 2 for RESTART IDENTITY.
const TRUNCATE_RESTART_IDENTITY: u8 = 2;

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
