//! Every admin page and action, through HTTP.

use std::sync::Arc;
use std::time::Duration;

use clarion_adapters::render::MiniJinjaRenderer;
use clarion_domain::auth::KeyScope;
use clarion_domain::ids::{AppId, MessageId, Slug};
use clarion_domain::message::MessageState;
use clarion_domain::ports::Clock;
use clarion_domain::service::{Ports, Providers, PushService, ServiceSettings};
use reqwest::Method;
use serde_json::json;
use time::OffsetDateTime;

use crate::form::{Browser, csrf_in, encode, location, set_cookie};
use crate::helpers::{
    TestApp, create_key, eventually, runtime_with, shop_and_news, spawn, spawn_shop_and_news,
};

async fn device(app: &TestApp, token: &str, user: &str) -> i64 {
    let body = json!({"platform": "fcm", "token": token, "user_id": user, "name": "phone"});
    app.admin(Method::POST, "/v1/apps/shop/devices", Some(&body))
        .await
        .expect(201)["id"]
        .as_i64()
        .unwrap()
}

async fn send(app: &TestApp, body: serde_json::Value) -> i64 {
    app.admin(Method::POST, "/v1/apps/shop/messages", Some(&body))
        .await
        .expect(201)["id"]
        .as_i64()
        .unwrap()
}

async fn is_active(app: &TestApp, id: i64) -> bool {
    app.admin(Method::GET, &format!("/v1/apps/shop/devices/{id}"), None)
        .await
        .expect(200)["active"]
        .as_bool()
        .unwrap()
}

/// The flash notice the next page shows.
async fn notice(browser: &Browser<'_>, path: &str) -> String {
    let page = browser.get(path).await;
    assert_eq!(page.status, 200, "{page:?}");
    let start = page.body.find("class=\"flash\"").expect("a notice");
    page.body[start..].chars().take(300).collect()
}

#[tokio::test]
async fn signing_in_with_an_admin_key_sets_a_strict_http_only_session_cookie() {
    let app = spawn_shop_and_news().await;
    let mut browser = Browser::new(&app);

    let reply = browser.try_sign_in(&app.admin_key.clone()).await;

    assert_eq!(reply.status, 303);
    let cookie = set_cookie(&reply, "clarion_session").unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/admin"), "{cookie}");
    assert!(cookie.contains("Max-Age=28800"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP by default: {cookie}"
    );
    assert!(
        !cookie.contains(&app.admin_key),
        "the key is not the session id"
    );
    let picker = browser.get("/admin").await;
    assert_eq!(location(&picker), Some("/admin/apps"));
    let apps = browser.get("/admin/apps").await;
    assert!(apps.body.contains("/admin/apps/shop\"") && apps.body.contains("/admin/apps/news\""));
}

#[tokio::test]
async fn secure_cookies_are_marked_secure() {
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        config.admin.secure_cookies = true;
    })
    .await;
    let app = spawn(runtime, dir).await;
    let mut browser = Browser::new(&app);

    let reply = browser.try_sign_in(&app.admin_key.clone()).await;

    assert!(
        set_cookie(&reply, "clarion_session")
            .unwrap()
            .contains("; Secure")
    );
}

#[tokio::test]
async fn a_wrong_or_revoked_key_is_refused_on_the_sign_in_page() {
    let app = spawn_shop_and_news().await;
    let revoked = create_key(&app.service, KeyScope::Admin).await;
    let listed = app.service.list_api_keys().await.unwrap();
    app.service
        .revoke_api_key(listed.last().unwrap().id)
        .await
        .unwrap();

    for key in [
        "not a key",
        "clk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &revoked,
    ] {
        let mut browser = Browser::new(&app);
        let reply = browser.try_sign_in(key).await;
        assert_eq!(reply.status, 401, "{key}");
        assert!(reply.body.contains("not valid or was revoked"), "{key}");
        assert!(set_cookie(&reply, "clarion_session").is_none(), "{key}");
    }
}

#[tokio::test]
async fn the_sign_in_form_without_its_token_is_refused() {
    let app = spawn_shop_and_news().await;
    let browser = Browser::new(&app);

    let reply = browser
        .post_raw("/admin/login", &encode(&[("key", &app.admin_key)]))
        .await;

    assert_eq!(reply.status, 403);
    assert!(set_cookie(&reply, "clarion_session").is_none());
}

