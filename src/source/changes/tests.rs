//! The change logic in-process: messages in, events out, no database.

use bytes::Bytes;

use super::*;
use crate::model::{Side, TenantRef};
use crate::source::pgoutput::{RelationColumn, TupleValue};

/// Collects what the stream would send to Kafka.
#[derive(Default)]
struct Collected {
    next_seq: TxnSeq,
    events: Vec<(TxnSeq, Envelope)>,
    committed: Vec<(TxnSeq, Lsn)>,
}

impl EventSink for Collected {
    fn begin(&mut self) -> TxnSeq {
        self.next_seq += 1;
        self.next_seq
    }

    fn commit(&mut self, seq: TxnSeq, end: Lsn) {
        self.committed.push((seq, end));
    }

    async fn send(&mut self, seq: TxnSeq, envelope: &Envelope) -> Result<(), DeliveryError> {
        self.events.push((seq, envelope.clone()));
        Ok(())
    }
}

/// Every column type is `text`; counts the look-ups.
#[derive(Default)]
struct AllText(usize);

impl TypeNames for AllText {
    async fn type_name(&mut self, _oid: u32, _modifier: i32) -> Result<String, ReaderError> {
        self.0 += 1;
        Ok("text".to_string())
    }
}

fn config() -> Config {
    Config::parse(
        r#"
        [landlord]
        dsn = "host=x dbname=landlord"
        [tenants]
        connection_template = "host=x dbname={database_name}"
        [[table]]
        name = "tenant_brandings"
        [kafka]
        brokers = "x:9092"
    "#,
    )
    .unwrap()
}

fn text(value: &str) -> TupleValue {
    TupleValue::Text(Bytes::copy_from_slice(value.as_bytes()))
}

fn relation(id: u32, namespace: &str, name: &str, columns: &[&str]) -> LogicalMessage {
    LogicalMessage::Relation(Relation {
        id,
        namespace: namespace.into(),
        name: name.into(),
        replica_identity: b'f',
        columns: columns
            .iter()
            .map(|c| RelationColumn {
                flags: 0,
                name: c.to_string(),
                type_oid: 25,
                type_modifier: -1,
            })
            .collect(),
    })
}

const BRANDINGS: &[&str] = &["id", "primary_color", "cdc_source", "cdc_version"];

fn branding_row(color: &str) -> TupleData {
    TupleData(vec![
        text("1"),
        text(color),
        text("tenant"),
        text("2026-01-01 00:00:00+00"),
    ])
}

fn begin(xid: u32) -> LogicalMessage {
    LogicalMessage::Begin {
        final_lsn: Lsn(100 * u64::from(xid)),
        commit_timestamp_micros: 0,
        xid,
    }
}

fn commit(xid: u32) -> LogicalMessage {
    LogicalMessage::Commit {
        flags: 0,
        commit_lsn: Lsn(100 * u64::from(xid)),
        end_lsn: Lsn(100 * u64::from(xid) + 8),
        commit_timestamp_micros: 0,
    }
}

const MARK: &str = "5eed";

fn marker(content: &str) -> LogicalMessage {
    LogicalMessage::Message {
        transactional: true,
        lsn: Lsn(1),
        prefix: "cdc_bridge.apply".into(),
        content: Bytes::copy_from_slice(content.as_bytes()),
    }
}

async fn feed(messages: Vec<LogicalMessage>) -> (Collected, AllText) {
    let config = config();
    let source = SourceDb {
        side: Side::Tenant,
        database: "tenant_a".into(),
    };
    let owner = RowOwner::Tenant(TenantRef {
        id: "7".into(),
        slug: "acme".into(),
    });
    let mut changes = Changes::new(&config, source, owner, MARK.to_string());
    let (mut sink, mut types) = (Collected::default(), AllText::default());
    for message in messages {
        changes
            .on_logical(message, &mut sink, &mut types)
            .await
            .unwrap();
    }
    (sink, types)
}

