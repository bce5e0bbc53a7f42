//! The byte stream under a replication connection: TCP (with TLS when the
//! DSN asks and a root certificate is configured) or a Unix socket.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::ReplicationError;
use crate::postgres::session;

/// Whatever carries the protocol.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(super) async fn open_stream(
    config: &tokio_postgres::Config,
) -> Result<Box<dyn Stream>, ReplicationError> {
    use tokio_postgres::config::Host;
    let host = config
        .get_hosts()
        .first()
        .cloned()
        .unwrap_or(Host::Tcp("localhost".into()));
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let settings = session::settings();
    let connect_timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(settings.connect_timeout);
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
            // A vanished server is noticed even while the stream is idle.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(settings.tcp_keepalive)
                .with_interval(session::keepalive_interval(settings.tcp_keepalive))
                .with_retries(3);
            socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
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
    let Some(tls) = crate::postgres::tls::client_config().filter(|_| mode != SslMode::Disable)
    else {
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
    let name = crate::postgres::tls::server_name(host)
        .ok_or_else(|| ReplicationError::Dsn(format!("{host} is not a valid TLS server name")))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    Ok(Box::new(stream))
}
