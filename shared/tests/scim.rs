//! SCIM 2.0 provisioning with the request bodies Okta and Microsoft Entra ID send.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use muster::adapters::memory::MemoryDirectory;
use muster::api::{Secret, scim};
use muster::domain::{GroupId, StakeholderId};
use muster::ports::{Directory, DirectoryAdmin};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const TOKEN: &str = "scim-test-token-0123456789";

struct Scim {
    dir: Arc<MemoryDirectory>,
    app: axum::Router,
}

fn scim() -> Scim {
    let dir = Arc::new(MemoryDirectory::default());
    let app = scim::router(dir.clone(), Secret::new(TOKEN));
    Scim { dir, app }
}

impl Scim {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/scim+json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
    async fn send(&self, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call(method, uri, Some(body), Some(TOKEN)).await
    }
    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, None, Some(TOKEN)).await
    }
    async fn person(&self, id: &str) -> Option<muster::domain::Stakeholder> {
        self.dir
            .stakeholder(&StakeholderId::parse(id).unwrap_or_else(|e| panic!("{e}")))
            .await
            .ok()
            .flatten()
    }
}

/// Okta's user create body.
fn okta_user(user_name: &str, first: &str, phone: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": first, "familyName": "Example"},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "phoneNumbers": [{"value": phone, "type": "mobile"}],
        "displayName": format!("{first} Example"),
        "locale": "en-US",
        "externalId": format!("00u{first}"),
        "groups": [],
        "password": "not-stored",
        "active": true
    })
}

