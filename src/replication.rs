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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::lsn::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

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

    /// Errors that retrying cannot fix (bad credentials, missing objects,
    /// misconfiguration); everything else is treated as transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            ReplicationError::Dsn(_) | ReplicationError::Auth(_) => true,
            ReplicationError::Server { code, .. } => {
                // 28: invalid authorization, 42: syntax/undefined object, 55000: wal_level.
                code.starts_with("28") || code.starts_with("42") || code == "55000"
            }
            _ => false,
        }
    }
}

/// One message of the replication stream.
#[derive(Debug)]
pub enum StreamMessage {
    /// WAL data: one `pgoutput` message.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        data: Bytes,
    },
    /// The server's heartbeat; `reply_requested` must be answered at once.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

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
        let stream = open_stream(&config).await?;
        let mut conn = ReplicationConnection {
            stream,
            read_buf: BytesMut::with_capacity(256 * 1024),
            write_buf: BytesMut::with_capacity(1024),
        };
        conn.startup(&config).await?;
        Ok(conn)
    }

    async fn startup(&mut self, config: &tokio_postgres::Config) -> Result<(), ReplicationError> {
        let user = config
            .get_user()
            .ok_or_else(|| ReplicationError::Dsn("no user given".into()))?;
        let dbname = config.get_dbname().unwrap_or(user);
        let params = [
            ("user", user),
            ("database", dbname),
            ("replication", "database"),
            ("application_name", "cdc-bridge"),
            ("client_encoding", "UTF8"),
            // Version timestamps then print in one zone everywhere.
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO"),
        ];
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

async fn open_stream(config: &tokio_postgres::Config) -> Result<Box<dyn Stream>, ReplicationError> {
    use tokio_postgres::config::Host;
    let host = config
        .get_hosts()
        .first()
        .cloned()
        .unwrap_or(Host::Tcp("localhost".into()));
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let connect_timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let stream: Box<dyn Stream> = match host {
        Host::Tcp(name) => {
            let tcp =
                tokio::time::timeout(connect_timeout, TcpStream::connect((name.as_str(), port)))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("connecting to {name}:{port} timed out"),
                        )
                    })??;
            tcp.set_nodelay(true)?;
            negotiate_tls(tcp, &name, config.get_ssl_mode()).await?
        }
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            Box::new(UnixStream::connect(path).await?)
        }
    };
    Ok(stream)
}

/// SSLRequest, then a TLS handshake if the server agrees (see `tls`).
/// `sslmode=require` fails when TLS cannot be had; `prefer` falls back.
async fn negotiate_tls(
    mut tcp: TcpStream,
    host: &str,
    mode: tokio_postgres::config::SslMode,
) -> Result<Box<dyn Stream>, ReplicationError> {
    use tokio_postgres::config::SslMode;
    let required = mode == SslMode::Require;
    let Some(tls) = crate::tls::client_config().filter(|_| mode != SslMode::Disable) else {
        if required {
            return Err(ReplicationError::Dsn(
                "sslmode=require needs postgres.tls_root_cert in the configuration".into(),
            ));
        }
        return Ok(Box::new(tcp));
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        if required {
            return Err(ReplicationError::Auth(format!(
                "server {host} does not offer TLS but sslmode=require"
            )));
        }
        return Ok(Box::new(tcp));
    }
    let name = crate::tls::server_name(host)
        .ok_or_else(|| ReplicationError::Dsn(format!("{host} is not a valid TLS server name")))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    Ok(Box::new(stream))
}

