//! Type names for a reader, from its source database's catalog, over an
//! ordinary connection that is open only while names are needed: hundreds
//! of readers on one server must not each hold an ordinary connection next
//! to their replication connection.
//!
//! * Built-in types (oid below 16384) have the same name in every database
//!   of a server: they are looked up once per server and process.
//! * A reader holds an ordinary connection only with one of the server's
//!   few permits (`READER_CONNECTIONS_PER_SERVER`, shared with starting
//!   readers), and
//!   closes it once idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use super::changes::TypeNames;
use super::ReaderError;
use crate::config::Dsn;
use crate::postgres::{connect, type_name};

/// A catalog connection unused this long is closed (checked on every
/// status tick).
const IDLE: Duration = Duration::from_secs(2);

/// Ordinary connections readers may hold on one server at once (starting
/// readers and catalog look-ups together).
pub(crate) const READER_CONNECTIONS_PER_SERVER: usize = 4;

/// Oids below this are PostgreSQL's own (`FirstNormalObjectId`).
const FIRST_USER_OID: u32 = 16384;

/// Waits for one of `server`'s permits to hold an ordinary connection.
pub(crate) async fn server_permit(server: &str) -> Option<OwnedSemaphorePermit> {
    static SERVERS: OnceLock<Mutex<HashMap<String, Arc<Semaphore>>>> = OnceLock::new();
    let semaphore = {
        let mut servers = SERVERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = servers.entry(server.to_string());
        Arc::clone(entry.or_insert_with(|| Arc::new(Semaphore::new(READER_CONNECTIONS_PER_SERVER))))
    };
    // Only a closed semaphore refuses, and these are never closed.
    semaphore.acquire_owned().await.ok()
}

/// Built-in type names by (server, oid, modifier).
type BuiltinNames = Mutex<HashMap<(String, u32, i32), String>>;

fn builtin_names() -> &'static BuiltinNames {
    static NAMES: OnceLock<BuiltinNames> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// An open catalog connection and the permit it holds.
struct Open {
    client: Client,
    _permit: Option<OwnedSemaphorePermit>,
}

pub(crate) struct Catalog {
    dsn: Dsn,
    server: String,
    database: String,
    open: Option<Open>,
    last_used: Instant,
    names: HashMap<(u32, i32), String>,
}

impl Catalog {
    /// A catalog of `database`, without a connection until one is needed.
    pub(crate) fn new(dsn: Dsn, database: &str) -> Self {
        Catalog {
            server: dsn.server(),
            dsn,
            database: database.to_string(),
            open: None,
            last_used: Instant::now(),
            names: HashMap::new(),
        }
    }

    /// Closes the connection (and frees its permit) once idle.
    pub(crate) fn close_if_idle(&mut self) {
        if self.open.is_some() && self.last_used.elapsed() >= IDLE {
            self.open = None;
        }
    }

    async fn client(&mut self) -> Result<&Client, ReaderError> {
        self.last_used = Instant::now();
        let open = match self.open.take() {
            Some(open) if !open.client.is_closed() => open,
            _ => {
                let permit = server_permit(&self.server).await;
                let client = connect(&self.dsn, &self.database).await?;
                Open {
                    client,
                    _permit: permit,
                }
            }
        };
        Ok(&self.open.insert(open).client)
    }

    fn cached(&self, oid: u32, modifier: i32) -> Option<String> {
        if let Some(name) = self.names.get(&(oid, modifier)) {
            return Some(name.clone());
        }
        let names = builtin_names()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        names.get(&(self.server.clone(), oid, modifier)).cloned()
    }

    fn remember(&mut self, oid: u32, modifier: i32, name: &str) {
        if oid < FIRST_USER_OID {
            let mut names = builtin_names()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            names.insert((self.server.clone(), oid, modifier), name.to_string());
        }
        self.names.insert((oid, modifier), name.to_string());
    }
}

impl TypeNames for Catalog {
    async fn type_name(&mut self, oid: u32, modifier: i32) -> Result<String, ReaderError> {
        if let Some(name) = self.cached(oid, modifier) {
            return Ok(name);
        }
        let database = self.database.clone();
        let client = self.client().await?;
        let name = type_name(client, &database, oid, modifier).await?;
        self.remember(oid, modifier, &name);
        Ok(name)
    }
}
