//! The comparison itself, pure: one tenant's synced row of one table as
//! each side holds it (row, or tombstone, or nothing) gives one verdict,
//! and, when the sides differ, the newer side's envelope that repairs the
//! other one. "Newer" is the production conflict rule
//! (`model::conflict`): (version, side), tenant winning ties; a row and a
//! tombstone compare the same way.
//!
//! ```text
//!  tenant \ landlord   row             tombstone / nothing
//!  row                 equal? else     tenant_only (or differs when the
//!                      differs(newer)   landlord's tombstone is newer)
//!  tombstone/nothing   landlord_only   consistent
//! ```

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, TableConfig};
use crate::model::conflict::Version;
use crate::model::{Envelope, Op, Side};

/// A tenant's state in a consistency check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Consistent,
    /// A row only the tenant database holds.
    TenantOnly,
    /// A row only the landlord holds.
    LandlordOnly,
    /// Both sides hold something different; `newer` is the side whose
    /// version wins (and what a repair copies).
    Differs {
        newer: Side,
    },
    /// One side could not be read.
    Unreachable,
    /// The tenant's direction is `paused`: not synced, not repaired.
    Paused,
}

impl State {
    /// Every state, for metrics and summaries (`Differs` once per side).
    pub const ALL: [State; 7] = [
        State::Consistent,
        State::TenantOnly,
        State::LandlordOnly,
        State::Differs {
            newer: Side::Tenant,
        },
        State::Differs {
            newer: Side::Landlord,
        },
        State::Unreachable,
        State::Paused,
    ];

    /// The state's name in output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            State::Consistent => "consistent",
            State::TenantOnly => "tenant_only",
            State::LandlordOnly => "landlord_only",
            State::Differs { .. } => "differs",
            State::Unreachable => "unreachable",
            State::Paused => "paused",
        }
    }

    /// The two sides were read and do not agree.
    pub fn is_divergent(self) -> bool {
        matches!(
            self,
            State::TenantOnly | State::LandlordOnly | State::Differs { .. }
        )
    }
}

/// What one side holds for a tenant's row of one table.
#[derive(Debug, Default, Clone, Copy)]
pub struct Held<'e> {
    pub row: Option<&'e Envelope>,
    pub tombstone: Option<&'e Envelope>,
}

impl<'e> Held<'e> {
    /// The side's row and tombstone of `table` among its current state.
    pub fn of(table: &str, state: &'e [Envelope]) -> Held<'e> {
        let find = |delete: bool| {
            state
                .iter()
                .find(|e| e.table == table && (e.op == Op::Delete) == delete)
        };
        Held {
            row: find(false),
            tombstone: find(true),
        }
    }
}

/// The verdict on one table's row of one tenant.
#[derive(Debug, Clone)]
pub struct Verdict<'e> {
    pub table: String,
    pub state: State,
    /// What differs, for people (empty when consistent).
    pub detail: String,
    /// The newer side's row or tombstone, to apply to the other side.
    pub repair: Option<&'e Envelope>,
}

/// The version an envelope carries, under the conflict rule's ordering.
pub fn version_of(envelope: &Envelope) -> Version {
    Version::of(envelope).unwrap_or(Version {
        micros: i64::MIN,
        side: envelope.source.unwrap_or(envelope.origin.side),
    })
}

/// Compares one table's row of one tenant on both sides.
pub fn compare<'e>(
    config: &Config,
    table: &TableConfig,
    tenant: Held<'e>,
    landlord: Held<'e>,
) -> Verdict<'e> {
    let verdict = |state: State, detail: String, repair: Option<&'e Envelope>| Verdict {
        table: table.name.clone(),
        state,
        detail,
        repair,
    };
    match (tenant.row, landlord.row) {
        (None, None) => verdict(State::Consistent, String::new(), None),
        (Some(t), Some(l)) => match differences(config, table, t, l) {
            None => verdict(State::Consistent, String::new(), None),
            Some(detail) => {
                let newer = newer_of(t, l);
                let repair = if newer == Side::Tenant { t } else { l };
                verdict(State::Differs { newer }, detail, Some(repair))
            }
        },
        (Some(t), None) => one_side_only(Side::Tenant, t, landlord.tombstone, table),
        (None, Some(l)) => one_side_only(Side::Landlord, l, tenant.tombstone, table),
    }
}

