use std::collections::BTreeSet;

use crate::helpers::spawn_app;
use crate::matrix::ROUTES;

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_nothing_else() {
    let app = spawn_app().await;

    let document = app.get("/openapi.json").await.expect(200);

    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flat_map(|ops| ops.keys())
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);
    assert_eq!(document["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path) in &routed {
        let operation = &document["paths"][path][method];
        assert!(
            operation["security"].is_array(),
            "{method} {path} names its security"
        );
    }
}

#[tokio::test]
async fn the_swagger_ui_is_served_without_credentials() {
    let app = spawn_app().await;

    let reply = app.get("/docs/").await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.content_type.starts_with("text/html"), "{reply:?}");
    assert!(reply.body.contains("swagger"), "{}", reply.body);
    let redirected = app.get("/docs").await;
    assert_eq!(redirected.status, 200, "{redirected:?}");
}
