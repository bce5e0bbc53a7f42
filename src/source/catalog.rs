//! Type names for a reader, from its source database's catalog, over an
//! ordinary connection that is opened when a relation needs a name and
//! closed once idle: hundreds of readers on one server must not each hold
//! an ordinary connection next to their replication connection. Names are
//! cached for the stream's life.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::changes::TypeNames;
use super::ReaderError;
use crate::config::Dsn;
use crate::postgres::{connect, type_name};

/// An ordinary connection unused this long is closed.
const IDLE: Duration = Duration::from_secs(5);

pub(crate) struct Catalog {
    dsn: Dsn,
    database: String,
    client: Option<Client>,
    last_used: Instant,
    names: HashMap<(u32, i32), String>,
}

impl Catalog {
    /// Starts with `client` (the reader's start-up connection, for the
    /// relations that arrive first).
    pub(crate) fn new(dsn: Dsn, database: &str, client: Client) -> Self {
        Catalog {
            dsn,
            database: database.to_string(),
            client: Some(client),
            last_used: Instant::now(),
            names: HashMap::new(),
        }
    }

    /// Closes the connection when it has been idle a while.
    pub(crate) fn close_if_idle(&mut self) {
        if self.client.is_some() && self.last_used.elapsed() >= IDLE {
            self.client = None;
        }
    }

    async fn client(&mut self) -> Result<&Client, ReaderError> {
        self.last_used = Instant::now();
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => connect(&self.dsn, &self.database).await?,
        };
        Ok(self.client.insert(client))
    }
}

impl TypeNames for Catalog {
    async fn type_name(&mut self, oid: u32, modifier: i32) -> Result<String, ReaderError> {
        if let Some(name) = self.names.get(&(oid, modifier)) {
            return Ok(name.clone());
        }
        let database = self.database.clone();
        let client = self.client().await?;
        let name = type_name(client, &database, oid, modifier).await?;
        self.names.insert((oid, modifier), name.clone());
        Ok(name)
    }
}
