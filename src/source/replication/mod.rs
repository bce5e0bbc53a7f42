//! A lean client for PostgreSQL's streaming replication protocol, written on
//! `postgres-protocol`'s message encoders (upstream `tokio-postgres` cannot
//! enter CopyBoth mode).
//!
//! ```text
//!  bridge                                   walsender
//!    │ StartupMessage(replication=database)    │
//!    │ ─────────────────────────────────────►  │  authentication (trust, password, md5, SCRAM)
//!    │ CREATE_REPLICATION_SLOT … (SNAPSHOT 'export')   only on the first start
//!    │ START_REPLICATION SLOT s LOGICAL lsn (proto_version '1', publication_names 'p')
//!    │ ◄──────────────── CopyBothResponse ───  │
//!    │ ◄── CopyData 'w' XLogData(pgoutput) ──  │  Begin, Relation, Insert, …, Commit
//!    │ ◄── CopyData 'k' keepalive ───────────  │  reply requested? answer at once
//!    │ ── CopyData 'r' standby status ──────►  │  write/flush/apply = confirmed LSN
//! ```
//!
//! The flush position we report is the only thing that lets the server drop
//! WAL and is where a restarted slot resumes, so it is only ever fed from the
//! acknowledgement tracker (see `progress`).

mod frames;
mod transport;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::Lsn;
use crate::postgres::class_of_sqlstate;
use crate::postgres::session::{self, TEXT_FORMATS};
use crate::runtime::retry::{Classify, ErrorClass};
use frames::{
    ensure_len, parse_copy_data, parse_data_row, pg_now_micros, read_i32, server_error,
    split_frame, unexpected,
};
use transport::{open_stream, Stream};

/// A failure of the replication connection.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("replication connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid connection string: {0}")]
    Dsn(String),
    #[error("server error {code}: {message}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Server {
        /// SQLSTATE, used to classify the error (never the message text).
        code: String,
        message: String,
        detail: Option<String>,
    },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the server closed the replication connection")]
    Closed,
}

impl ReplicationError {
    /// SQLSTATE of a server error, if this is one.
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl Classify for ReplicationError {
    /// Server errors by SQLSTATE class; a bad DSN, failed authentication or
    /// a protocol violation need an operator; I/O is transient.
    fn class(&self) -> ErrorClass {
        match self {
            ReplicationError::Server { code, .. } => class_of_sqlstate(code),
            ReplicationError::Dsn(_)
            | ReplicationError::Auth(_)
            | ReplicationError::Protocol(_) => ErrorClass::Permanent,
            ReplicationError::Io(_) | ReplicationError::Closed => ErrorClass::Transient,
        }
    }
}

/// One message of the replication stream.
#[derive(Debug)]
pub enum StreamMessage {
    /// WAL data: one `pgoutput` message.
    XLogData {
        /// The server's current end of WAL (for the lag metric).
        wal_end: Lsn,
        data: Bytes,
    },
    /// The server's heartbeat; `reply_requested` must be answered at once.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

/// A connection in replication mode (`replication=database`).
pub struct ReplicationConnection {
    stream: Box<dyn Stream>,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

/// The result of `CREATE_REPLICATION_SLOT … (SNAPSHOT 'export')`.
#[derive(Debug, Clone)]
pub struct CreatedSlot {
    pub consistent_point: Lsn,
    /// Name to pass to `SET TRANSACTION SNAPSHOT`; valid until the next
    /// command on this connection.
    pub snapshot_name: String,
}

impl ReplicationConnection {
    /// Connects and authenticates with a libpq-style DSN.
    pub async fn connect(dsn: &str) -> Result<Self, ReplicationError> {
        let config: tokio_postgres::Config = dsn
            .parse()
            .map_err(|e: tokio_postgres::Error| ReplicationError::Dsn(e.to_string()))?;
        let limit = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(session::settings().connect_timeout);
        let connecting = async {
            let stream = open_stream(&config).await?;
            let mut conn = ReplicationConnection {
                stream,
                read_buf: BytesMut::with_capacity(256 * 1024),
                write_buf: BytesMut::with_capacity(1024),
            };
            conn.startup(&config).await?;
            Ok(conn)
        };
        // The whole handshake is bounded: a server that accepts TCP and
        // stays silent must not hold the reader forever.
        tokio::time::timeout(limit, connecting).await.map_err(|_| {
            ReplicationError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the server did not complete the connection within {} s",
                    limit.as_secs()
                ),
            ))
        })?
    }

    async fn startup(&mut self, config: &tokio_postgres::Config) -> Result<(), ReplicationError> {
        let user = config
            .get_user()
            .ok_or_else(|| ReplicationError::Dsn("no user given".into()))?;
        let dbname = config.get_dbname().unwrap_or(user);
        // The DSN's name, when it has one, tells instances apart in
        // pg_stat_replication.
        let application = config.get_application_name().unwrap_or("cdc-bridge");
        let mut params = vec![
            ("user", user),
            ("database", dbname),
            ("replication", "database"),
            ("application_name", application),
            ("client_encoding", "UTF8"),
        ];
        // The walsender prints row values with these (see `postgres::session`).
        params.extend(TEXT_FORMATS.iter().copied());
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        frontend::startup_message(params.iter().copied(), &mut self.write_buf)?;
        self.flush().await?;
        self.authenticate(user, config.get_password()).await?;
        self.wait_ready().await
    }