#[tokio::test]
async fn an_application_insert_becomes_one_upsert_event_of_its_transaction() {
    let (sink, types) = feed(vec![
        begin(1),
        relation(16, "public", "tenant_brandings", BRANDINGS),
        LogicalMessage::Insert {
            relation_id: 16,
            new: branding_row("#fff"),
        },
        commit(1),
    ])
    .await;
    assert_eq!(sink.events.len(), 1);
    let (seq, event) = &sink.events[0];
    assert_eq!(event.op, Op::Upsert);
    assert_eq!(event.tenant.id.as_str(), "7");
    assert_eq!(
        event.columns["primary_color"].value.as_deref(),
        Some("#fff")
    );
    assert!(!event.columns.contains_key("cdc_version"));
    assert_eq!(event.version.as_deref(), Some("2026-01-01 00:00:00+00"));
    assert_eq!(sink.committed, vec![(*seq, Lsn(108))]);
    assert_eq!(types.0, 1, "one type look-up per distinct type");
}

#[tokio::test]
async fn rows_of_a_transaction_with_the_apply_marker_are_echoes_and_dropped() {
    let (sink, _) = feed(vec![
        relation(16, "public", "tenant_brandings", BRANDINGS),
        begin(1),
        marker(MARK),
        LogicalMessage::Insert {
            relation_id: 16,
            new: branding_row("#applied"),
        },
        commit(1),
        begin(2),
        LogicalMessage::Update {
            relation_id: 16,
            old: None,
            new: branding_row("#app"),
        },
        commit(2),
        begin(3),
        marker("forged"),
        LogicalMessage::Update {
            relation_id: 16,
            old: None,
            new: branding_row("#hidden?"),
        },
        commit(3),
    ])
    .await;
    let colors: Vec<_> = sink
        .events
        .iter()
        .map(|(_, e)| e.columns["primary_color"].value.clone())
        .collect();
    assert_eq!(
        colors,
        vec![Some("#app".to_string()), Some("#hidden?".to_string())],
        "a marker without this installation's mark hides nothing"
    );
    assert_eq!(sink.committed.len(), 3, "every transaction is tracked");
}

#[tokio::test]
async fn a_tombstone_of_this_side_is_a_delete_and_the_row_delete_itself_sends_nothing() {
    let tombstone_columns = &["table_name", "row_key", "version", "source", "deleted_at"];
    let tombstone = |side: &str| {
        TupleData(vec![
            text("tenant_brandings"),
            text(r#"{"id": "1"}"#),
            text("2026-01-02 00:00:00+00"),
            text(side),
            text("2026-01-02 00:00:00+00"),
        ])
    };
    let (sink, _) = feed(vec![
        relation(16, "public", "tenant_brandings", BRANDINGS),
        relation(17, "cdc_bridge", "tombstones", tombstone_columns),
        begin(1),
        LogicalMessage::Delete {
            relation_id: 16,
            old: OldTuple::Full(branding_row("#fff")),
        },
        LogicalMessage::Insert {
            relation_id: 17,
            new: tombstone("tenant"),
        },
        commit(1),
        begin(2),
        LogicalMessage::Insert {
            relation_id: 17,
            new: tombstone("landlord"),
        },
        commit(2),
    ])
    .await;
    assert_eq!(sink.events.len(), 1, "only this side's own tombstone");
    let (_, event) = &sink.events[0];
    assert_eq!(event.op, Op::Delete);
    assert_eq!(event.version.as_deref(), Some("2026-01-02 00:00:00+00"));
    assert_eq!(event.key["id"].as_deref(), Some("1"));
}

#[tokio::test]
async fn other_tables_and_truncates_send_nothing() {
    let (sink, _) = feed(vec![
        relation(18, "public", "audit_log", &["id"]),
        begin(1),
        LogicalMessage::Insert {
            relation_id: 18,
            new: TupleData(vec![text("1")]),
        },
        LogicalMessage::Truncate {
            options: 0,
            relation_ids: vec![16],
        },
        commit(1),
    ])
    .await;
    assert!(sink.events.is_empty());
    assert_eq!(sink.committed.len(), 1);
}
