//! A PostgreSQL password given in the database URL's query (`?password=`) or its userinfo
//! never reaches the server's output: not in the startup log, not in the error that ends a
//! start on a database that does not exist.

use std::time::Duration;

use clarion_testkit::Stream;
use sqlx::{Connection as _, PgConnection};

use crate::server::{self, Clarion};

/// The shared PostgreSQL of the machine (trust authentication: any password is accepted).
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const QUERY_SECRET: &str = "hunter2-query-secret";
const USERINFO_SECRET: &str = "hunter2-userinfo-secret";

/// A schema of this test process's own on the shared database, dropped when done.
pub struct Schema {
    pub name: String,
}

impl Schema {
    pub async fn create() -> Schema {
        let name = format!("hostile_secrets_{}", std::process::id());
        let mut admin = PgConnection::connect(POSTGRES)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {POSTGRES} ({e})"));
        for sql in [
            format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
            format!("CREATE SCHEMA {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .expect("a fresh schema");
        }
        Schema { name }
    }

    pub async fn drop_it(self) {
        if let Ok(mut admin) = PgConnection::connect(POSTGRES).await {
            let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await;
        }
    }
}

/// What the server printed on a start with `url`, and whether the secrets were in it.
fn leaks(output: &str) -> Vec<&'static str> {
    [QUERY_SECRET, USERINFO_SECRET]
        .into_iter()
        .filter(|secret| output.contains(secret))
        .collect()
}

/// Starts the server on `schema` with the password in the URL's query, asks `/readyz`, and
/// returns everything it printed.
pub async fn started_output(schema: &Schema) -> Result<String, String> {
    let url = format!(
        "{POSTGRES}?password={QUERY_SECRET}&options[search_path]={}",
        schema.name
    );
    let mut server = Clarion::start(&[("CLARION_DATABASE_URL", &url)]).await?;
    let ready = server
        .send(&server::Call::get("/readyz").auth(server::Auth::None))
        .await?;
    server.process.kill();
    Ok(format!(
        "/readyz {}\n{}\n{}",
        ready.status,
        server.process.text(Stream::Stdout),
        server.process.text(Stream::Stderr)
    ))
}

/// Starts the server on a database that does not exist, with a password in the userinfo and
/// in the query, and returns everything it printed until it gave up.
pub fn failed_output() -> Result<String, String> {
    let dir = server::config_dir()?;
    let url = format!(
        "postgres://postgres:{USERINFO_SECRET}@127.0.0.1:5432/clarion_hostile_no_such_database\
         ?password={QUERY_SECRET}"
    );
    let env = [
        ("CLARION_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("CLARION_DATABASE_URL".to_owned(), url),
    ];
    let mut process = server::spawn(&dir, &env)?;
    let status = process.wait_exit(Duration::from_secs(60));
    if status.is_none_or(|s| s.success()) {
        return Err(format!(
            "the server did not fail on a database that does not exist ({status:?})"
        ));
    }
    Ok(format!(
        "{}\n{}",
        process.text(Stream::Stdout),
        process.text(Stream::Stderr)
    ))
}

pub async fn check() -> Result<(), String> {
    let schema = Schema::create().await;
    let started = started_output(&schema).await;
    schema.drop_it().await;
    let started = started?;
    let failed = failed_output()?;
    let mut problems = Vec::new();
    for (when, output) in [("a start", &started), ("a failed start", &failed)] {
        let found = leaks(output);
        if !found.is_empty() {
            problems.push(format!("{when} printed {found:?}:\n{output}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n\n"))
    }
}

#[test]
fn the_leak_check_finds_either_secret_and_nothing_else() {
    assert_eq!(leaks("url=...hunter2-query-secret..."), vec![QUERY_SECRET]);
    assert!(leaks("postgres://postgres:[redacted]@host/db").is_empty());
}