#[tokio::test]
async fn requests_without_the_bearer_token_are_refused() {
    let s = scim();
    for token in [None, Some("wrong"), Some("scim-test-token-012345678")] {
        let (status, body) = s.call("GET", "/scim/v2/Users", None, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(
            body["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
    }
    assert_eq!(s.get("/scim/v2/Users").await.0, StatusCode::OK);
}

#[tokio::test]
async fn okta_lifecycle_create_find_deactivate_reactivate() {
    let s = scim();
    let (status, created) = s
        .send(
            "POST",
            "/scim/v2/Users",
            okta_user("alice@example.com", "Alice", "+1 (212) 555-0101"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["id"], "alice@example.com");
    assert_eq!(
        created["phoneNumbers"][0]["value"], "+12125550101",
        "normalised to E.164"
    );
    let alice = s
        .person("alice@example.com")
        .await
        .unwrap_or_else(|| panic!("not stored"));
    assert_eq!(
        (alice.name.as_str(), alice.external_id.as_deref()),
        ("Alice Example", Some("00uAlice"))
    );

    // Okta checks for the user before creating it.
    let (_, found) = s.get("/scim/v2/Users?filter=userName%20eq%20%22alice%40example.com%22&startIndex=1&count=100").await;
    assert_eq!(found["totalResults"], 1);
    assert_eq!(found["Resources"][0]["id"], "alice@example.com");
    let (_, none) = s
        .get("/scim/v2/Users?filter=userName%20eq%20%22bob%40example.com%22")
        .await;
    assert_eq!(none["totalResults"], 0);
    let (status, _) = s
        .send(
            "POST",
            "/scim/v2/Users",
            okta_user("ALICE@example.com", "Alice", "+12125550101"),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "userName is unique, case-insensitively"
    );

    // Okta pushes a group, then deactivates the user: removal from every group.
    let (status, group) = s.send("POST", "/scim/v2/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Ops Leadership", "members": [{"value": "alice@example.com", "display": "alice@example.com"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(group["id"], "ops-leadership");
    let deactivate = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (status, user) = s
        .send("PATCH", "/scim/v2/Users/alice@example.com", deactivate)
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(false)));
    let g = s
        .dir
        .get_group(&GroupId::parse("ops-leadership").unwrap_or_else(|e| panic!("{e}")))
        .await
        .ok()
        .flatten();
    assert_eq!(
        g.map(|g| g.members.len()),
        Some(0),
        "deactivated: no longer reachable through the group"
    );
    assert!(
        s.person("alice@example.com")
            .await
            .is_some_and(|p| !p.active),
        "kept on record"
    );

    let reactivate = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": true}}]});
    let (status, user) = s
        .send("PATCH", "/scim/v2/Users/alice@example.com", reactivate)
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(true)));
}

#[tokio::test]
async fn entra_patches_with_paths_and_string_booleans() {
    let s = scim();
    s.send(
        "POST",
        "/scim/v2/Users",
        okta_user("mgr@example.com", "Mia", "+44 20 7946 0100"),
    )
    .await;
    let entra_create = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
        "active": true,
        "displayName": "Test User",
        "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": []
    });
    let (status, created) = s.send("POST", "/scim/v2/Users", entra_create).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_string();
    let (_, found) = s
        .get("/scim/v2/Users?filter=externalId%20eq%20%228aa1a0c0-c4c3-4bc0-b4a5-2ef676900159%22")
        .await;
    assert_eq!(found["totalResults"], 1);

    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+44 20 7946 0123"},
            {"op": "Replace", "path": "displayName", "value": "Test User Renamed"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "mgr@example.com"},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "renamed@example.com"}
        ]
    });
    let (status, user) = s
        .send("PATCH", &format!("/scim/v2/Users/{id}"), patch)
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let p = s.person(&id).await.unwrap_or_else(|| panic!("gone"));
    assert_eq!(
        p.contacts.phone.as_ref().map(|x| x.expose()),
        Some("+442079460123")
    );
    assert_eq!(
        p.contacts.email.as_ref().map(|x| x.expose()),
        Some("renamed@example.com")
    );
    assert_eq!(p.name, "Test User Renamed");
    assert_eq!(
        p.manager.as_ref().map(|m| m.as_str()),
        Some("mgr@example.com")
    );

    let disable = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    let (status, user) = s
        .send("PATCH", &format!("/scim/v2/Users/{id}"), disable)
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(false)));

    // Entra group membership: add, then remove with a value list.
    let (_, g) = s.send("POST", "/scim/v2/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "externalId": "e1", "displayName": "Trading", "members": []})).await;
    let gid = g["id"].as_str().unwrap_or_default().to_string();
    let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Add", "path": "members", "value": [{"value": "mgr@example.com"}]}]});
    let (status, g) = s
        .send("PATCH", &format!("/scim/v2/Groups/{gid}"), add)
        .await;
    assert_eq!(
        (status, g["members"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    let remove = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": "mgr@example.com"}]}]});
    let (status, g) = s
        .send("PATCH", &format!("/scim/v2/Groups/{gid}"), remove)
        .await;
    assert_eq!(
        (status, g["members"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
}

#[tokio::test]
async fn okta_group_pushes_and_the_musters_extension() {
    let s = scim();
    for (u, n, p) in [
        ("a@example.com", "A", "+12125550101"),
        ("b@example.com", "B", "+12125550102"),
        ("duty@example.com", "D", "+12125550103"),
    ] {
        s.send("POST", "/scim/v2/Users", okta_user(u, n, p)).await;
    }
    let (status, g) = s
        .send(
            "POST",
            "/scim/v2/Groups",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", "urn:muster:scim:1.0:Group"],
                "displayName": "Ops",
                "members": [{"value": "a@example.com"}],
                "urn:muster:scim:1.0:Group": {"onCallManager": "duty@example.com", "escalationChannels": ["voice", "sms"]}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    // Okta's membership patch: add and remove with a filter path.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": "b@example.com", "display": "b@example.com"}]},
        {"op": "remove", "path": "members[value eq \"a@example.com\"]"}
    ]});
    let (status, g) = s.send("PATCH", "/scim/v2/Groups/ops", patch).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    let group = s
        .dir
        .get_group(&GroupId::parse("ops").unwrap_or_else(|e| panic!("{e}")))
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no group"));
    assert_eq!(
        group.members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        ["b@example.com"]
    );
    assert_eq!(
        group.on_call_manager.as_ref().map(|m| m.as_str()),
        Some("duty@example.com"),
        "kept through the patch"
    );
    assert_eq!(group.escalation_channels.len(), 2);
    let (_, found) = s
        .get("/scim/v2/Groups?filter=displayName%20eq%20%22Ops%22")
        .await;
    assert_eq!(found["totalResults"], 1);
    // Okta renames with a path-less replace.
    let rename = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"id": "ops", "displayName": "Operations"}}]});
    let (status, g) = s.send("PATCH", "/scim/v2/Groups/ops", rename).await;
    assert_eq!(
        (status, &g["displayName"]),
        (StatusCode::OK, &json!("Operations"))
    );
    assert_eq!(
        s.call("DELETE", "/scim/v2/Groups/ops", None, Some(TOKEN))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.get("/scim/v2/Groups/ops").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invalid_input_is_refused_with_a_scim_error_and_changes_nothing() {
    let s = scim();
    s.send(
        "POST",
        "/scim/v2/Users",
        okta_user("a@example.com", "A", "+12125550101"),
    )
    .await;
    let (status, err) = s
        .send(
            "POST",
            "/scim/v2/Users",
            okta_user("b@example.com", "B", "(212) 555-0102"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["scimType"], "invalidValue");
    assert!(
        err["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("phoneNumbers[type eq \"mobile\"].value"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("555-0102"),
        "the number is not echoed"
    );
    assert!(s.person("b@example.com").await.is_none());

    let bad_patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "not-an-email"}]});
    let (status, _) = s
        .send("PATCH", "/scim/v2/Users/a@example.com", bad_patch)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.person("a@example.com")
            .await
            .and_then(|p| p.contacts.email)
            .map(|e| e.expose().to_string())
            .as_deref(),
        Some("a@example.com")
    );

    let (status, err) = s
        .get("/scim/v2/Users?filter=name.familyName%20co%20%22x%22")
        .await;
    assert_eq!(
        (status, &err["scimType"]),
        (StatusCode::BAD_REQUEST, &json!("invalidFilter"))
    );
    let (status, _) = s
        .send(
            "POST",
            "/scim/v2/Groups",
            json!({"displayName": "G", "members": [{"value": "ghost@example.com"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "members must exist");
    assert_eq!(
        s.call("DELETE", "/scim/v2/Users/a@example.com", None, Some(TOKEN))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get("/scim/v2/Users/a@example.com").await.0,
        StatusCode::NOT_FOUND
    );
}
