//! The edges of signing in: the sign-in limit per client address, and sessions that end when
//! their key is revoked.

use std::net::{IpAddr, Ipv4Addr};

use clarion_domain::auth::KeyScope;
use clarion_domain::ids::AppId;
use reqwest::Method;

use crate::form::{Browser, location};
use crate::helpers::{create_key, runtime_with, shop_and_news, spawn, spawn_shop_and_news};

#[tokio::test]
async fn sign_ins_over_the_limit_of_an_address_get_429_while_other_addresses_sign_in() {
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        config.admin.sign_in_per_minute = 2;
    })
    .await;
    let app = spawn(runtime, dir).await;
    let guesser: IpAddr = Ipv4Addr::new(127, 0, 0, 1).into();
    let colleague: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
    let wrong = "clk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    let mut guessing = Browser::from_address(&app, guesser);
    for _ in 0..2 {
        assert_eq!(guessing.try_sign_in(wrong).await.status, 401);
    }
    let limited = guessing.try_sign_in(&app.admin_key.clone()).await;
    let mut other = Browser::from_address(&app, colleague);
    let signed_in = other.try_sign_in(&app.admin_key.clone()).await;

    assert_eq!(limited.status, 429, "{limited:?}");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{limited:?}");
    assert!(
        limited.body.contains("Too many sign-in attempts"),
        "{}",
        limited.body
    );
    assert!(guessing.session.is_none());
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    assert_eq!(location(&signed_in), Some("/admin"));
}

#[tokio::test]
async fn revoking_a_key_ends_its_admin_sessions_for_pages_and_forms() {
    let app = spawn_shop_and_news().await;
    for scope in [
        KeyScope::Admin,
        KeyScope::App(AppId::parse("shop").unwrap()),
    ] {
        let key = create_key(&app.service, scope).await;
        let browser = Browser::sign_in(&app, &key).await;
        assert_eq!(browser.get("/admin/apps/shop").await.status, 200);
        let id = app
            .service
            .list_api_keys()
            .await
            .unwrap()
            .last()
            .unwrap()
            .id;

        let revoked = app
            .admin(Method::DELETE, &format!("/v1/keys/{}", id.0), None)
            .await;
        let page = browser.get("/admin/apps/shop").await;
        let form = browser.post("/admin/logout", &[]).await;

        assert!(revoked.status < 300, "{revoked:?}");
        assert_eq!(page.status, 303, "{page:?}");
        assert_eq!(location(&page), Some("/admin/login"));
        assert_eq!(form.status, 303, "{form:?}");
        assert_eq!(location(&form), Some("/admin/login"));
    }
}
