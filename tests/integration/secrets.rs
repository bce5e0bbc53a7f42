//! Secrets never reach the bridge's output, in whatever form they come:
//! the HTTP token from the file, the environment or a `_FILE`; a Kafka
//! client password; a DSN password written in each form libpq accepts, in
//! the file, the environment or a `_FILE`. Checked in `check-config`, in
//! the errors of a `setup` and a `run` that cannot connect (with debug
//! logging), and in the log of a running bridge that keeps failing to reach
//! a tenant.

use std::path::Path;

use crate::support::{pg_port, wait_streaming, TestEnv};

/// Every distinct secret value the test uses.
const SECRETS: &[&str] = &[
    "Plain-Pa55",
    "Quoted Pa55 word",
    "Spaced-Pa55",
    "Url-Pa55",
    "Query-Pa55",
    "Token-In-File",
    "Token-In-Env",
    "Token-In-Secret-File",
    "Sasl-Pa55",
];

/// The DSN password forms, as a DSN of `database` on `port`.
fn dsn_forms(port: u16, database: &str) -> [String; 5] {
    let at = format!("host=127.0.0.1 port={port} user=postgres dbname={database}");
    [
        format!("{at} password=Plain-Pa55"),
        format!("{at} password='Quoted Pa55 word'"),
        format!("{at} password = Spaced-Pa55"),
        format!("postgresql://postgres:Url-Pa55@127.0.0.1:{port}/{database}"),
        format!("postgresql://postgres@127.0.0.1:{port}/{database}?password=Query-Pa55"),
    ]
}

/// How a case hands the bridge its landlord DSN and HTTP token.
#[derive(Clone, Copy, Debug)]
enum Source {
    File,
    Env,
    SecretFile,
}

/// Fails if any secret value (or a word of the quoted one) is in `output`.
fn assert_no_secret(what: &str, output: &str) {
    for secret in SECRETS.iter().chain(&["Pa55 word"]) {
        assert!(
            !output.contains(secret),
            "{what} shows {secret:?}:\n{output}"
        );
    }
}

fn write_secret_file(dir: &Path, name: &str, value: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path.display().to_string()
}

/// A fresh configuration with `landlord` and `template` as DSNs, `http`
/// added to `[http]`, and a Kafka client password.
fn write_config(env: &TestEnv, landlord: &str, template: &str, http: &str) {
    env.write_config(
        "[kafka.client]\n\"sasl.password\" = \"Sasl-Pa55\"\n\"sasl.username\" = \"bridge\"",
    );
    let file_dsn = |dsn: &str| format!("\"{dsn}\"");
    env.replace_in_config(
        &file_dsn(&crate::support::dsn(&env.landlord_db)),
        &file_dsn(landlord),
    );
    env.replace_in_config(
        &file_dsn(&crate::support::dsn("{database_name}")),
        &file_dsn(template),
    );
    env.replace_in_config("listen = \"\"", &format!("listen = \"\"\n{http}"));
}

/// What a case puts in the file, and in the environment.
struct Inputs {
    landlord: String,
    template: String,
    http: &'static str,
    vars: Vec<(String, String)>,
}

/// The inputs of a case whose DSNs and token come from `source`; the file
/// then holds values without secrets, so `check-config` tells which were
/// taken.
fn inputs(dir: &Path, source: Source, landlord: &str, template: &str) -> Inputs {
    let token = match source {
        Source::File => "Token-In-File",
        Source::Env => "Token-In-Env",
        Source::SecretFile => "Token-In-Secret-File",
    };
    let mut inputs = Inputs {
        landlord: "host=127.0.0.1 port=1 dbname=from_file".into(),
        template: "host=127.0.0.1 port=1 dbname={database_name}".into(),
        http: "",
        vars: vec![("RUST_LOG".into(), "debug".into())],
    };
    let given = [
        ("CDC_BRIDGE_LANDLORD_DSN", landlord),
        ("CDC_BRIDGE_TENANT_DSN_TEMPLATE", template),
        ("CDC_BRIDGE_HTTP_TOKEN", token),
    ];
    match source {
        Source::File => {
            (inputs.landlord, inputs.template) = (landlord.into(), template.into());
            inputs.http = "token = \"Token-In-File\"";
        }
        Source::Env => {
            for (variable, value) in given {
                inputs.vars.push((variable.into(), value.into()));
            }
        }
        Source::SecretFile => {
            for (variable, value) in given {
                let path = write_secret_file(dir, variable, value);
                inputs.vars.push((format!("{variable}_FILE"), path));
            }
        }
    }
    inputs
}