#[tokio::test]
async fn pages_without_a_session_send_the_browser_to_sign_in() {
    let app = spawn_shop_and_news().await;
    let browser = Browser::new(&app);

    for path in [
        "/admin",
        "/admin/apps",
        "/admin/apps/shop",
        "/admin/apps/shop/devices",
        "/admin/apps/shop/messages",
        "/admin/apps/shop/templates",
    ] {
        let reply = browser.get(path).await;
        assert_eq!(reply.status, 303, "{path}");
        assert_eq!(location(&reply), Some("/admin/login"), "{path}");
    }
    let post = browser
        .post_raw(
            "/admin/apps/shop/devices/actions",
            "action=deactivate&ids=1",
        )
        .await;
    assert_eq!(location(&post), Some("/admin/login"));
}

#[tokio::test]
async fn every_page_renders_for_a_signed_in_admin() {
    let app = spawn_shop_and_news().await;
    let id = device(&app, "fcm-token-alice", "alice").await;
    let message = send(
        &app,
        json!({"target": {"device_ids": [id]}, "heading": "Hi", "body": "Order 42 shipped",
               "related_objects": [{"kind": "order", "object_id": "42"}]}),
    )
    .await;
    app.admin(
        Method::POST,
        "/v1/apps/shop/templates",
        Some(&json!({"slug": "shipped", "body": "Order {{ order }} shipped"})),
    )
    .await
    .expect(201);
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;

    for (path, expected) in [
        ("/admin/apps", "Applications"),
        ("/admin/apps/shop", "Overview of shop"),
        ("/admin/apps/shop/devices", "fcm-token-alice"),
        ("/admin/apps/shop/devices/prune", "This prune will touch"),
        ("/admin/apps/shop/messages", "Order 42 shipped"),
        (&format!("/admin/apps/shop/messages/{message}"), "order:42"),
        ("/admin/apps/shop/templates", "shipped"),
        ("/admin/apps/shop/templates/new", "New template"),
        (
            "/admin/apps/shop/templates/shipped",
            "Order {{ order }} shipped",
        ),
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}: {page:?}");
        assert!(page.content_type.starts_with("text/html"), "{path}");
        assert!(page.body.contains(expected), "{path} lacks {expected:?}");
        assert!(page.body.contains("name=\"viewport\""), "{path}");
        assert_eq!(
            page.headers.get("cache-control").unwrap(),
            "no-store",
            "{path}"
        );
        assert!(page.headers.get("content-security-policy").is_some());
    }
    let css = browser.get("/admin/style.css").await;
    assert_eq!(css.status, 200);
    assert!(css.content_type.starts_with("text/css"));
    let missing = browser.get("/admin/apps/shop/messages/999999").await;
    assert_eq!(missing.status, 404);
    let unknown = browser.get("/admin/apps/nope").await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn the_overview_counts_devices_messages_backlog_and_errors() {
    let app = spawn_shop_and_news().await;
    device(&app, "fcm-token-a", "alice").await;
    let gone = device(&app, "fcm-token-b", "bob").await;
    app.admin(
        Method::PATCH,
        &format!("/v1/apps/shop/devices/{gone}"),
        Some(&json!({"active": false})),
    )
    .await
    .expect(200);
    // To a user with no device: an ERROR with a reason.
    send(&app, json!({"target": {"user_id": "nobody"}, "body": "x"})).await;
    app.admin(
        Method::POST,
        "/v1/apps/shop/messages",
        Some(&json!({"target": {"user_id": "alice"}, "body": "later", "dispatch": "queue"})),
    )
    .await
    .expect(202);
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;

    let page = browser.get("/admin/apps/shop").await;

    let body = &page.body;
    assert!(
        body.contains("<td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">2</td>"),
        "fcm: 1 active, 1 inactive: {body}"
    );
    assert!(
        body.contains("<span class=\"big\" id=\"backlog\">1</span>"),
        "{body}"
    );
    assert!(
        body.contains("recipient nobody has no active device"),
        "{body}"
    );
}

#[tokio::test]
async fn a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_shop_and_news().await;
    let id = device(&app, "fcm-token-alice", "alice").await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;
    let ids = id.to_string();

    let missing = browser
        .post_raw(
            "/admin/apps/shop/devices/actions",
            &encode(&[("action", "deactivate"), ("ids", &ids)]),
        )
        .await;
    let wrong = browser
        .post_raw(
            "/admin/apps/shop/devices/actions",
            &encode(&[("csrf", "0000"), ("action", "deactivate"), ("ids", &ids)]),
        )
        .await;
    let logout = browser.post_raw("/admin/logout", "").await;

    assert_eq!(missing.status, 403);
    assert_eq!(wrong.status, 403);
    assert_eq!(logout.status, 403);
    assert!(is_active(&app, id).await);
    assert_eq!(browser.get("/admin/apps/shop").await.status, 200);
}

