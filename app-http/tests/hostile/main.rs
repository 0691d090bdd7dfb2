//! The hostile-input suite: a real `clarion-server` process (the debug binary, on 127.0.0.1
//! port 0, with a fresh SQLite database) attacked the way a hostile tenant, a hostile phone
//! and an unlucky operator would. Every case asserts the clear error it must get, that the
//! server still answers `/healthz` afterwards, and that it stays under its memory bounds. A
//! prober asks `/healthz` every 50 ms throughout and the suite prints its latencies; it
//! asserts liveness and bounds, never timings.
//!
//! Run it with `cargo nextest run -p clarion-http --test hostile --no-capture` to see every
//! case's result, the `/healthz` percentiles and the peak memory.
//! `HOSTILE_SERVER_BIN=target/release/clarion-server` attacks another build of the server
//! instead of this checkout's debug binary (the secrets test in app-cli covers the CLI).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod protocol;
mod secrets;
mod server;
mod slow;
mod suite;
mod templates;
mod text;
mod tokens;

use server::Clarion;
use suite::{SERVER_RSS_BOUND, Suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_clear_error_and_never_takes_the_server_down() {
    let server = Clarion::start(&[])
        .await
        .unwrap_or_else(|e| panic!("clarion-server did not start: {e}"));
    let mut suite = Suite::new(server);
    protocol::run(&mut suite).await;
    text::run(&mut suite).await;
    tokens::run(&mut suite).await;
    templates::run(&mut suite).await;
    // Last: it trips the admin sign-in limit of the suite's one client address.
    admin::run(&mut suite).await;
    suite.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_healthz_answers_again_once_a_slot_frees() {
    let server = Clarion::start(slow::LIMITS)
        .await
        .unwrap_or_else(|e| panic!("clarion-server did not start with {:?}: {e}", slow::LIMITS));

    let results = [
        ("stalled request headers", slow::slowloris(&server).await),
        ("an idle keep-alive connection", slow::idle(&server).await),
        ("a body trickled too slowly", slow::slow_body(&server).await),
    ];

    for (case, result) in &results {
        println!("{case}: {result:?}");
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(case, result)| Some(format!("{case}: {}", result.as_ref().err()?)))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    server
        .healthy_within(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let memory = clarion_testkit::memory::process_memory(server.process.pid()).unwrap();
    assert!(
        memory.hwm < SERVER_RSS_BOUND,
        "the server's VmHWM reached {} MiB",
        memory.hwm >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_password_in_the_url_query_or_userinfo_never_reaches_the_server_output() {
    if let Err(leaks) = secrets::check().await {
        panic!("{leaks}");
    }
}
