//! The OpenAPI document lists exactly the routes the router serves.

use axum::body::Body;
use axum::http::Request;
use muster::api::v1::ROUTES;
use serde_json::Value;
use std::collections::BTreeSet;
use tower::ServiceExt;

#[test]
fn the_document_and_the_router_agree() {
    let path = format!("{}/../docs/openapi.json", env!("CARGO_MANIFEST_DIR"));
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (p, ops) in doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths"))
    {
        for m in ops
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            documented.insert((m, p.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
}

#[tokio::test]
async fn every_listed_route_is_served() {
    let env = muster::drill::Drill::new(
        muster::drill::Scenario::from_toml(
            "[incident]\nincidentId = \"INC-1\"\nseverity = \"P1\"\nstakeholderGroupId = \"g\"\nmessageTemplate = \"m\"\n[group]\non_call_manager = \"b\"\n[[stakeholders]]\nid = \"a\"\nemail = \"a@example.com\"\n[[stakeholders]]\nid = \"b\"\nemail = \"b@example.com\"\nmember = false\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}")),
        1,
    );
    let state = muster::api::v1::ApiState {
        deps: env.deps(),
        secret: None,
        tokens: muster::api::sign::AckTokens::new(muster::secret::Secret::new("k"), 1000),
        integrations: Default::default(),
    };
    let app = muster::api::v1::router(state);
    for (method, path) in ROUTES {
        let uri = path
            .replace("{id}", "INC-1")
            .replace("{token}", "t")
            .replace("{provider}", "p");
        let req = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        // An unknown route gets axum's bare fallback; a served one answers
        // with JSON, problem+json or HTML, whatever the status.
        assert_ne!(resp.status().as_u16(), 405, "{method} {uri}");
        assert!(
            resp.headers().get("content-type").is_some(),
            "{method} {uri}: not served ({})",
            resp.status()
        );
    }
}
