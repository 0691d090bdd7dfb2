//! The admin UI in a real browser: headless Chromium driven through chromedriver (Debian's
//! `chromium` and `chromium-driver` packages; `.ci/run` installs them). The server runs with a
//! fresh database and an application whose FCM and Web Push providers are the local mocks;
//! two devices are registered through the `/v1` API; the test signs in, finds them, sends a
//! test message in bulk, and sees both deliveries accepted on the message's page. Each page it
//! visits is saved as a PNG under `<target>/admin-screenshots/`.
//!
//! A missing or broken browser fails the test: it never skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clarion_adapters::config::{AppConfig, FcmConfig, Secret, WebPushConfig};
use clarion_domain::app::SenderKind;
use clarion_testkit::{MockFcm, MockWebPush, VapidTestKey, WebPushMockConfig};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, runtime_with, spawn};

const FCM_TOKEN: &str = "dGVzdC1mY20tdG9rZW4:APA91bH-browser-test-token";

/// chromedriver, stopped (and its browser with it) when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// The browser binary: `$CHROME_BIN`, else Debian's real binary behind its wrapper script.
fn chromium() -> PathBuf {
    if let Some(bin) = std::env::var_os("CHROME_BIN") {
        return PathBuf::from(bin);
    }
    let debian = Path::new("/usr/lib/chromium/chromium");
    if debian.is_file() {
        return debian.to_owned();
    }
    which("chromium").unwrap_or_else(|| {
        panic!("no Chromium: install Debian's chromium and chromium-driver (bash .ci/run does)")
    })
}

async fn start_driver() -> Driver {
    let binary = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| which("chromedriver"))
        .unwrap_or_else(|| {
            panic!("no chromedriver: install Debian's chromium-driver (bash .ci/run does)")
        });
    // chromedriver needs a port number: take a free one from the system.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let driver = Driver { child, port };
    let status = format!("http://127.0.0.1:{port}/status");
    eventually(Duration::from_secs(20), || async {
        let reply = reqwest::get(&status).await.ok()?;
        reply.status().is_success().then_some(())
    })
    .await;
    driver
}

async fn open_browser(driver: &Driver, profile: &Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium(), "args": args },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("Chromium did not start under chromedriver: {e}"))
}

/// Where the screenshots go: `<target>/admin-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("admin-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot folder");
    dir
}

async fn shoot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(screenshot_dir().join(name), png).expect("the screenshot is saved");
}