/// Splits one complete backend message (tag, body) off the buffer.
fn split_frame(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, ReplicationError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(ReplicationError::Protocol(format!(
            "message length {len} is below 4"
        )));
    }
    if buf.len() < len + 1 {
        buf.reserve(len + 1 - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(len + 1);
    let tag = frame[0];
    frame.advance(5);
    Ok(Some((tag, frame.freeze())))
}

fn parse_copy_data(mut body: Bytes) -> Result<StreamMessage, ReplicationError> {
    ensure_len(&body, 1)?;
    match body.get_u8() {
        b'w' => {
            ensure_len(&body, 24)?;
            let wal_start = Lsn(body.get_u64());
            let wal_end = Lsn(body.get_u64());
            let _send_time = body.get_i64();
            Ok(StreamMessage::XLogData {
                wal_start,
                wal_end,
                data: body,
            })
        }
        b'k' => {
            ensure_len(&body, 17)?;
            let wal_end = Lsn(body.get_u64());
            let _send_time = body.get_i64();
            Ok(StreamMessage::Keepalive {
                wal_end,
                reply_requested: body.get_u8() == 1,
            })
        }
        other => Err(ReplicationError::Protocol(format!(
            "unknown CopyData kind {:?}",
            other as char
        ))),
    }
}

fn parse_data_row(mut body: Bytes) -> Result<Vec<Option<String>>, ReplicationError> {
    ensure_len(&body, 2)?;
    let count = body.get_i16().max(0) as usize;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let len = read_i32(&mut body)?;
        if len < 0 {
            values.push(None);
            continue;
        }
        ensure_len(&body, len as usize)?;
        let raw = body.split_to(len as usize);
        let text = String::from_utf8(raw.to_vec())
            .map_err(|_| ReplicationError::Protocol("non-UTF-8 value in DataRow".into()))?;
        values.push(Some(text));
    }
    Ok(values)
}

fn server_error(body: Bytes) -> ReplicationError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let value = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            _ => {}
        }
    }
    ReplicationError::Server {
        code,
        message,
        detail,
    }
}

fn unexpected(tag: u8, phase: &str) -> ReplicationError {
    ReplicationError::Protocol(format!(
        "unexpected message {:?} during {phase}",
        tag as char
    ))
}

fn ensure_len(body: &Bytes, needed: usize) -> Result<(), ReplicationError> {
    if body.remaining() < needed {
        return Err(ReplicationError::Protocol(format!(
            "message too short: needed {needed} more bytes, have {}",
            body.remaining()
        )));
    }
    Ok(())
}

fn read_i32(body: &mut Bytes) -> Result<i32, ReplicationError> {
    ensure_len(body, 4)?;
    Ok(body.get_i32())
}

fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    unix - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn splits_frames_only_when_complete() {
        let bytes = frame(b'd', b"kpayload");
        let mut buf = BytesMut::from(&bytes[..6]);
        assert!(split_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[6..]);
        let (tag, body) = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(tag, b'd');
        assert_eq!(&body[..], b"kpayload");
        assert!(buf.is_empty());
    }

    #[test]
    fn decodes_keepalive_with_reply_request() {
        let mut body = vec![b'k'];
        body.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.push(1);
        match parse_copy_data(Bytes::from(body)).unwrap() {
            StreamMessage::Keepalive {
                wal_end,
                reply_requested,
            } => {
                assert_eq!(wal_end.to_string(), "1/10");
                assert!(reply_requested);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_xlogdata_is_an_error_not_a_panic() {
        assert!(parse_copy_data(Bytes::from_static(b"w\0\0")).is_err());
        assert!(parse_copy_data(Bytes::new()).is_err());
    }

    #[test]
    fn server_error_keeps_sqlstate_and_detail() {
        let err = server_error(Bytes::from_static(
            b"SERROR\0C42704\0Mreplication slot \"x\" does not exist\0Dmore\0\0",
        ));
        assert_eq!(err.sql_state(), Some("42704"));
        assert!(err.is_permanent());
        assert!(err.to_string().contains("does not exist (more)"));
    }

    #[test]
    fn data_row_keeps_nulls() {
        let mut body = vec![0, 2];
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"hi");
        let row = parse_data_row(Bytes::from(body)).unwrap();
        assert_eq!(row, vec![None, Some("hi".to_string())]);
    }
}
