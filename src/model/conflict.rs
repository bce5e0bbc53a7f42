//! Conflict resolution: last writer wins on (version, side), with the side
//! as a deterministic tie-break (`tenant` > `landlord`). The applier's SQL
//! enforces exactly this rule inside the target database (see `target`), so
//! a concurrent write cannot slip between a check and a write; this module
//! is the rule in plain Rust, for reasoning, tests and the consistency check.
//!
//! ```text
//!   incoming (v, s)  vs  current row (cv, cs)       ─► apply if (v, s) > (cv, cs)
//!   incoming (v, s)  vs  no row, tombstone (tv, ts) ─► apply if (v, s) > (tv, ts)
//!   incoming (v, s)  vs  no row, no tombstone       ─► apply
//! ```
//! A delete is an incoming change like any other, with the delete's version;
//! when it wins it removes the row and leaves a tombstone with its version,
//! so an older update arriving later cannot bring the row back.

use std::cmp::Ordering;

use crate::model::Side;

/// A row version: the version timestamp in microseconds since the Unix
/// epoch, and the side that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub micros: i64,
    pub side: Side,
}

fn side_rank(side: Side) -> u8 {
    // Matches the SQL comparison of the side names as text: 'landlord' < 'tenant'.
    match side {
        Side::Landlord => 0,
        Side::Tenant => 1,
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.micros, side_rank(self.side)).cmp(&(other.micros, side_rank(other.side)))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Version {
    /// The version an envelope carries and the side that wrote it; `None`
    /// when it has none or it cannot be read.
    pub fn of(envelope: &crate::model::Envelope) -> Option<Version> {
        let micros = parse_version(envelope.version.as_deref()?)?;
        Some(Version {
            micros,
            side: envelope.source.unwrap_or(envelope.origin.side),
        })
    }
}

/// What the target holds for the row's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    /// The row exists with this version.
    Row(Version),
    /// The row was deleted at this version.
    Tombstone(Version),
    /// Neither a row nor a tombstone (never existed, or tombstone expired).
    Absent,
}

/// The applier's decision for one incoming change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Apply,
    /// The target already holds a newer (or the same) version.
    Stale,
}

/// Last writer wins: the incoming change applies only when it is strictly
/// newer than what the target holds.
pub fn decide(incoming: Version, target: TargetState) -> Decision {
    let current = match target {
        TargetState::Row(v) | TargetState::Tombstone(v) => v,
        TargetState::Absent => return Decision::Apply,
    };
    if incoming > current {
        Decision::Apply
    } else {
        Decision::Stale
    }
}

/// A version as PostgreSQL prints a `timestamptz` in UTC with `DateStyle
/// ISO` (what every bridge session pins): `2026-01-02 03:04:05.123456+00`,
/// in microseconds since the Unix epoch; `infinity` and `-infinity` are the
/// extremes. `None` for anything else.
pub fn parse_version(text: &str) -> Option<i64> {
    match text {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let text = text
        .strip_suffix("+00")
        .or_else(|| text.strip_suffix("+00:00"))
        .or_else(|| text.strip_suffix('Z'))?;
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':');
    let hours: i64 = clock_parts.next()?.parse().ok()?;
    let minutes: i64 = clock_parts.next()?.parse().ok()?;
    let seconds: i64 = clock_parts.next()?.parse().ok()?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = format!("{fraction:0<6}").parse().ok()?;
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hours < 24
        && minutes < 60
        && seconds < 61;
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hours) * 60 + minutes) * 60_000_000 + seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use Side::*;
    use TargetState::*;

    fn v(micros: i64, side: Side) -> Version {
        Version { micros, side }
    }

    #[test]
    fn every_case_of_the_rule() {
        let cases = [
            (
                "newer update over a row",
                v(20, Landlord),
                Row(v(10, Tenant)),
                Apply,
            ),
            (
                "older update over a row",
                v(10, Landlord),
                Row(v(20, Tenant)),
                Stale,
            ),
            (
                "equal version, tenant beats landlord",
                v(10, Tenant),
                Row(v(10, Landlord)),
                Apply,
            ),
            (
                "equal version, landlord loses to tenant",
                v(10, Landlord),
                Row(v(10, Tenant)),
                Stale,
            ),
            (
                "same version and side again (redelivery)",
                v(10, Tenant),
                Row(v(10, Tenant)),
                Stale,
            ),
            (
                "newer delete over a row",
                v(30, Tenant),
                Row(v(20, Landlord)),
                Apply,
            ),
            (
                "older delete loses to a newer update",
                v(15, Tenant),
                Row(v(20, Landlord)),
                Stale,
            ),
            (
                "older update cannot resurrect a deleted row",
                v(15, Landlord),
                Tombstone(v(20, Tenant)),
                Stale,
            ),
            (
                "newer insert after a delete",
                v(25, Landlord),
                Tombstone(v(20, Tenant)),
                Apply,
            ),
            (
                "tie with a tombstone, tenant wins",
                v(20, Tenant),
                Tombstone(v(20, Landlord)),
                Apply,
            ),
            ("first change of a row", v(1, Landlord), Absent, Apply),
        ];
        for (name, incoming, target, expected) in cases {
            assert_eq!(decide(incoming, target), expected, "{name}");
        }
    }

    #[test]
    fn versions_parse_as_postgres_prints_them() {
        assert_eq!(parse_version("1970-01-01 00:00:00+00"), Some(0));
        assert_eq!(parse_version("1970-01-01 00:00:01.5+00"), Some(1_500_000));
        assert_eq!(
            parse_version("2026-12-01 20:38:08.123456+00"),
            Some(1_796_157_488_123_456)
        );
        assert_eq!(
            parse_version("2000-02-29T12:00:00+00:00"),
            Some(951_825_600_000_000)
        );
        assert_eq!(
            parse_version("2000-02-29T12:00:00Z"),
            Some(951_825_600_000_000)
        );
        assert_eq!(parse_version("infinity"), Some(i64::MAX));
        assert_eq!(parse_version("-infinity"), Some(i64::MIN));
        for bad in [
            "",
            "2026-13-01 00:00:00+00",
            "2026-01-01 00:00:00",
            "2026-01-01 00:00:00+02",
            "x",
        ] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_order_by_time_then_side() {
        assert!(v(1, Tenant) < v(2, Landlord));
        assert!(v(2, Landlord) < v(2, Tenant));
        let mut all = vec![v(2, Tenant), v(1, Landlord), v(2, Landlord), v(1, Tenant)];
        all.sort();
        assert_eq!(
            all,
            vec![v(1, Landlord), v(1, Tenant), v(2, Landlord), v(2, Tenant)]
        );
    }
}
