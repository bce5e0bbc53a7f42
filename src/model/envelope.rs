//! The change envelope: the JSON value of every Kafka message. This is the
//! bridge's public contract (README, "Kafka message contract"); a change that
//! breaks readers bumps [`ENVELOPE_VERSION`].
//!
//! ```json
//! { "v": 1, "op": "upsert", "table": "tenant_brandings",
//!   "tenant": { "id": "7", "slug": "acme" },
//!   "origin": { "side": "tenant", "database": "tenant_acme", "lsn": "0/16B3748",
//!               "commit_ts": "2026-11-27T10:00:00.123456Z", "xid": 812 },
//!   "version": null,
//!   "key": { "id": "1" },
//!   "columns": { "primary_color": { "type": "text", "value": "#ff0000" },
//!                "custom_css": { "type": "text", "unchanged": true } } }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Side, TenantId};

/// Version of the envelope layout written by this build.
pub const ENVELOPE_VERSION: u32 = 1;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Insert or update: the row now has these columns.
    Upsert,
    /// The row was deleted.
    Delete,
    /// The row existed when the slot was created (initial snapshot).
    Snapshot,
}

/// The tenant a change belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TenantRef {
    /// The tenant's stable id from the registry (also the Kafka key).
    pub id: TenantId,
    pub slug: String,
}

/// Where and when the change was committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub side: Side,
    /// Database name the change was read from.
    pub database: String,
    /// Commit LSN of the source transaction (for snapshots: the slot's
    /// consistent point), printed as `X/X`.
    pub lsn: String,
    /// Source commit time, RFC 3339 UTC with microseconds; `null` for snapshots.
    pub commit_ts: Option<String>,
    /// Source transaction id; `null` for snapshots.
    pub xid: Option<u32>,
}

/// One column value: PostgreSQL's text form plus the type name, or a marker
/// that an unchanged TOAST value was not sent (and must be left alone).
///
/// JSON: `{"type": "text", "value": "x"}`, `{"type": "text", "value": null}`
/// for SQL NULL, `{"type": "text", "unchanged": true}` (no `value` at all) for
/// an unchanged TOAST value, so that it can never be read as NULL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ColumnValue {
    /// Type as `format_type()` prints it, e.g. `text`, `character varying(7)`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Text form; `None` is SQL NULL (or, with `unchanged`, no value).
    #[serde(default)]
    pub value: Option<String>,
    /// True when the source did not send the value because it did not change.
    #[serde(default)]
    pub unchanged: bool,
}

impl Serialize for ColumnValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("ColumnValue", 2)?;
        s.serialize_field("type", &self.type_name)?;
        if self.unchanged {
            s.serialize_field("unchanged", &true)?;
        } else {
            s.serialize_field("value", &self.value)?;
        }
        s.end()
    }
}

impl ColumnValue {
    pub fn text(type_name: impl Into<String>, value: Option<String>) -> Self {
        ColumnValue {
            type_name: type_name.into(),
            value,
            unchanged: false,
        }
    }

    pub fn unchanged(type_name: impl Into<String>) -> Self {
        ColumnValue {
            type_name: type_name.into(),
            value: None,
            unchanged: true,
        }
    }
}

/// The JSON value of one Kafka message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope layout version ([`ENVELOPE_VERSION`]).
    pub v: u32,
    pub op: Op,
    /// Logical table name from the configuration.
    pub table: String,
    pub tenant: TenantRef,
    pub origin: Origin,
    /// The row's sync version, when the table has a version column.
    pub version: Option<String>,
    /// The side that wrote this row version (the row's source column).
    /// Equals `origin.side` for live changes; a snapshot or reconcile may
    /// read a version the other side wrote. Absent: `origin.side`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Side>,
    /// Row key on the source side (text form), e.g. `{"id": "1"}`.
    pub key: BTreeMap<String, Option<String>>,
    /// Every synced column of the row; empty for deletes.
    pub columns: BTreeMap<String, ColumnValue>,
}

/// The message could not be read as an envelope this build understands.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message value is not a valid change envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("envelope version {found} is not supported (this build reads version {ENVELOPE_VERSION}); upgrade the bridge")]
    UnsupportedVersion { found: u32 },
}

impl Envelope {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and maps cannot fail.
        serde_json::to_vec(self).expect("envelope serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        // One parse in the common case; a message that does not parse is
        // read again for its layout version, to say "upgrade" when that is
        // the cause rather than "malformed".
        match serde_json::from_slice::<Envelope>(bytes) {
            Ok(envelope) if envelope.v == ENVELOPE_VERSION => Ok(envelope),
            Ok(envelope) => Err(EnvelopeError::UnsupportedVersion { found: envelope.v }),
            Err(error) => match serde_json::from_slice::<VersionOnly>(bytes) {
                Ok(VersionOnly { v }) if v != ENVELOPE_VERSION => {
                    Err(EnvelopeError::UnsupportedVersion { found: v })
                }
                _ => Err(error.into()),
            },
        }
    }

    /// The Kafka key: the tenant id, so that every change of a tenant's row,
    /// from either side, lands in one partition in order.
    pub fn kafka_key(&self) -> &str {
        self.tenant.id.as_str()
    }
}

/// Formats microseconds since the Unix epoch as RFC 3339 UTC.
pub fn format_unix_micros(micros: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros.max(0) as u64);
    humantime::format_rfc3339_micros(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let mut columns = BTreeMap::new();
        columns.insert(
            "primary_color".into(),
            ColumnValue::text("text", Some("#ff0000".into())),
        );
        columns.insert("logo_url".into(), ColumnValue::text("text", None));
        columns.insert("custom_css".into(), ColumnValue::unchanged("text"));
        Envelope {
            v: ENVELOPE_VERSION,
            op: Op::Upsert,
            table: "tenant_brandings".into(),
            tenant: TenantRef {
                id: "7".into(),
                slug: "acme".into(),
            },
            origin: Origin {
                side: Side::Tenant,
                database: "tenant_acme".into(),
                lsn: "0/16B3748".into(),
                commit_ts: Some(format_unix_micros(1_700_000_000_123_456)),
                xid: Some(812),
            },
            version: None,
            source: None,
            key: BTreeMap::from([("id".to_string(), Some("1".to_string()))]),
            columns,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let envelope = sample();
        let back = Envelope::from_json(&envelope.to_json()).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn null_is_explicit_and_unchanged_is_marked_not_null() {
        let json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        assert_eq!(
            json["columns"]["logo_url"]["value"],
            serde_json::Value::Null
        );
        assert!(json["columns"]["logo_url"].get("unchanged").is_none());
        assert_eq!(json["columns"]["custom_css"]["unchanged"], true);
        assert!(json["columns"]["custom_css"].get("value").is_none());
        assert_eq!(json["op"], "upsert");
        assert_eq!(json["origin"]["side"], "tenant");
    }

    #[test]
    fn unknown_envelope_version_is_refused_with_advice() {
        let err = Envelope::from_json(br#"{"v": 99}"#).unwrap_err();
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    #[test]
    fn invalid_json_is_refused() {
        assert!(Envelope::from_json(b"not json").is_err());
    }

    #[test]
    fn commit_time_is_rfc3339_utc_with_micros() {
        assert_eq!(
            format_unix_micros(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
    }

    #[test]
    fn kafka_key_is_the_tenant_id() {
        assert_eq!(sample().kafka_key(), "7");
    }
}