#[tokio::test]
async fn a_csrf_token_of_another_session_is_refused() {
    let app = spawn_shop_and_news().await;
    let id = device(&app, "fcm-token-alice", "alice").await;
    let mine = Browser::sign_in(&app, &app.admin_key.clone()).await;
    let mut theirs = Browser::sign_in(&app, &app.admin_key.clone()).await;
    theirs.csrf.clone_from(&mine.csrf);

    let reply = theirs
        .post(
            "/admin/apps/shop/devices/actions",
            &[("action", "deactivate"), ("ids", &id.to_string())],
        )
        .await;

    assert_eq!(reply.status, 403);
    assert!(is_active(&app, id).await);
}

#[tokio::test]
async fn an_application_key_sees_only_its_application() {
    let app = spawn_shop_and_news().await;
    let shop_key = create_key(&app.service, KeyScope::App(AppId::parse("shop").unwrap())).await;
    let news_device = app
        .admin(
            Method::POST,
            "/v1/apps/news/devices",
            Some(&json!({"platform": "fcm", "token": "news-token"})),
        )
        .await
        .expect(201)["id"]
        .as_i64()
        .unwrap();
    let browser = Browser::sign_in(&app, &shop_key).await;

    let home = browser.get("/admin").await;
    assert_eq!(location(&home), Some("/admin/apps/shop"));
    let picker = browser.get("/admin/apps").await;
    assert!(picker.body.contains("/admin/apps/shop\""));
    assert!(!picker.body.contains("/admin/apps/news\""));
    for path in [
        "/admin/apps/news",
        "/admin/apps/news/devices",
        "/admin/apps/news/devices/prune",
        "/admin/apps/news/messages",
        "/admin/apps/news/messages/1",
        "/admin/apps/news/templates",
        "/admin/apps/news/templates/new",
    ] {
        assert_eq!(browser.get(path).await.status, 403, "{path}");
    }
    let reply = browser
        .post(
            "/admin/apps/news/devices/actions",
            &[("action", "deactivate"), ("ids", &news_device.to_string())],
        )
        .await;
    assert_eq!(reply.status, 403);
    let prune = browser.post("/admin/apps/news/devices/prune", &[]).await;
    assert_eq!(prune.status, 403);
    let template = browser
        .post(
            "/admin/apps/news/templates",
            &[("slug", "x"), ("body", "y"), ("action", "save")],
        )
        .await;
    assert_eq!(template.status, 403);
    let news_active = app
        .admin(
            Method::GET,
            &format!("/v1/apps/news/devices/{news_device}"),
            None,
        )
        .await
        .expect(200)["active"]
        .as_bool()
        .unwrap();
    assert!(news_active);
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let app = spawn_shop_and_news().await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;

    let reply = browser.post("/admin/logout", &[]).await;

    assert_eq!(reply.status, 303);
    assert_eq!(location(&reply), Some("/admin/login"));
    let cleared = set_cookie(&reply, "clarion_session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The old cookie no longer opens anything.
    assert_eq!(
        location(&browser.get("/admin/apps").await),
        Some("/admin/login")
    );
}

#[tokio::test]
async fn a_session_expires_after_its_time() {
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        config.admin.session_ttl_secs = 1;
    })
    .await;
    let app = spawn(runtime, dir).await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;

    eventually(Duration::from_secs(5), || async {
        let reply = browser.get("/admin/apps").await;
        (location(&reply) == Some("/admin/login")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn devices_are_searched_by_user_token_prefix_platform_and_state_and_paged() {
    let app = spawn_shop_and_news().await;
    for n in 0..52 {
        device(&app, &format!("bulk-{n:02}"), "many").await;
    }
    let alice = device(&app, "fcm-token-alice", "alice").await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;

    let by_user = browser.get("/admin/apps/shop/devices?user=alice").await;
    let by_token = browser
        .get("/admin/apps/shop/devices?token=fcm-token-a&platform=fcm&active=true")
        .await;
    let none = browser
        .get("/admin/apps/shop/devices?platform=apns&user=&token=")
        .await;
    let inactive = browser.get("/admin/apps/shop/devices?active=false").await;
    let first = browser.get("/admin/apps/shop/devices?user=many").await;

    assert!(by_user.body.contains(&format!("value=\"{alice}\"")));
    assert!(!by_user.body.contains("bulk-00"));
    assert!(by_token.body.contains("fcm-token-alice"));
    assert!(!by_token.body.contains("bulk-"));
    assert!(none.body.contains("No device matches."));
    assert!(inactive.body.contains("No device matches."));
    assert!(first.body.contains("bulk-49") && !first.body.contains("bulk-50"));
    let start = first.body.find("id=\"next-page\"").expect("a next page");
    let href = &first.body[first.body[..start].rfind("href=\"").unwrap() + 6..start - 2];
    let next = browser
        .get(&href.replace("&amp;", "&").replace("&#x2f;", "/"))
        .await;
    assert!(next.body.contains("bulk-51") && !next.body.contains("bulk-49"));
    assert!(
        !next.body.contains("fcm-token-alice"),
        "the user filter holds"
    );
    let bad = browser.get("/admin/apps/shop/devices?active=maybe").await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn a_test_message_goes_to_each_selected_device_or_to_all_of_them_in_bulk() {
    let app = spawn_shop_and_news().await;
    let one = device(&app, "fcm-token-1", "alice").await;
    let two = device(&app, "fcm-token-2", "bob").await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;
    let (one_s, two_s) = (one.to_string(), two.to_string());
    let selected = [("ids", one_s.as_str()), ("ids", two_s.as_str())];

    let mut each = selected.to_vec();
    each.extend([
        ("action", "test"),
        ("body", "ping"),
        ("back", "/admin/apps/shop/devices?user=alice"),
    ]);
    let per_device = browser
        .post("/admin/apps/shop/devices/actions", &each)
        .await;
    let mut all = selected.to_vec();
    all.push(("action", "bulk"));
    let bulk = browser.post("/admin/apps/shop/devices/actions", &all).await;

    assert_eq!(per_device.status, 303);
    assert_eq!(
        location(&per_device),
        Some("/admin/apps/shop/devices?user=alice")
    );
    assert_eq!(bulk.status, 303);
    let to = location(&bulk).unwrap().to_owned();
    let id: i64 = to.rsplit('/').next().unwrap().parse().unwrap();
    let (message, tally) = app
        .service
        .get_message("shop", MessageId(id))
        .await
        .unwrap();
    assert_eq!(message.deliveries.len(), 2);
    assert_eq!(tally.total, 2);
    assert_eq!(message.state(), MessageState::Debug);
    let page = browser.get(&to).await;
    assert!(
        page.body.contains("Sent test message"),
        "the notice shows once"
    );
    assert_eq!(page.body.matches("class=\"delivery\"").count(), 2);
    let log = browser
        .get("/admin/apps/shop/messages?tag=admin-test")
        .await;
    assert_eq!(log.body.matches("/admin/apps/shop/messages/").count(), 3);
    assert!(log.body.contains("ping"));
    let nothing = browser
        .post("/admin/apps/shop/devices/actions", &[("action", "bulk")])
        .await;
    assert_eq!(nothing.status, 303);
    assert!(
        notice(&browser, "/admin/apps/shop/devices")
            .await
            .contains("Select at least one")
    );
}

#[tokio::test]
async fn selected_devices_are_deactivated_and_activated() {
    let app = spawn_shop_and_news().await;
    let one = device(&app, "fcm-token-1", "alice").await;
    let two = device(&app, "fcm-token-2", "alice").await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;
    let (one_s, two_s) = (one.to_string(), two.to_string());

    browser
        .post(
            "/admin/apps/shop/devices/actions",
            &[("action", "deactivate"), ("ids", &one_s), ("ids", &two_s)],
        )
        .await;
    assert!(!is_active(&app, one).await && !is_active(&app, two).await);
    assert!(
        notice(&browser, "/admin/apps/shop/devices")
            .await
            .contains("Deactivated 2")
    );
    browser
        .post(
            "/admin/apps/shop/devices/actions",
            &[("action", "activate"), ("ids", &one_s)],
        )
        .await;

    assert!(is_active(&app, one).await && !is_active(&app, two).await);
}

/// A clock 40 days behind, for devices deactivated long ago.
#[derive(Debug)]
struct LongAgo;

impl Clock for LongAgo {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() - time::Duration::days(40)
    }
}

#[tokio::test]
async fn a_prune_says_how_many_devices_it_touches_before_it_is_confirmed() {
    let (runtime, dir) = runtime_with(shop_and_news).await;
    let store = runtime.store.clone();
    let past = PushService::new(
        Arc::new(runtime.config.applications()),
        Ports {
            devices: store.clone(),
            messages: store.clone(),
            templates: store.clone(),
            keys: store.clone(),
            reports: store.clone(),
            renderer: Arc::new(MiniJinjaRenderer::default()),
            clock: Arc::new(LongAgo),
        },
        Providers::default(),
        ServiceSettings::default(),
    );
    let app = spawn(runtime, dir).await;
    let old = device(&app, "fcm-token-old", "alice").await;
    let recent = device(&app, "fcm-token-recent", "alice").await;
    past.deactivate_device("shop", clarion_domain::ids::DeviceId(old), "gone")
        .await
        .unwrap();
    app.service
        .deactivate_device("shop", clarion_domain::ids::DeviceId(recent), "gone")
        .await
        .unwrap();
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;

    let plain = browser.get("/admin/apps/shop/devices/prune").await;
    let preview = browser
        .get("/admin/apps/shop/devices/prune?older_than_days=30")
        .await;

    assert!(
        plain.body.contains("will touch <strong>0</strong>"),
        "{}",
        plain.body
    );
    assert!(plain.body.contains("Nothing to prune"));
    assert!(
        preview.body.contains("will touch <strong>1</strong>"),
        "{}",
        preview.body
    );
    assert!(preview.body.contains("id=\"confirm-prune\""));
    assert_eq!(
        app.service
            .list_devices("shop", &Default::default())
            .await
            .unwrap()
            .len(),
        2
    );
    let done = browser
        .post(
            "/admin/apps/shop/devices/prune",
            &[("older_than_days", "30")],
        )
        .await;
    assert_eq!(location(&done), Some("/admin/apps/shop/devices"));
    assert!(
        notice(&browser, "/admin/apps/shop/devices")
            .await
            .contains("0 device(s) deactivated, 1 deleted")
    );
    let left: Vec<i64> = app
        .service
        .list_devices("shop", &Default::default())
        .await
        .unwrap()
        .iter()
        .map(|d| d.id.0)
        .collect();
    assert_eq!(left, vec![recent]);
    let bad = browser
        .get("/admin/apps/shop/devices/prune?older_than_days=-1")
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn the_message_log_filters_by_state_tag_recipient_related_object_and_time() {
    let app = spawn_shop_and_news().await;
    device(&app, "fcm-token-alice", "alice").await;
    send(
        &app,
        json!({"target": {"user_id": "alice"}, "body": "first-body", "tag": "promo",
               "related_objects": [{"kind": "order", "object_id": "7"}]}),
    )
    .await;
    send(
        &app,
        json!({"target": {"user_id": "nobody"}, "body": "second-body"}),
    )
    .await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;
    let list = async |query: &str| {
        let page = browser
            .get(&format!("/admin/apps/shop/messages?{query}"))
            .await;
        assert_eq!(page.status, 200, "{query}: {page:?}");
        (
            page.body.contains("first-body"),
            page.body.contains("second-body"),
        )
    };

    assert_eq!(list("").await, (true, true));
    assert_eq!(list("state=ERROR").await, (false, true));
    assert_eq!(list("state=DEBUG").await, (true, false));
    assert_eq!(list("tag=promo").await, (true, false));
    assert_eq!(list("recipient=nobody").await, (false, true));
    assert_eq!(list("related=order%3A7").await, (true, false));
    assert_eq!(
        list("from=2000-01-01T00%3A00&to=2001-01-01T00%3A00").await,
        (false, false)
    );
    assert_eq!(list("from=2000-01-01T00%3A00").await, (true, true));
    assert_eq!(
        browser
            .get("/admin/apps/shop/messages?from=yesterday")
            .await
            .status,
        400
    );
    assert_eq!(
        browser
            .get("/admin/apps/shop/messages?state=LOST")
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn an_error_message_is_retried_from_its_page() {
    let app = spawn_shop_and_news().await;
    let failed = send(&app, json!({"target": {"user_id": "nobody"}, "body": "x"})).await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;
    let path = format!("/admin/apps/shop/messages/{failed}");

    let page = browser.get(&path).await;
    assert!(page.body.contains("id=\"retry\""));
    assert!(page.body.contains("has no active device"));
    let reply = browser.post(&format!("{path}/retry"), &[]).await;

    assert_eq!(location(&reply), Some(path.as_str()));
    let after = browser.get(&path).await;
    assert!(after.body.contains("WAITING again"));
    assert!(!after.body.contains("id=\"retry\""));
    let again = browser.post(&format!("{path}/retry"), &[]).await;
    assert_eq!(again.status, 409);
}

#[tokio::test]
async fn templates_are_previewed_created_edited_and_switched_on_and_off() {
    let app = spawn_shop_and_news().await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;
    let form = |action: &'static str, body: &'static str, context: &'static str| {
        vec![
            ("slug", "shipped"),
            ("heading", "Hi {{ name }}"),
            ("body", body),
            ("is_active", "on"),
            ("context", context),
            ("action", action),
        ]
    };

    let preview = browser
        .post(
            "/admin/apps/shop/templates",
            &form(
                "preview",
                "Order {{ order }} shipped",
                r#"{"name": "Ada", "order": 42}"#,
            ),
        )
        .await;
    assert_eq!(preview.status, 200);
    assert!(preview.body.contains("Order 42 shipped") && preview.body.contains("Hi Ada"));
    assert!(
        app.service.list_templates("shop").await.unwrap().is_empty(),
        "a preview saves nothing"
    );
    let undefined = browser
        .post(
            "/admin/apps/shop/templates",
            &form("preview", "Order {{ order }}", r#"{"name": "Ada"}"#),
        )
        .await;
    assert_eq!(undefined.status, 422);
    assert!(undefined.body.contains("id=\"template-error\""));
    assert!(undefined.body.contains("undefined"), "{}", undefined.body);
    let bad_json = browser
        .post("/admin/apps/shop/templates", &form("preview", "x", "{nope"))
        .await;
    assert!(bad_json.body.contains("the context is not JSON"));
    let bad_syntax = browser
        .post(
            "/admin/apps/shop/templates",
            &form("save", "{% if %}", "{}"),
        )
        .await;
    assert_eq!(bad_syntax.status, 422);
    assert!(
        bad_syntax.body.contains("syntax error in body"),
        "{}",
        bad_syntax.body
    );

    let saved = browser
        .post(
            "/admin/apps/shop/templates",
            &form("save", "Order {{ order }} shipped", "{}"),
        )
        .await;
    assert_eq!(location(&saved), Some("/admin/apps/shop/templates/shipped"));
    let stored = app
        .service
        .get_template("shop", &Slug::parse("shipped").unwrap())
        .await
        .unwrap();
    assert_eq!(stored.heading.as_deref(), Some("Hi {{ name }}"));
    assert!(stored.is_active && !stored.allow_duplicates);
    let edit = browser.get("/admin/apps/shop/templates/shipped").await;
    assert!(
        edit.body.contains("readonly"),
        "the slug of a stored template is fixed"
    );

    browser
        .post(
            "/admin/apps/shop/templates/shipped/active",
            &[("active", "false")],
        )
        .await;
    let slug = Slug::parse("shipped").unwrap();
    assert!(
        !app.service
            .get_template("shop", &slug)
            .await
            .unwrap()
            .is_active
    );
    browser
        .post(
            "/admin/apps/shop/templates/shipped/active",
            &[("active", "true")],
        )
        .await;
    assert!(
        app.service
            .get_template("shop", &slug)
            .await
            .unwrap()
            .is_active
    );
    let list = browser.get("/admin/apps/shop/templates").await;
    assert!(list.body.contains("Deactivate"));
}

#[tokio::test]
async fn text_from_devices_and_messages_is_escaped() {
    let app = spawn_shop_and_news().await;
    device(&app, "fcm-token-x", "<script>alert(1)</script>").await;
    let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;

    let page = browser.get("/admin/apps/shop/devices").await;

    assert!(!page.body.contains("<script>alert(1)</script>"));
    assert!(page.body.contains("&lt;script&gt;"));
    assert!(csrf_in(&page.body).is_some());
}