    async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&[u8]>,
    ) -> Result<(), ReplicationError> {
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            let (tag, mut body) = self.next_frame().await?;
            match tag {
                b'E' => return Err(server_error(body)),
                b'R' => {}
                other => return Err(unexpected(other, "authentication")),
            }
            let need_password = || {
                password.ok_or_else(|| {
                    ReplicationError::Auth(
                        "the server asks for a password and the DSN has none".into(),
                    )
                })
            };
            match read_i32(&mut body)? {
                0 => return Ok(()),
                3 => {
                    frontend::password_message(need_password()?, &mut self.write_buf)?;
                }
                5 => {
                    let mut salt = [0u8; 4];
                    ensure_len(&body, 4)?;
                    body.copy_to_slice(&mut salt);
                    let hash = md5_hash(user.as_bytes(), need_password()?, salt);
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                }
                10 => {
                    if !body.windows(13).any(|w| w == b"SCRAM-SHA-256") {
                        return Err(ReplicationError::Auth(
                            "server offers no supported SASL mechanism".into(),
                        ));
                    }
                    let client = sasl::ScramSha256::new(
                        need_password()?,
                        sasl::ChannelBinding::unsupported(),
                    );
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        client.message(),
                        &mut self.write_buf,
                    )?;
                    scram = Some(client);
                }
                11 => {
                    let client = scram.as_mut().ok_or_else(|| {
                        ReplicationError::Protocol("SASL continue before start".into())
                    })?;
                    client
                        .update(&body)
                        .map_err(|e| ReplicationError::Auth(e.to_string()))?;
                    frontend::sasl_response(client.message(), &mut self.write_buf)?;
                }
                12 => {
                    let client = scram.as_mut().ok_or_else(|| {
                        ReplicationError::Protocol("SASL final before start".into())
                    })?;
                    client
                        .finish(&body)
                        .map_err(|e| ReplicationError::Auth(e.to_string()))?;
                    continue;
                }
                code => {
                    return Err(ReplicationError::Auth(format!(
                        "unsupported authentication method {code}"
                    )))
                }
            }
            self.flush().await?;
        }
    }

    /// Runs a replication command or simple query and returns its rows as text.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        frontend::query(sql, &mut self.write_buf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.next_frame().await?;
            match tag {
                b'D' => rows.push(parse_data_row(body)?),
                b'E' => error = Some(server_error(body)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Creates a logical slot with the `pgoutput` plugin and exports its snapshot.
    pub async fn create_slot(&mut self, slot: &str) -> Result<CreatedSlot, ReplicationError> {
        let sql =
            format!("CREATE_REPLICATION_SLOT \"{slot}\" LOGICAL pgoutput (SNAPSHOT 'export')");
        let rows = self.simple_query(&sql).await?;
        let row = rows.first().ok_or_else(|| {
            ReplicationError::Protocol("CREATE_REPLICATION_SLOT returned no row".into())
        })?;
        let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let consistent_point = text(1)
            .parse()
            .map_err(|e| ReplicationError::Protocol(format!("consistent point: {e}")))?;
        Ok(CreatedSlot {
            consistent_point,
            snapshot_name: text(2),
        })
    }

    /// Enters CopyBoth mode; the server streams from the slot's confirmed
    /// position (or `start`, if later).
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
    ) -> Result<(), ReplicationError> {
        let sql = format!(
            "START_REPLICATION SLOT \"{slot}\" LOGICAL {start} (proto_version '1', publication_names '\"{publication}\"', messages 'true')"
        );
        frontend::query(&sql, &mut self.write_buf)?;
        self.flush().await?;
        loop {
            let (tag, body) = self.next_frame().await?;
            match tag {
                b'W' => return Ok(()),
                b'E' => return Err(server_error(body)),
                b'N' | b'S' => continue,
                other => return Err(unexpected(other, "START_REPLICATION")),
            }
        }
    }

    /// Next message of the stream. Cancel-safe: the only await point reads
    /// into the buffer, so a dropped call loses nothing.
    pub async fn next_message(&mut self) -> Result<StreamMessage, ReplicationError> {
        loop {
            let (tag, body) = self.next_frame().await?;
            match tag {
                b'd' => return parse_copy_data(body),
                b'E' => return Err(server_error(body)),
                b'c' => return Err(ReplicationError::Closed),
                b'N' => continue,
                other => return Err(unexpected(other, "streaming")),
            }
        }
    }

    /// Standby status update: everything up to `confirmed` is durably
    /// handled by us and may be released by the server.
    pub async fn send_status(&mut self, confirmed: Lsn) -> Result<(), ReplicationError> {
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(confirmed.0); // written
        payload.put_u64(confirmed.0); // flushed
        payload.put_u64(confirmed.0); // applied
        payload.put_i64(pg_now_micros());
        // We never ask the server to answer a status update.
        payload.put_u8(0);
        frontend::CopyData::new(payload.freeze())?.write(&mut self.write_buf);
        self.flush().await
    }

    /// Ends the stream politely (CopyDone + Terminate).
    pub async fn close(&mut self) {
        frontend::copy_done(&mut self.write_buf);
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
    }

    async fn wait_ready(&mut self) -> Result<(), ReplicationError> {
        loop {
            let (tag, body) = self.next_frame().await?;
            match tag {
                b'Z' => return Ok(()),
                b'E' => return Err(server_error(body)),
                _ => continue,
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ReplicationError> {
        self.stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        self.stream.flush().await?;
        Ok(())
    }

    async fn next_frame(&mut self) -> Result<(u8, Bytes), ReplicationError> {
        loop {
            if let Some(frame) = split_frame(&mut self.read_buf)? {
                return Ok(frame);
            }
            if self.read_buf.capacity() - self.read_buf.len() < 64 * 1024 {
                self.read_buf.reserve(256 * 1024);
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return Err(ReplicationError::Closed);
            }
        }
    }
}
