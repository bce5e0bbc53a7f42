//! Secrets in the configuration, redacted by construction: a [`Secret`]
//! (token, password) never prints its value; a [`Dsn`] (connection string)
//! prints only what a real connection-string parser found it points at
//! (hosts, ports, database, user), never a copy of its text; Kafka client
//! settings ([`ClientSettings`]) hide every value whose key names a
//! password, secret, token or key. So no `Debug`, `Display`, error or log
//! line can carry a secret, whatever form it was written in (quoted values,
//! spaces around `=`, URL credentials, URL query parameters).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// What a redacted value prints as.
pub const REDACTED: &str = "***";

/// A value that must never reach a log line or a status page.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for handing to a client library and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// A libpq-style connection string, key/value (`host=… password='…'`) or
/// URL (`postgres://user:pass@host/db?password=…`); it may carry a password.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Dsn(String);

impl Dsn {
    pub fn new(value: impl Into<String>) -> Self {
        Dsn(value.into())
    }

    /// The real text, for handing to a client library and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Where it points, rebuilt from the parsed parts (no password, nothing
    /// copied from the text); `<invalid connection string>` when it does not
    /// parse.
    pub fn describe(&self) -> String {
        let Ok(parsed) = self.0.parse::<tokio_postgres::Config>() else {
            return "<invalid connection string>".to_string();
        };
        let mut parts = Vec::new();
        for host in parsed.get_hosts() {
            match host {
                tokio_postgres::config::Host::Tcp(name) => parts.push(format!("host={name}")),
                tokio_postgres::config::Host::Unix(path) => {
                    parts.push(format!("host={}", path.display()))
                }
            }
        }
        for port in parsed.get_ports() {
            parts.push(format!("port={port}"));
        }
        if let Some(dbname) = parsed.get_dbname() {
            parts.push(format!("dbname={dbname}"));
        }
        if let Some(user) = parsed.get_user() {
            parts.push(format!("user={user}"));
        }
        if parsed.get_password().is_some() {
            parts.push(format!("password={REDACTED}"));
        }
        parts.join(" ")
    }
}

impl Dsn {
    /// The server it points at, `host:port` of its first host (for
    /// per-server connection limits); `<invalid>` when it does not parse.
    pub fn server(&self) -> String {
        let Ok(parsed) = self.0.parse::<tokio_postgres::Config>() else {
            return "<invalid>".to_string();
        };
        let host = match parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = parsed.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// `user@host:port/database` (no password): connections with one
    /// identity reach the same data with the same rights.
    pub fn identity(&self) -> String {
        let Ok(parsed) = self.0.parse::<tokio_postgres::Config>() else {
            return "<invalid>".to_string();
        };
        let user = parsed.get_user().unwrap_or_default();
        let database = parsed.get_dbname().unwrap_or(user);
        format!("{user}@{}/{database}", self.server())
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({})", self.describe())
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Serialize for Dsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.describe())
    }
}

/// librdkafka settings passed through (`[kafka.client]`).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ClientSettings(BTreeMap<String, String>);

impl ClientSettings {
    /// Every setting with its real value, for librdkafka and nowhere else.
    pub fn expose(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The settings with every secret value replaced by `***`.
    fn redacted(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(key, value)| {
                let shown = if names_a_secret(key) {
                    REDACTED
                } else {
                    value.as_str()
                };
                (key.as_str(), shown)
            })
            .collect()
    }
}

/// A librdkafka key whose value is (or locates) a credential:
/// `sasl.password`, `ssl.key.password`, `ssl.keystore.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, `sasl.jaas.config`…
fn names_a_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key", "jaas", "credential"]
        .iter()
        .any(|word| key.contains(word))
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl Serialize for ClientSettings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.redacted().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way a password can be written in a connection string.
    const DSN_FORMS: &[(&str, &str)] = &[
        ("host=db dbname=app user=u password=plainpw", "plainpw"),
        ("host=db dbname=app user=u password='with space'", "space"),
        ("host=db dbname=app user=u password = spacedpw", "spacedpw"),
        (r"host=db dbname=app user=u password='quo\'tedpw'", "tedpw"),
        ("postgresql://u:urlpw@db:5433/app", "urlpw"),
        (
            "postgresql://u@db/app?password=querypw&sslmode=disable",
            "querypw",
        ),
        ("postgres://u:p%40ss@db/app", "p%40ss"),
    ];

    #[test]
    fn no_form_of_dsn_password_is_ever_printed() {
        for (dsn, password) in DSN_FORMS {
            let dsn = Dsn::new(*dsn);
            let printed = format!(
                "{dsn} {dsn:?} {}",
                toml::to_string(&dsn).unwrap_or_default()
            );
            assert!(!printed.contains(password), "{printed}");
            assert!(
                printed.contains("db"),
                "still says where it points: {printed}"
            );
            assert!(
                printed.contains(REDACTED),
                "says a password is set: {printed}"
            );
        }
    }

    #[test]
    fn an_identity_names_user_server_and_database_but_no_password() {
        for (dsn, password) in DSN_FORMS {
            let identity = Dsn::new(*dsn).identity();
            assert!(!identity.contains(password), "{identity}");
            assert!(identity.starts_with("u@db:"), "{identity}");
        }
        let url = Dsn::new("postgresql://u:pw@db:5433/app").identity();
        assert_eq!(url, "u@db:5433/app");
        let keywords = Dsn::new("host=db port=5433 dbname=app user=u password=x");
        assert_eq!(
            keywords.identity(),
            url,
            "one identity however it is written"
        );
        assert_ne!(Dsn::new("host=db dbname=other user=u").identity(), url);
    }

    #[test]
    fn a_broken_connection_string_is_not_echoed() {
        let dsn = Dsn::new("host=db password='unterminated");
        assert_eq!(dsn.to_string(), "<invalid connection string>");
    }

    #[test]
    fn a_template_still_describes_its_placeholder() {
        let dsn = Dsn::new("host=db dbname={database_name} password=tpl");
        assert_eq!(
            dsn.to_string(),
            "host=db dbname={database_name} password=***"
        );
    }

    #[test]
    fn secrets_and_credential_settings_print_redacted() {
        let token = Secret::new("tok3n");
        assert_eq!(format!("{token} {token:?}"), "*** Secret(***)");
        let client: ClientSettings = toml::from_str::<BTreeMap<String, String>>(
            r#""sasl.password" = "saslpw"
               "ssl.key.password" = "keypw"
               "sasl.oauthbearer.client.secret" = "oauthpw"
               "security.protocol" = "SASL_SSL""#,
        )
        .map(ClientSettings)
        .unwrap();
        let printed = format!("{client:?}");
        for hidden in ["saslpw", "keypw", "oauthpw"] {
            assert!(!printed.contains(hidden), "{printed}");
        }
        assert!(printed.contains("SASL_SSL"), "{printed}");
    }
}