/// A row one side has and the other lacks: the other side's tombstone, if
/// newer, means the row should be gone.
fn one_side_only<'e>(
    holder: Side,
    row: &'e Envelope,
    other_tombstone: Option<&'e Envelope>,
    table: &TableConfig,
) -> Verdict<'e> {
    let other = holder.opposite();
    let (state, detail, repair) = match other_tombstone {
        Some(tombstone) if version_of(tombstone) > version_of(row) => (
            State::Differs { newer: other },
            format!(
                "the {other} deleted the row at {} after the {holder}'s version {}",
                describe_version(tombstone),
                describe_version(row)
            ),
            tombstone,
        ),
        _ => {
            let state = match holder {
                Side::Tenant => State::TenantOnly,
                Side::Landlord => State::LandlordOnly,
            };
            let detail = format!(
                "only the {holder} has the row (version {})",
                describe_version(row)
            );
            (state, detail, row)
        }
    };
    Verdict {
        table: table.name.clone(),
        state,
        detail,
        repair: Some(repair),
    }
}

/// The side whose row wins. Equal (version, side) with different data is
/// a write that bypassed the bridge on one side: the side that wrote the
/// version holds its data.
fn newer_of(tenant: &Envelope, landlord: &Envelope) -> Side {
    let (t, l) = (version_of(tenant), version_of(landlord));
    if t == l {
        return t.side;
    }
    if t > l {
        Side::Tenant
    } else {
        Side::Landlord
    }
}

/// What differs between the two rows (versions, sides, synced columns
/// both have), or `None` when they agree.
fn differences(
    config: &Config,
    table: &TableConfig,
    tenant: &Envelope,
    landlord: &Envelope,
) -> Option<String> {
    let mut found = Vec::new();
    if version_of(tenant) != version_of(landlord) {
        found.push(format!(
            "versions {} (tenant) and {} (landlord)",
            describe_version(tenant),
            describe_version(landlord)
        ));
    }
    let values = |e: &Envelope| -> BTreeMap<String, Option<String>> {
        e.columns
            .iter()
            .filter(|(c, v)| config.is_data_column(table, c) && !v.unchanged)
            .map(|(c, v)| (c.clone(), v.value.clone()))
            .collect()
    };
    let (t, l) = (values(tenant), values(landlord));
    let columns: Vec<&String> = t
        .iter()
        .filter(|(c, v)| l.get(*c).is_some_and(|other| other != *v))
        .map(|(c, _)| c)
        .collect();
    if !columns.is_empty() {
        let names: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
        found.push(format!("columns {} differ", names.join(", ")));
    }
    (!found.is_empty()).then(|| found.join("; "))
}

