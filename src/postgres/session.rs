//! What every connection of the bridge to PostgreSQL agrees on, whatever the
//! server or the database is configured with: the text formats values and
//! versions are read and written in, and the timeouts that keep a silent or
//! vanished server from stalling the bridge.
//!
//! ```text
//!  DateStyle = ISO, MDY     IntervalStyle = postgres     TimeZone = UTC
//!  extra_float_digits = 3   (floats round-trip exactly)
//!  connect timeout · TCP keepalives · statement_timeout (ordinary connections)
//! ```
//! A database with `DateStyle = 'SQL, DMY'` or a local time zone would
//! otherwise hand the bridge dates it reads back differently on the other
//! side. Ordinary connections and the replication client both use these.

use std::sync::OnceLock;
use std::time::Duration;

use crate::config::PostgresConfig;

/// Settings that fix the text form of values, as startup parameters.
pub(crate) const TEXT_FORMATS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
];

/// The connection settings of this process (`postgres.*` in the file).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) tcp_keepalive: Duration,
}

static SETTINGS: OnceLock<SessionSettings> = OnceLock::new();

/// Takes the configured settings (once, at start).
pub fn configure(config: &PostgresConfig) {
    let _ = SETTINGS.set(SessionSettings {
        connect_timeout: config.connect_timeout,
        statement_timeout: config.statement_timeout,
        tcp_keepalive: config.tcp_keepalive,
    });
}

/// The settings in force (the defaults when `configure` was not called).
pub(crate) fn settings() -> SessionSettings {
    *SETTINGS.get_or_init(|| {
        let defaults = PostgresConfig::default();
        SessionSettings {
            connect_timeout: defaults.connect_timeout,
            statement_timeout: defaults.statement_timeout,
            tcp_keepalive: defaults.tcp_keepalive,
        }
    })
}

/// Applies the settings to a parsed DSN for an ordinary connection. The
/// DSN's own `connect_timeout` and `options` are kept; ours come after its
/// options, so they win where both set the same parameter.
pub(crate) fn apply(config: &mut tokio_postgres::Config) {
    let settings = settings();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(settings.connect_timeout);
    }
    config
        .keepalives(true)
        .keepalives_idle(settings.tcp_keepalive)
        .keepalives_interval(keepalive_interval(settings.tcp_keepalive))
        .keepalives_retries(3);
    let mut options = config.get_options().map(str::to_string).unwrap_or_default();
    for (name, value) in startup_options(settings.statement_timeout) {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c {name}={}", escape_option(&value)));
    }
    config.options(&options);
}

/// Probes after the idle time come at a third of it (at least 1 s).
pub(crate) fn keepalive_interval(idle: Duration) -> Duration {
    (idle / 3).max(Duration::from_secs(1))
}

/// The text formats plus the statement timeout, as `-c` options.
fn startup_options(statement_timeout: Duration) -> Vec<(&'static str, String)> {
    let mut options: Vec<(&str, String)> = TEXT_FORMATS
        .iter()
        .map(|(name, value)| (*name, value.to_string()))
        .collect();
    options.push((
        "statement_timeout",
        format!("{}", statement_timeout.as_millis()),
    ));
    options
}

/// In `options`, a space inside a value must be escaped with a backslash.
fn escape_option(value: &str) -> String {
    value.replace('\\', "\\\\").replace(' ', "\\ ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_pin_formats_and_keep_the_dsns_own() {
        let mut config: tokio_postgres::Config = "host=x dbname=y options='-c search_path=app'"
            .parse()
            .unwrap();
        apply(&mut config);
        let options = config.get_options().unwrap();
        assert!(options.starts_with("-c search_path=app "), "{options}");
        assert!(options.contains("-c DateStyle=ISO,\\ MDY"), "{options}");
        assert!(options.contains("-c TimeZone=UTC"), "{options}");
        assert!(options.contains("-c extra_float_digits=3"), "{options}");
        assert!(options.contains("-c statement_timeout=60000"), "{options}");
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert!(config.get_keepalives());
    }

    #[test]
    fn a_dsn_connect_timeout_is_kept() {
        let mut config: tokio_postgres::Config = "host=x connect_timeout=3".parse().unwrap();
        apply(&mut config);
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }
}
