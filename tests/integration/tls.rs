//! TLS to PostgreSQL: with `sslmode=require` and `postgres.tls_root_cert`,
//! the replication and ordinary connections use TLS and verify the server.
//! The cluster here rejects the bridge's role on plain TCP, so syncing at
//! all proves TLS; a certificate from another CA, or for another host
//! name, is refused.

use std::path::Path;
use std::process::Command;

use tokio_postgres::Client;

use crate::support::{
    bridge_command, eventually, kafka_brokers, offset, Bridge, OwnPostgres, LANDLORD_SCHEMA,
    TENANT_SCHEMA,
};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "openssl {args:?}");
}

/// A self-signed CA certificate `name.crt` (key `name.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    let subject = format!("/CN=cdc-bridge test {name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
            "-keyout", &key, "-out", &crt,
        ],
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    make_ca(dir, "ca");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    let sign = [
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
    ];
    openssl(
        dir,
        &[
            &sign[..],
            &["-days", "2", "-extfile", "san.ext", "-out", "server.crt"],
        ]
        .concat(),
    );
}

async fn seed(server: &OwnPostgres) -> (Client, Client, Client) {
    let admin = server.connect("postgres").await;
    for statement in [
        "CREATE ROLE tls_user LOGIN SUPERUSER",
        "CREATE DATABASE landlord",
        "CREATE DATABASE tenant_a",
    ] {
        admin.batch_execute(statement).await.unwrap();
    }
    let landlord = server.connect("landlord").await;
    landlord.batch_execute(LANDLORD_SCHEMA).await.unwrap();
    landlord
        .execute("INSERT INTO tenants (id, slug, numeric_id, database_name) VALUES (1, 'a', 1001, 'tenant_a')", &[])
        .await
        .unwrap();
    let tenant = server.connect("tenant_a").await;
    tenant.batch_execute(TENANT_SCHEMA).await.unwrap();
    tenant
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#7150a0')",
            &[],
        )
        .await
        .unwrap();
    (admin, landlord, tenant)
}

/// The bridge's configuration for the TLS server on `port` reached as
/// `host`, trusting the CA certificate `ca`.
fn config(port: u16, host: &str, ca: &Path) -> String {
    let dsn =
        |db: &str| format!("host={host} port={port} user=tls_user sslmode=require dbname={db}");
    format!(
        r#"
[landlord]
dsn = "{landlord}"
[tenants]
connection_template = "{template}"
rediscover_interval_secs = 1
[[table]]
name = "tenant_brandings"
[table.landlord_registry_columns]
tenant_slug = "slug"
[kafka]
brokers = "{brokers}"
topic = "tls_{port}_{pid}.changes"
partitions = 1
consumer_group = "tls_{port}_{pid}"
[replication]
slot_prefix = "tls"
[postgres]
tls_root_cert = "{ca}"
[http]
listen = ""
"#,
        landlord = dsn("landlord"),
        template = dsn("{database_name}"),
        brokers = kafka_brokers(),
        pid = std::process::id(),
        ca = ca.display(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bridge_connects_with_verified_tls_when_the_dsn_requires_it() {
    let port = OwnPostgres::port_at(offset::TLS_POSTGRES);
    let dir = std::env::temp_dir().join(format!("cdc-bridge-tls-{port}"));
    let certs = dir.join("certs");
    let _ = std::fs::remove_dir_all(&dir); // left by an earlier run
    make_certificates(&certs);
    let server = OwnPostgres::start(
        offset::TLS_POSTGRES,
        &[("PG_SSL_DIR", certs.to_str().unwrap())],
    );
    let (admin, landlord, tenant) = seed(&server).await;
    let config_path = dir.join("bridge.toml");
    std::fs::write(
        &config_path,
        config(port, "127.0.0.1", &certs.join("ca.crt")),
    )
    .unwrap();
    let mut bridge = Bridge::start(&config_path, &dir);

    eventually("tenant row synced over TLS", || async {
        let row = landlord
            .query_opt("SELECT primary_color::text FROM tenant_brandings", &[])
            .await
            .unwrap()?;
        (row.get::<_, Option<String>>(0).as_deref() == Some("#7150a0")).then_some(())
    })
    .await;
    landlord
        .execute("UPDATE tenant_brandings SET primary_color = '#7150a1'", &[])
        .await
        .unwrap();
    eventually("landlord row synced over TLS", || async {
        let row = tenant
            .query_opt("SELECT primary_color::text FROM tenant_brandings", &[])
            .await
            .unwrap()?;
        (row.get::<_, Option<String>>(0).as_deref() == Some("#7150a1")).then_some(())
    })
    .await;
    let sql = "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'tls_user'";
    let row = admin.query_one(sql, &[]).await.unwrap();
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    let status = bridge.stop();
    let log = bridge.log_text();
    assert!(
        encrypted >= 2 && plain == 0,
        "every connection uses TLS ({encrypted} with, {plain} without)"
    );
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_certificate_of_another_ca_or_for_another_host_name_is_refused() {
    let port = OwnPostgres::port_at(offset::REFUSED_TLS_POSTGRES);
    let dir = std::env::temp_dir().join(format!("cdc-bridge-tls-{port}"));
    let certs = dir.join("certs");
    let _ = std::fs::remove_dir_all(&dir); // left by an earlier run
    make_certificates(&certs);
    make_ca(&certs, "other-ca");
    let server = OwnPostgres::start(
        offset::REFUSED_TLS_POSTGRES,
        &[("PG_SSL_DIR", certs.to_str().unwrap())],
    );
    let (admin, _, _) = seed(&server).await;

    // The certificate names 127.0.0.1 only; localhost is that address too.
    for (case, host, ca, reason) in [
        ("another CA", "127.0.0.1", "other-ca.crt", "UnknownIssuer"),
        (
            "another host name",
            "localhost",
            "ca.crt",
            "not valid for name \"localhost\"",
        ),
    ] {
        let config_path = dir.join(format!("{host}-{ca}.toml"));
        std::fs::write(&config_path, config(port, host, &certs.join(ca))).unwrap();
        let (ok, output) = bridge_command(&config_path, &["run"], &[]);
        assert!(!ok, "{case}: the bridge must not start: {output}");
        assert!(
            output.contains("cannot connect to database landlord")
                && output.contains("invalid peer certificate")
                && output.contains(reason)
                && output.contains("check postgres.tls_root_cert"),
            "{case}: a clear error: {output}"
        );
    }
    let sessions: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tls_user'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0, "no connection was made");
}