/// The server with application `shop` sending through the FCM and Web Push mocks.
/// The provider files (service account, CA) go to `folder`.
async fn server_with_mocks(
    fcm: &MockFcm,
    webpush: &MockWebPush,
    vapid: &VapidTestKey,
    folder: &Path,
) -> TestApp {
    clarion_testkit::install_default_crypto_provider();
    let (runtime, dir) = runtime_with(|config| {
        config.apps.clear();
        config.worker.enabled = false;
        let account = folder.join("service-account.json");
        std::fs::write(&account, &fcm.service_account().json).expect("write");
        let ca = folder.join("webpush-ca.pem");
        std::fs::write(&ca, webpush.ca_pem()).expect("write");
        config.tls.extra_ca_certs = vec![ca];
        config.apps.insert(
            "shop".to_owned(),
            AppConfig {
                sender: SenderKind::Direct,
                fcm: Some(FcmConfig {
                    service_account: Secret::File(account),
                    endpoint: Some(fcm.base_url()),
                    timeout_secs: Some(5),
                    connections: None,
                    max_in_flight: None,
                }),
                webpush: Some(WebPushConfig {
                    vapid_private_key: Secret::Inline(vapid.private_key_b64url.clone()),
                    subject: "mailto:ops@example.com".to_owned(),
                    allow_private_endpoints: true,
                    timeout_secs: Some(5),
                    connections: None,
                    max_in_flight: None,
                }),
                ..AppConfig::default()
            },
        );
    })
    .await;
    spawn(runtime, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sends_a_test_message_in_bulk_to_two_devices_from_the_browser() {
    // Arrange: mocks, the server, and two devices registered through the API.
    let fcm = MockFcm::start("clarion-test").await.expect("the FCM mock");
    let vapid = VapidTestKey::generate().expect("a VAPID key");
    let webpush = MockWebPush::start(WebPushMockConfig {
        expected_vapid_public_key: Some(vapid.public_key_b64url.clone()),
    })
    .await
    .expect("the Web Push mock");
    let files = tempfile::tempdir().expect("a folder for the provider files");
    let app = server_with_mocks(&fcm, &webpush, &vapid, files.path()).await;
    let subscription = webpush.new_subscription();
    for body in [
        json!({"platform": "fcm", "token": FCM_TOKEN, "user_id": "alice", "name": "Pixel"}),
        json!({"platform": "webpush", "token": subscription.endpoint, "p256dh": subscription.p256dh,
               "auth": subscription.auth, "user_id": "alice", "name": "Firefox"}),
    ] {
        app.admin(Method::POST, "/v1/apps/shop/devices", Some(&body))
            .await
            .expect(201);
    }
    let driver = start_driver().await;
    let profile = tempfile::tempdir().expect("a browser profile folder");
    let browser = open_browser(&driver, profile.path()).await;
    let url = |path: &str| app.url(path);

    // Sign in.
    browser
        .goto(&url("/admin/login"))
        .await
        .expect("the sign-in page");
    shoot(&browser, "01-sign-in.png").await;
    browser
        .find(Locator::Css("#key"))
        .await
        .expect("the key field")
        .send_keys(&app.admin_key)
        .await
        .expect("typing");
    browser
        .find(Locator::Css("#sign-in"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("signing in");
    browser
        .wait()
        .for_element(Locator::Css("#backlog"))
        .await
        .expect("the overview after signing in");
    shoot(&browser, "02-overview.png").await;

    // Find the devices and send one test message to both.
    browser
        .find(Locator::LinkText("Devices"))
        .await
        .expect("the Devices link")
        .click()
        .await
        .expect("opening the devices");
    browser
        .wait()
        .for_element(Locator::Css("#devices"))
        .await
        .expect("the device list");
    let source = browser.source().await.expect("the page");
    assert!(source.contains(FCM_TOKEN), "the FCM device is listed");
    assert!(
        source.contains(&subscription.endpoint.replace('/', "&#x2f;"))
            || source.contains(&subscription.endpoint),
        "the Web Push device is listed"
    );
    let boxes = browser
        .find_all(Locator::Css("input[name=ids]"))
        .await
        .expect("the checkboxes");
    assert_eq!(boxes.len(), 2);
    for checkbox in &boxes {
        checkbox.click().await.expect("selecting a device");
    }
    shoot(&browser, "03-devices.png").await;
    browser
        .find(Locator::Css("#send-bulk"))
        .await
        .expect("the bulk button")
        .click()
        .await
        .expect("sending");

    // The message's page shows both deliveries, accepted by their providers.
    browser
        .wait()
        .for_element(Locator::Css("#deliveries"))
        .await
        .expect("the message page");
    let rows = browser
        .find_all(Locator::Css("tr.delivery"))
        .await
        .expect("the deliveries");
    assert_eq!(rows.len(), 2);
    let mut channels = Vec::new();
    for row in &rows {
        let text = row.text().await.expect("a row's text");
        assert!(text.contains("accepted"), "{text}");
        channels.push(if text.contains("webpush") {
            "webpush"
        } else {
            "fcm"
        });
    }
    channels.sort_unstable();
    assert_eq!(channels, ["fcm", "webpush"]);
    let state = browser
        .find(Locator::Css("#state"))
        .await
        .expect("the state")
        .text()
        .await
        .expect("its text");
    assert_eq!(state, "SENT");
    shoot(&browser, "04-message.png").await;
    assert_eq!(fcm.request_count(), 1);
    assert_eq!(webpush.request_count(), 1);

    // The log lists it; the pages stay usable on a phone-sized screen.
    browser
        .find(Locator::LinkText("Messages"))
        .await
        .expect("the Messages link")
        .click()
        .await
        .expect("opening the log");
    browser
        .wait()
        .for_element(Locator::Css("#messages"))
        .await
        .expect("the log");
    shoot(&browser, "05-messages.png").await;
    browser
        .set_window_size(412, 915)
        .await
        .expect("a phone-sized window");
    browser
        .goto(&url("/admin/apps/shop/devices"))
        .await
        .expect("the devices");
    shoot(&browser, "06-devices-phone.png").await;

    // Sign out.
    browser
        .find(Locator::Css("header form button"))
        .await
        .expect("the sign-out button")
        .click()
        .await
        .expect("signing out");
    browser
        .wait()
        .for_element(Locator::Css("#sign-in"))
        .await
        .expect("the sign-in page again");
    browser.close().await.expect("the browser closes");
}