/// One case: the landlord DSN in form `form`, unreachable (port 1), another
/// form as the tenant template, and the token, all from `source`.
/// `check-config` must show that it took them, redacted; `setup` and `run`
/// must fail to connect without showing them.
fn unreachable_landlord_case(env: &TestEnv, form: usize, source: Source) {
    let forms = dsn_forms(1, "landlord");
    let template = &dsn_forms(1, "{database_name}")[(form + 1) % forms.len()];
    let dir = env.config_path.parent().unwrap();
    let inputs = inputs(dir, source, &forms[form], template);
    write_config(env, &inputs.landlord, &inputs.template, inputs.http);
    let vars: Vec<(&str, &str)> = inputs
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let case = format!("DSN form {form} from {source:?}");

    let (ok, checked) = env.bridge_command_with_env(&["check-config"], &vars);
    assert!(ok, "{case}: {checked}");
    for shown in [
        "port=1 dbname=landlord user=postgres password=***",
        "dbname={database_name} user=postgres password=***",
        "token = \"***\"",
        "\"sasl.password\" = \"***\"",
    ] {
        assert!(
            checked.contains(shown),
            "{case}: check-config took the secret and shows {shown}:\n{checked}"
        );
    }
    assert_no_secret(&format!("{case}: check-config"), &checked);
    for command in ["setup", "run"] {
        let (ok, output) = env.bridge_command_with_env(&[command], &vars);
        assert!(
            !ok && output.contains("cannot connect to database landlord"),
            "{case}: {command} fails to connect:\n{output}"
        );
        assert_no_secret(&format!("{case}: {command}"), &output);
    }
}

/// A file that does not parse, its error on the line with the password
/// (a missing closing quote) or the token (a number): the error names the
/// key, never the value.
fn broken_file_case(env: &TestEnv) {
    for (broken, key) in [
        (
            "dsn = \"host=127.0.0.1 port=1 password=Plain-Pa55 dbname=x",
            "dsn",
        ),
        ("token = 700000001", "token"),
    ] {
        let secret = "700000001";
        write_config(
            env,
            "host=127.0.0.1 port=1 dbname=x",
            "dbname={database_name}",
            "",
        );
        env.replace_in_config("[http]", &format!("[http]\n{broken}"));
        let (ok, output) = env.bridge_command(&["check-config"]);
        assert!(
            !ok && output.contains(&format!("(key `{key}`)")),
            "{output}"
        );
        assert_no_secret("a parse error", &output);
        assert!(
            !output.contains(secret),
            "a parse error shows {secret}: {output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_any_form_appears_in_config_output_errors_or_logs() {
    let env = TestEnv::new("secrets", 1).await;
    let sources = [
        Source::File,
        Source::File,
        Source::Env,
        Source::SecretFile,
        Source::File,
    ];
    for (form, source) in sources.into_iter().enumerate() {
        unreachable_landlord_case(&env, form, source);
    }
    broken_file_case(&env);

    // A running bridge: the landlord reached with a URL password (the test
    // server trusts the role and ignores it), a tenant whose database does
    // not exist, so the template's quoted password goes into every retry.
    let landlord = &dsn_forms(pg_port(), &env.landlord_db)[3];
    let template = &dsn_forms(pg_port(), "{database_name}")[1];
    write_config(&env, landlord, template, "token = \"Token-In-File\"");
    env.set_http("");
    env.landlord()
        .await
        .execute("INSERT INTO tenants (id, slug, numeric_id, database_name) VALUES (77, 'ghost', 1077, 'no_such_database')", &[])
        .await
        .unwrap();
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    bridge
        .wait_log_lines(&["no_such_database", "does not exist"], 2)
        .await;
    let (_, checked) = env.bridge_command(&["check-config"]);
    let (ok, failed) = env.bridge_command(&["setup"]);
    assert!(!ok && failed.contains("no_such_database"), "{failed}");
    assert!(bridge.stop().success(), "{}", bridge.log_text());
    assert_no_secret("the running bridge's log", &bridge.log_text());
    assert_no_secret("check-config", &checked);
    assert_no_secret("setup", &failed);
}
