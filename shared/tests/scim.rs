//! SCIM 2.0 provisioning with the request bodies Okta and Microsoft Entra
//! ID send (from their SCIM guides), and the RFC 7644 rules every client
//! relies on: errors in the SCIM shape, discovery, paging, opaque ids.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use muster::adapters::memory::MemoryDirectory;
use muster::api::scim;
use muster::domain::{GroupId, StakeholderId};
use muster::ports::{Directory, DirectoryAdmin};
use muster::secret::Secret;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const TOKEN: &str = "scim-test-token-0123456789";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Scim {
    dir: Arc<MemoryDirectory>,
    app: axum::Router,
}

fn scim() -> Scim {
    let dir = Arc::new(MemoryDirectory::default());
    // As served: finished, so errors raised before a handler are SCIM errors too.
    let app = muster::api::finish(scim::router(dir.clone(), Secret::new(TOKEN)));
    Scim { dir, app }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Scim {
    async fn raw(&self, req: Request<Body>) -> Answer {
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Answer {
            status,
            content_type,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
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
            .header("host", "scim.example.com")
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
        let a = self.raw(req).await;
        (a.status, a.body)
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
    /// Creates a user; its id.
    async fn user(&self, body: Value) -> String {
        let (status, created) = self.send("POST", "/scim/v2/Users", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id: {created}"))
            .to_string()
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

fn assert_scim_error(status: StatusCode, body: &Value, want: StatusCode) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["schemas"][0], ERROR, "{body}");
    assert_eq!(body["status"], want.as_u16().to_string(), "{body}");
}

#[tokio::test]
async fn requests_without_the_bearer_token_are_refused() {
    let s = scim();
    for token in [None, Some("wrong"), Some("scim-test-token-012345678")] {
        let (status, body) = s.call("GET", "/scim/v2/Users", None, token).await;
        assert_scim_error(status, &body, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(s.get("/scim/v2/Users").await.0, StatusCode::OK);
    // The scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let req = Request::builder()
            .uri("/scim/v2/Users")
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.raw(req).await.status, StatusCode::OK, "{scheme}");
    }
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
    let id = created["id"].as_str().unwrap_or_default().to_string();
    assert!(
        id.starts_with("u-") && !id.contains('@') && !id.contains("alice"),
        "ids are opaque, never the userName: {id}"
    );
    assert_eq!(
        created["userName"], "alice@example.com",
        "kept as the IdP wrote it"
    );
    assert_eq!(
        created["meta"]["location"],
        format!("http://scim.example.com/scim/v2/Users/{id}"),
        "absolute (RFC 7643 §3.1)"
    );
    assert!(created.get("password").is_none(), "never stored");
    let alice = s.person(&id).await.unwrap_or_else(|| panic!("not stored"));
    assert_eq!(alice.name, "Alice Example");
    assert_eq!(
        alice.contacts.phone.as_ref().map(|p| p.expose()),
        Some("+12125550101"),
        "dialled in E.164"
    );
    assert_eq!(
        alice.idp.as_ref().and_then(|r| r.external_id()),
        Some("00uAlice")
    );
    assert!(
        !format!("{alice:?}").contains("alice@example.com"),
        "the record never prints"
    );

    // Okta checks for the user before creating it.
    let (_, found) = s.get("/scim/v2/Users?filter=userName%20eq%20%22alice%40example.com%22&startIndex=1&count=100").await;
    assert_eq!(found["totalResults"], 1);
    assert_eq!(found["Resources"][0]["id"], id.as_str());
    let (_, none) = s
        .get("/scim/v2/Users?filter=userName%20eq%20%22bob%40example.com%22")
        .await;
    assert_eq!(none["totalResults"], 0);
    let (status, body) = s
        .send(
            "POST",
            "/scim/v2/Users",
            okta_user("ALICE@example.com", "Alice", "+12125550101"),
        )
        .await;
    assert_scim_error(status, &body, StatusCode::CONFLICT);
    assert_eq!(body["scimType"], "uniqueness", "case-insensitively unique");

    // Okta pushes a group, then deactivates the user: removal from every group.
    let (status, group) = s.send("POST", "/scim/v2/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Ops Leadership", "members": [{"value": id, "display": "alice@example.com"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(group["id"], "ops-leadership");
    let deactivate =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (status, user) = s
        .send("PATCH", &format!("/scim/v2/Users/{id}"), deactivate)
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
        s.person(&id).await.is_some_and(|p| !p.active),
        "kept on record"
    );
    let reactivate =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": true}}]});
    let (status, user) = s
        .send("PATCH", &format!("/scim/v2/Users/{id}"), reactivate)
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(true)));
}

#[tokio::test]
async fn entra_patches_with_paths_and_string_booleans() {
    let s = scim();
    let mgr = s
        .user(okta_user("mgr@example.com", "Mia", "+44 20 7946 0100"))
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
    let id = s.user(entra_create).await;
    let (_, found) = s
        .get("/scim/v2/Users?filter=externalId%20eq%20%228aa1a0c0-c4c3-4bc0-b4a5-2ef676900159%22")
        .await;
    assert_eq!(found["totalResults"], 1);

    let patch = json!({
        "schemas": [PATCH],
        "Operations": [
            {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+44 20 7946 0123"},
            {"op": "Replace", "path": "displayName", "value": "Test User Renamed"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": mgr},
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
    assert_eq!(p.manager.as_ref().map(|m| m.as_str()), Some(mgr.as_str()));

    let disable = json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    let (status, user) = s
        .send("PATCH", &format!("/scim/v2/Users/{id}"), disable)
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(false)));

    // Entra group membership: add, then remove with a value list.
    let (_, g) = s.send("POST", "/scim/v2/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "externalId": "e1", "displayName": "Trading", "members": []})).await;
    let gid = g["id"].as_str().unwrap_or_default().to_string();
    let (_, found) = s
        .get("/scim/v2/Groups?filter=externalId%20eq%20%22e1%22")
        .await;
    assert_eq!(found["totalResults"], 1, "{found}");
    let add = json!({"schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": mgr}]}]});
    let (status, g) = s
        .send("PATCH", &format!("/scim/v2/Groups/{gid}"), add)
        .await;
    assert_eq!(
        (status, g["members"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    let remove = json!({"schemas": [PATCH], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": mgr}]}]});
    let (status, g) = s
        .send("PATCH", &format!("/scim/v2/Groups/{gid}"), remove)
        .await;
    assert_eq!(
        (status, g["members"].as_array().map(Vec::len).unwrap_or(0)),
        (StatusCode::OK, 0)
    );
}

#[tokio::test]
async fn okta_group_pushes_and_the_musters_extension() {
    let s = scim();
    let mut ids = Vec::new();
    for (u, n, p) in [
        ("a@example.com", "A", "+12125550101"),
        ("b@example.com", "B", "+12125550102"),
        ("duty@example.com", "D", "+12125550103"),
    ] {
        ids.push(s.user(okta_user(u, n, p)).await);
    }
    let (a, b, duty) = (&ids[0], &ids[1], &ids[2]);
    let (status, g) = s
        .send(
            "POST",
            "/scim/v2/Groups",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", "urn:muster:scim:1.0:Group"],
                "displayName": "Ops",
                "members": [{"value": a}],
                "urn:muster:scim:1.0:Group": {"onCallManager": duty, "escalationChannels": ["voice", "sms"]}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    // Okta's membership patch: add and remove with a filter path.
    let patch = json!({"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": b, "display": "b@example.com"}]},
        {"op": "remove", "path": format!("members[value eq \"{a}\"]")}
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
        [b.as_str()]
    );
    assert_eq!(
        group.on_call_manager.as_ref().map(|m| m.as_str()),
        Some(duty.as_str()),
        "kept through the patch"
    );
    assert_eq!(group.escalation_channels.len(), 2);
    let (_, found) = s
        .get("/scim/v2/Groups?filter=displayName%20eq%20%22Ops%22")
        .await;
    assert_eq!(found["totalResults"], 1);
    // Okta renames with a path-less replace.
    let rename = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"id": "ops", "displayName": "Operations"}}]});
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
    let (status, body) = s.get("/scim/v2/Groups/ops").await;
    assert_scim_error(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invalid_input_is_refused_with_a_scim_error_and_changes_nothing() {
    let s = scim();
    let a = s
        .user(okta_user("a@example.com", "A", "+12125550101"))
        .await;
    let bad_tier = json!({"userName": "b@example.com", "urn:muster:scim:1.0:User": {"tier": 7}});
    let (status, err) = s.send("POST", "/scim/v2/Users", bad_tier).await;
    assert_scim_error(status, &err, StatusCode::BAD_REQUEST);
    assert_eq!(err["scimType"], "invalidValue");
    assert!(
        err["detail"].as_str().unwrap_or_default().contains("tier"),
        "{err}"
    );
    let (_, all) = s.get("/scim/v2/Users").await;
    assert_eq!(all["totalResults"], 1, "nothing created");

    let bad_patch = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "urn:muster:scim:1.0:User:channels", "value": ["fax"]}]});
    let (status, err) = s
        .send("PATCH", &format!("/scim/v2/Users/{a}"), bad_patch)
        .await;
    assert_scim_error(status, &err, StatusCode::BAD_REQUEST);
    assert!(
        s.person(&a).await.is_some_and(|p| p.preferences.is_empty()),
        "unchanged"
    );

    let (status, err) = s
        .get("/scim/v2/Users?filter=name.familyName%20co%20%22x%22")
        .await;
    assert_scim_error(status, &err, StatusCode::BAD_REQUEST);
    assert_eq!(err["scimType"], "invalidFilter");
    let (status, err) = s
        .send(
            "POST",
            "/scim/v2/Groups",
            json!({"displayName": "G", "members": [{"value": "u-ghost"}]}),
        )
        .await;
    assert_scim_error(status, &err, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.call("DELETE", &format!("/scim/v2/Users/{a}"), None, Some(TOKEN))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (status, err) = s.get(&format!("/scim/v2/Users/{a}")).await;
    assert_scim_error(status, &err, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_number_muster_cannot_dial_is_kept_as_written_but_reaches_no_one() {
    let s = scim();
    // Okta's mobilePhone is free text: a national number is common.
    let id = s
        .user(okta_user("b@example.com", "B", "(212) 555-0102"))
        .await;
    let p = s.person(&id).await.unwrap_or_else(|| panic!("not stored"));
    assert_eq!(p.contacts.phone, None, "not dialled");
    assert_eq!(
        p.contacts.email.as_ref().map(|e| e.expose()),
        Some("b@example.com"),
        "still reached by email"
    );
    let (_, user) = s.get(&format!("/scim/v2/Users/{id}")).await;
    assert_eq!(user["phoneNumbers"][0]["value"], "(212) 555-0102");
}

#[tokio::test]
async fn a_patch_path_of_a_hundred_thousand_segments_is_refused_not_a_crash() {
    let s = scim();
    let id = s
        .user(okta_user("a@example.com", "A", "+12125550101"))
        .await;
    let deep = vec!["name"; 100_000].join(".");
    let body =
        json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": deep, "value": "x"}]});
    let (status, err) = s.send("PATCH", &format!("/scim/v2/Users/{id}"), body).await;
    assert_scim_error(status, &err, StatusCode::BAD_REQUEST);
    assert_eq!(err["scimType"], "invalidPath");
}

#[tokio::test]
async fn errors_raised_before_a_handler_are_scim_errors() {
    let s = scim();
    let id = s
        .user(okta_user("a@example.com", "A", "+12125550101"))
        .await;
    let req = |method: &str, uri: &str, ct: Option<&str>, body: Vec<u8>| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {TOKEN}"));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(body)).unwrap_or_else(|e| panic!("{e}"))
    };
    let cases = [
        (
            "bad JSON",
            req(
                "POST",
                "/scim/v2/Users",
                Some("application/scim+json"),
                b"{\"userName\":".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "not JSON",
            req(
                "POST",
                "/scim/v2/Users",
                Some("text/plain"),
                b"userName=a".to_vec(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no body, no type",
            req("POST", "/scim/v2/Users", None, Vec::new()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "3 MB body",
            req(
                "POST",
                "/scim/v2/Users",
                Some("application/scim+json"),
                vec![b' '; 3 << 20],
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "bad query number",
            req("GET", "/scim/v2/Users?count=lots", None, Vec::new()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad UTF-8 in the path",
            req("GET", "/scim/v2/Users/%FF%FE", None, Vec::new()),
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown URL",
            req("GET", "/scim/v2/Nope", None, Vec::new()),
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong method",
            req(
                "POST",
                "/scim/v2/ServiceProviderConfig",
                Some("application/scim+json"),
                b"{}".to_vec(),
            ),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "PUT on a list",
            req(
                "PUT",
                "/scim/v2/Users",
                Some("application/scim+json"),
                b"{}".to_vec(),
            ),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "bad JSON in a PATCH",
            req(
                "PATCH",
                &format!("/scim/v2/Users/{id}"),
                Some("application/json"),
                b"[1,".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, r, want) in cases {
        let a = s.raw(r).await;
        assert_eq!(a.status, want, "{what}: {}", a.body);
        assert_eq!(a.body["schemas"][0], ERROR, "{what}: {}", a.body);
        assert!(
            a.content_type.starts_with("application/scim+json"),
            "{what}: {}",
            a.content_type
        );
    }
    let (_, all) = s.get("/scim/v2/Users").await;
    assert_eq!(all["totalResults"], 1, "nothing changed");
}

#[tokio::test]
async fn paging_follows_rfc_7644() {
    let s = scim();
    for (u, n) in [
        ("a@example.com", "A"),
        ("b@example.com", "B"),
        ("c@example.com", "C"),
    ] {
        s.user(okta_user(u, n, "+12125550101")).await;
    }
    let (status, page) = s.get("/scim/v2/Users?startIndex=0&count=2").await;
    assert_eq!(status, StatusCode::OK, "a startIndex below 1 is 1: {page}");
    assert_eq!(
        (
            page["startIndex"].as_u64(),
            page["itemsPerPage"].as_u64(),
            page["totalResults"].as_u64()
        ),
        (Some(1), Some(2), Some(3))
    );
    let (_, page) = s.get("/scim/v2/Users?startIndex=3").await;
    assert_eq!(page["Resources"].as_array().map(Vec::len), Some(1));
    let (_, page) = s.get("/scim/v2/Users?count=-5").await;
    assert_eq!(
        (page["itemsPerPage"].as_u64(), page["totalResults"].as_u64()),
        (Some(0), Some(3)),
        "a negative count is 0"
    );
    let (_, page) = s
        .send("POST", "/scim/v2/Users/.search", json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName eq \"b@example.com\"", "attributes": ["userName"]}))
        .await;
    assert_eq!(page["totalResults"], 1, "{page}");
    let only = &page["Resources"][0];
    assert!(
        only.get("emails").is_none()
            && only["userName"] == "b@example.com"
            && only["id"].is_string(),
        "{only}"
    );
    let (_, page) = s
        .get("/scim/v2/Users?excludedAttributes=emails,phoneNumbers")
        .await;
    assert!(page["Resources"][0].get("emails").is_none() && page["Resources"][0]["id"].is_string());
}

#[tokio::test]
async fn discovery_declares_every_schema_and_extension_resources_carry() {
    let s = scim();
    let (status, spc) = s.get("/scim/v2/ServiceProviderConfig").await;
    assert_eq!(status, StatusCode::OK);
    for k in [
        "patch",
        "bulk",
        "filter",
        "changePassword",
        "sort",
        "etag",
        "authenticationSchemes",
    ] {
        assert!(spc.get(k).is_some(), "{k} is required (RFC 7643 §5)");
    }
    let (_, schemas) = s.get("/scim/v2/Schemas").await;
    let ids: Vec<&str> = schemas["Resources"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["id"].as_str()).collect())
        .unwrap_or_default();
    let (_, types) = s.get("/scim/v2/ResourceTypes").await;
    for rt in types["Resources"].as_array().cloned().unwrap_or_default() {
        let schema = rt["schema"].as_str().unwrap_or_default();
        assert!(ids.contains(&schema), "{schema} is declared");
        for ext in rt["schemaExtensions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let e = ext["schema"].as_str().unwrap_or_default();
            assert!(ids.contains(&e), "{e} is declared");
            let (status, one) = s.get(&format!("/scim/v2/Schemas/{e}")).await;
            assert_eq!((status, one["id"].as_str()), (StatusCode::OK, Some(e)));
        }
        let (status, _) = s
            .get(&format!(
                "/scim/v2/ResourceTypes/{}",
                rt["id"].as_str().unwrap_or_default()
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Every schema a resource names in `schemas` is declared.
    let id = s
        .user(json!({"userName": "a@example.com", "urn:muster:scim:1.0:User": {"tier": 1}, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Ops"}}))
        .await;
    let (_, user) = s.get(&format!("/scim/v2/Users/{id}")).await;
    for sch in user["schemas"].as_array().cloned().unwrap_or_default() {
        assert!(ids.contains(&sch.as_str().unwrap_or_default()), "{sch}");
    }
    let (status, err) = s.get("/scim/v2/Schemas/urn:nope").await;
    assert_scim_error(status, &err, StatusCode::NOT_FOUND);
}

/// The memory directory, counting how often the whole directory is read.
struct Counting {
    inner: Arc<MemoryDirectory>,
    full_reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Directory for Counting {
    async fn group(&self, id: &GroupId) -> muster::Result<Option<muster::ports::GroupSummary>> {
        self.inner.group(id).await
    }
    async fn members(&self, id: &GroupId) -> muster::Result<Vec<StakeholderId>> {
        self.inner.members(id).await
    }
    async fn stakeholder(
        &self,
        id: &StakeholderId,
    ) -> muster::Result<Option<muster::domain::Stakeholder>> {
        self.inner.stakeholder(id).await
    }
}

#[async_trait::async_trait]
impl DirectoryAdmin for Counting {
    async fn put_stakeholder(&self, p: muster::domain::Stakeholder) -> muster::Result<()> {
        self.inner.put_stakeholder(p).await
    }
    async fn remove_stakeholder(&self, id: &StakeholderId) -> muster::Result<bool> {
        self.inner.remove_stakeholder(id).await
    }
    async fn list_stakeholders(&self) -> muster::Result<Vec<muster::domain::Stakeholder>> {
        self.full_reads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.list_stakeholders().await
    }
    async fn find_by_user_name(&self, user_name: &str) -> muster::Result<Vec<StakeholderId>> {
        self.inner.find_by_user_name(user_name).await
    }
    async fn contains(&self, id: &StakeholderId) -> muster::Result<bool> {
        self.inner.contains(id).await
    }
    async fn get_group(&self, id: &GroupId) -> muster::Result<Option<muster::domain::Group>> {
        self.inner.get_group(id).await
    }
    async fn put_group(&self, g: muster::domain::Group) -> muster::Result<()> {
        self.inner.put_group(g).await
    }
    async fn remove_group(&self, id: &GroupId) -> muster::Result<bool> {
        self.inner.remove_group(id).await
    }
    async fn list_groups(&self) -> muster::Result<Vec<muster::domain::Group>> {
        self.inner.list_groups().await
    }
    async fn set_sms_opt_out(
        &self,
        number: &muster::domain::PhoneNumber,
        opted_out: bool,
    ) -> muster::Result<Vec<StakeholderId>> {
        self.inner.set_sms_opt_out(number, opted_out).await
    }
}

#[tokio::test]
async fn creating_and_renaming_users_keeps_user_names_unique_without_reading_the_whole_directory() {
    let counting = Arc::new(Counting {
        inner: Arc::new(MemoryDirectory::default()),
        full_reads: Default::default(),
    });
    let s = Scim {
        dir: counting.inner.clone(),
        app: muster::api::finish(scim::router(counting.clone(), Secret::new(TOKEN))),
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            s.user(okta_user(
                &format!("user{i}@example.com"),
                "User",
                "+12125550101",
            ))
            .await,
        );
    }
    // A second user with a taken userName, in another case: refused.
    let (status, body) = s
        .send(
            "POST",
            "/scim/v2/Users",
            okta_user("USER7@Example.com", "Other", "+12125550102"),
        )
        .await;
    assert_scim_error(status, &body, StatusCode::CONFLICT);
    assert_eq!(body["scimType"], "uniqueness");
    // Renaming one user to another's userName: refused; to its own in
    // another case, or to a free one: allowed.
    let rename = |to: &str| json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "userName", "value": to}]});
    let (status, body) = s
        .send(
            "PATCH",
            &format!("/scim/v2/Users/{}", ids[3]),
            rename("user4@example.com"),
        )
        .await;
    assert_scim_error(status, &body, StatusCode::CONFLICT);
    for to in ["USER3@example.com", "fresh@example.com"] {
        let (status, body) = s
            .send("PATCH", &format!("/scim/v2/Users/{}", ids[3]), rename(to))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The freed name can be taken by a new user.
    let new = s
        .user(okta_user("user3@example.com", "New", "+12125550103"))
        .await;
    // Okta's look-up before a create, by userName in another case.
    let (_, found) = s
        .get("/scim/v2/Users?filter=userName%20eq%20%22User3%40example.com%22")
        .await;
    assert_eq!(found["totalResults"], 1, "{found}");
    assert_eq!(found["Resources"][0]["id"], new.as_str());
    assert_eq!(
        counting
            .full_reads
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "provisioning asked the directory by userName and by id, never for everyone"
    );
}

/// Quiet hours over SCIM: the core `timezone` and Muster's extension's
/// `quietHours` together set them; a window Muster cannot read, or a zone
/// it does not know, leaves them unset (the user is still provisioned, as
/// with a phone number Muster cannot use); a window that is not a string
/// is refused.
#[tokio::test]
async fn quiet_hours_come_from_the_user_s_timezone_and_the_extension() {
    let s = scim();
    let mut user = okta_user("quiet@example.com", "Quinn", "+12125550111");
    user["timezone"] = json!("Europe/London");
    user["urn:muster:scim:1.0:User"] = json!({"tier": "2", "quietHours": "22:00-07:00"});
    let (status, created) = s.send("POST", "/scim/v2/Users", user.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_string();
    let q = s
        .person(&id)
        .await
        .and_then(|p| p.quiet)
        .unwrap_or_else(|| panic!("no quiet hours"));
    assert_eq!(
        (q.time_zone.as_str(), String::from(q.hours).as_str()),
        ("Europe/London", "22:00-07:00")
    );
    assert_eq!(
        created["urn:muster:scim:1.0:User"]["quietHours"], "22:00-07:00",
        "{created}"
    );

    let mut late = okta_user("late@example.com", "Lee", "+12125550112");
    late["timezone"] = json!("Europe/London");
    late["urn:muster:scim:1.0:User"] = json!({"quietHours": "late"});
    let (status, created) = s.send("POST", "/scim/v2/Users", late).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_string();
    assert!(s.person(&id).await.is_some_and(|p| p.quiet.is_none()));
    let mut bad = okta_user("num@example.com", "Nu", "+12125550114");
    bad["urn:muster:scim:1.0:User"] = json!({"quietHours": 2200});
    let (status, body) = s.send("POST", "/scim/v2/Users", bad).await;
    assert_scim_error(status, &body, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("quietHours")),
        "{body}"
    );

    let mut unknown = okta_user("mars@example.com", "Mo", "+12125550113");
    unknown["timezone"] = json!("Mars/Olympus");
    unknown["urn:muster:scim:1.0:User"] = json!({"quietHours": "22:00-07:00"});
    let (status, created) = s.send("POST", "/scim/v2/Users", unknown).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_string();
    assert!(s.person(&id).await.is_some_and(|p| p.quiet.is_none()));
}