fn describe_version(envelope: &Envelope) -> String {
    let version = envelope.version.as_deref().unwrap_or("none");
    let side = version_of(envelope).side;
    format!("{version} by the {side}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::envelope::{ColumnValue, Origin, ENVELOPE_VERSION};
    use crate::model::TenantRef;

    fn config() -> Config {
        Config::parse(
            r#"
            [landlord]
            dsn = "host=x dbname=landlord"
            [tenants]
            connection_template = "host=x dbname={database_name}"
            [[table]]
            name = "tenant_brandings"
            [table.landlord_registry_columns]
            tenant_slug = "slug"
            [kafka]
            brokers = "x:9092"
        "#,
        )
        .unwrap()
    }

    /// A row (or, with `color` None, a tombstone) one side holds, written
    /// by `writer` at second `at`.
    fn held(side: Side, color: Option<&str>, at: u32, writer: Side) -> Envelope {
        let mut columns = BTreeMap::new();
        if let Some(color) = color {
            let key_column = match side {
                Side::Tenant => "id",
                Side::Landlord => "tenant_db_id",
            };
            columns.insert(
                key_column.to_string(),
                ColumnValue::text("int", Some("7".into())),
            );
            columns.insert(
                "primary_color".to_string(),
                ColumnValue::text("text", Some(color.into())),
            );
        }
        Envelope {
            v: ENVELOPE_VERSION,
            op: if color.is_some() {
                Op::Snapshot
            } else {
                Op::Delete
            },
            table: "tenant_brandings".into(),
            tenant: TenantRef {
                id: "7".into(),
                slug: "acme".into(),
            },
            origin: Origin {
                side,
                database: "db".into(),
                lsn: "0/0".into(),
                commit_ts: None,
                xid: None,
            },
            version: Some(format!("2026-01-01 00:00:{at:02}+00")),
            source: Some(writer),
            key: BTreeMap::new(),
            columns,
        }
    }

    fn verdict(tenant: &[Envelope], landlord: &[Envelope]) -> (State, Option<Side>) {
        let config = config();
        let v = compare(
            &config,
            &config.tables[0],
            Held::of("tenant_brandings", tenant),
            Held::of("tenant_brandings", landlord),
        );
        (v.state, v.repair.map(|e| e.origin.side))
    }

    #[test]
    fn equal_rows_are_consistent_although_their_key_columns_differ() {
        let t = held(Side::Tenant, Some("red"), 1, Side::Tenant);
        let l = held(Side::Landlord, Some("red"), 1, Side::Tenant);
        assert_eq!(verdict(&[t], &[l]), (State::Consistent, None));
        assert_eq!(verdict(&[], &[]), (State::Consistent, None));
    }

    #[test]
    fn a_row_on_one_side_only_is_named_after_that_side() {
        let t = held(Side::Tenant, Some("red"), 1, Side::Tenant);
        let l = held(Side::Landlord, Some("red"), 1, Side::Tenant);
        assert_eq!(
            verdict(std::slice::from_ref(&t), &[]),
            (State::TenantOnly, Some(Side::Tenant))
        );
        assert_eq!(
            verdict(&[], &[l]),
            (State::LandlordOnly, Some(Side::Landlord))
        );
        // An older tombstone on the other side does not change that.
        let old_delete = held(Side::Landlord, None, 0, Side::Landlord);
        assert_eq!(
            verdict(&[t], &[old_delete]),
            (State::TenantOnly, Some(Side::Tenant))
        );
    }

    #[test]
    fn a_newer_delete_on_the_other_side_makes_the_row_the_older_side() {
        let t = held(Side::Tenant, Some("red"), 1, Side::Tenant);
        let delete = held(Side::Landlord, None, 2, Side::Landlord);
        let newer = Side::Landlord;
        assert_eq!(
            verdict(&[t], &[delete]),
            (State::Differs { newer }, Some(Side::Landlord))
        );
    }

    #[test]
    fn different_rows_name_the_newer_side_under_the_conflict_rule() {
        let t = held(Side::Tenant, Some("red"), 1, Side::Tenant);
        let l = held(Side::Landlord, Some("blue"), 2, Side::Landlord);
        let newer = Side::Landlord;
        assert_eq!(
            verdict(std::slice::from_ref(&t), &[l]),
            (State::Differs { newer }, Some(Side::Landlord))
        );
        // Equal versions: the tenant wins the tie, as in the applier's SQL.
        let tie = held(Side::Landlord, Some("blue"), 1, Side::Landlord);
        let newer = Side::Tenant;
        assert_eq!(
            verdict(&[t], &[tie]),
            (State::Differs { newer }, Some(Side::Tenant))
        );
    }

    #[test]
    fn same_version_other_data_is_repaired_from_the_side_that_wrote_it() {
        // A write that bypassed the triggers on the tenant side kept the
        // landlord's version: the landlord's data is the real one.
        let t = held(Side::Tenant, Some("bypass"), 1, Side::Landlord);
        let l = held(Side::Landlord, Some("blue"), 1, Side::Landlord);
        let newer = Side::Landlord;
        assert_eq!(
            verdict(&[t], &[l]),
            (State::Differs { newer }, Some(Side::Landlord))
        );
    }
}
