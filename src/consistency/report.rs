//! A check's result: one state per tenant, counts per state and the
//! inconsistency rate, as a table for people or JSON for pipelines.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::compare::State;
use crate::model::{Side, TenantId};
use crate::runtime::status::{status, CheckEntry};

/// One table's row of one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One tenant's result.
#[derive(Debug, Clone, Serialize)]
pub struct TenantReport {
    pub tenant: TenantId,
    pub slug: String,
    pub database: String,
    #[serde(skip)]
    pub state: State,
    /// The state's name (`State::name`).
    #[serde(rename = "state")]
    pub state_name: &'static str,
    /// For `differs`: the side whose version wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newer: Option<Side>,
    pub tables: Vec<TableReport>,
    /// Whether a repair made this tenant consistent.
    pub repaired: bool,
    /// Why it stays as it is (not repaired, unreachable, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Whether the tenant database holds a synced row (unknown when it
    /// could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_present: Option<bool>,
    /// Whether the landlord holds the tenant's row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landlord_present: Option<bool>,
}

impl TenantReport {
    pub(super) fn new(
        tenant: &crate::postgres::registry::Tenant,
        state: State,
        tables: Vec<TableReport>,
    ) -> Self {
        let newer = match state {
            State::Differs { newer } => Some(newer),
            _ => None,
        };
        TenantReport {
            tenant: tenant.id.clone(),
            slug: tenant.slug.clone(),
            database: tenant.database_name.clone(),
            state,
            state_name: state.name(),
            newer,
            tables,
            repaired: false,
            note: None,
            tenant_present: None,
            landlord_present: None,
        }
    }

    pub(super) fn set_state(&mut self, state: State) {
        self.state = state;
        self.state_name = state.name();
        self.newer = match state {
            State::Differs { newer } => Some(newer),
            _ => None,
        };
    }
}

/// A whole check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tenants: Vec<TenantReport>,
    /// Tenants per state name (every state listed, zeros included).
    pub counts: BTreeMap<&'static str, usize>,
    /// Divergent tenants over tenants whose two sides were compared
    /// (paused and unreachable ones are not in either number).
    pub inconsistent_ratio: f64,
    pub repaired: usize,
    pub duration_seconds: f64,
}

impl Report {
    pub(super) fn new(tenants: Vec<TenantReport>, duration: Duration) -> Self {
        let mut counts: BTreeMap<&'static str, usize> =
            State::ALL.iter().map(|s| (s.name(), 0)).collect();
        for tenant in &tenants {
            *counts.entry(tenant.state.name()).or_default() += 1;
        }
        let divergent = tenants.iter().filter(|t| t.state.is_divergent()).count();
        let compared = divergent + counts["consistent"];
        Report {
            inconsistent_ratio: if compared == 0 {
                0.0
            } else {
                divergent as f64 / compared as f64
            },
            repaired: tenants.iter().filter(|t| t.repaired).count(),
            counts,
            tenants,
            duration_seconds: duration.as_secs_f64(),
        }
    }

    /// Every tenant consistent (a paused or unreachable one is not).
    pub fn all_consistent(&self) -> bool {
        self.tenants.iter().all(|t| t.state == State::Consistent)
    }

    /// The closing line: counts per state and the inconsistency rate.
    pub fn summary(&self) -> String {
        let mut line = format!("{} tenants:", self.tenants.len());
        for (state, count) in &self.counts {
            let _ = write!(line, " {state} {count},");
        }
        let _ = write!(
            line,
            " inconsistent {:.1}%, repaired {}, {:.1} s",
            self.inconsistent_ratio * 100.0,
            self.repaired,
            self.duration_seconds
        );
        line
    }

    /// One line per tenant that is not consistent, then the summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let rows: Vec<&TenantReport> = self
            .tenants
            .iter()
            .filter(|t| t.state != State::Consistent || t.repaired)
            .collect();
        if !rows.is_empty() {
            let _ = writeln!(
                out,
                "{:<12} {:<20} {:<22} {:<8} detail",
                "tenant", "slug", "state", "repaired"
            );
        }
        for tenant in rows {
            let state = match tenant.newer {
                Some(newer) => format!("{} ({newer} newer)", tenant.state_name),
                None => tenant.state_name.to_string(),
            };
            let mut detail: Vec<String> = tenant
                .tables
                .iter()
                .filter(|t| !t.detail.is_empty())
                .map(|t| format!("{}: {}", t.table, t.detail))
                .collect();
            detail.extend(tenant.note.clone());
            let _ = writeln!(
                out,
                "{:<12} {:<20} {:<22} {:<8} {}",
                tenant.tenant.as_str(),
                tenant.slug,
                state,
                if tenant.repaired { "yes" } else { "no" },
                detail.join("; ")
            );
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// Every tenant's result on the status board (for `/status`).
    pub fn publish_tenants(&self) {
        let now = std::time::SystemTime::now();
        for tenant in &self.tenants {
            let entry = CheckEntry {
                state: tenant.state_name,
                tenant_present: tenant.tenant_present,
                landlord_present: tenant.landlord_present,
                at: now,
                note: tenant.note.clone(),
            };
            status().set_check(&tenant.tenant, entry);
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
