//! SCIM 2.0 provisioning (RFC 7643/7644) of the stakeholder directory, as
//! identity providers (Okta, Microsoft Entra ID) drive it: `/scim/v2/Users`
//! and `/scim/v2/Groups` with create, replace, patch, delete, get, list and
//! search (`POST .../.search`) with `eq` filters on `userName`,
//! `externalId`, `displayName` and `id`, `attributes` and
//! `excludedAttributes`; discovery at `/ServiceProviderConfig`, `/Schemas`
//! and `/ResourceTypes` (see `schema`).
//!
//! - Auth: `Authorization: Bearer <token>` (scheme case-insensitive),
//!   compared in constant time.
//! - A user's `id` is opaque (`u-` and 20 hex digits), never made from
//!   `userName`, which is often an email address. The resource is kept as
//!   the IdP wrote it ([`IdpRecord`], sealed at rest with the contacts) and
//!   read back so. From it Muster takes: the name (`displayName`, else
//!   `name.formatted`, else given and family names, else `userName`); the
//!   phone (mobile, else work, else the first) when it is an international
//!   number; the email (primary, else first) when it is an address; the
//!   enterprise extension's `manager.value`; and its own extension
//!   `urn:muster:scim:1.0:User` (`tier` 1-3, `channels`, `pushEndpoint`),
//!   left as they were by a PUT that omits it. A phone number or email
//!   Muster cannot use is kept but reaches no one, and the log says so
//!   (with the user's id only): refusing the user would leave them
//!   unreachable on every channel.
//! - `active: false` deprovisions: the person stays on record, inactive, and
//!   is removed from every group (so no cascade reaches them).
//! - PATCH operations are applied to the resource's SCIM form and the result
//!   is validated like a PUT, so both IdP dialects (Okta's path-less value
//!   maps, Entra's `path` filters and string booleans) take one route.
//! - Every error under `/scim/v2`, including unknown routes, wrong methods,
//!   bodies that are not JSON or too large (over 1 MiB) and undecodable
//!   paths, is a SCIM error (`application/scim+json`); nothing is changed
//!   on any error.

pub(crate) mod patch;
mod schema;

pub use patch::apply_patch;
pub use schema::MAX_RESULTS;

use crate::directory::{as_bool, preferred_email, preferred_phone, str_at};
use crate::domain::{
    Channel, EmailAddress, Group, GroupId, IdpRecord, PhoneNumber, PushEndpoint, Stakeholder,
    StakeholderId, Tier,
};
use crate::ports::DirectoryAdmin;
use crate::secret::Secret;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;

pub(crate) const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub(crate) const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub(crate) const MUSTER_USER: &str = "urn:muster:scim:1.0:User";
pub(crate) const MUSTER_GROUP: &str = "urn:muster:scim:1.0:Group";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub(crate) const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Where SCIM is served.
pub const PREFIX: &str = "/scim/v2";
/// Largest SCIM request body: a group's full member list fits.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
struct ScimState {
    dir: Arc<dyn DirectoryAdmin>,
    token: Secret,
}

/// The SCIM router, under `/scim/v2`.
pub fn router(dir: Arc<dyn DirectoryAdmin>, token: Secret) -> Router {
    let state = ScimState { dir, token };
    Router::new()
        .route("/scim/v2/Users", get(list_users).post(create_user))
        .route("/scim/v2/Users/.search", post(search_users))
        .route(
            "/scim/v2/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/scim/v2/Groups", get(list_groups).post(create_group))
        .route("/scim/v2/Groups/.search", post(search_groups))
        .route(
            "/scim/v2/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route("/scim/v2/.search", post(search_all))
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/scim/v2/Schemas", get(schemas))
        .route("/scim/v2/Schemas/{id}", get(schema_by_id))
        .route("/scim/v2/ResourceTypes", get(resource_types))
        .route("/scim/v2/ResourceTypes/{id}", get(resource_type_by_id))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .route_layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A SCIM error response (RFC 7644 §3.12).
#[derive(Debug)]
pub struct ScimError {
    pub(crate) status: StatusCode,
    pub(crate) scim_type: Option<&'static str>,
    pub(crate) detail: String,
}

impl ScimError {
    pub(crate) fn new(
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: impl Into<String>,
    ) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidValue"), detail)
    }
    pub(crate) fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidSyntax"), detail)
    }
    fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, format!("{what} not found"))
    }
    fn uniqueness(detail: &str) -> Self {
        Self::new(StatusCode::CONFLICT, Some("uniqueness"), detail)
    }
}

impl From<crate::Error> for ScimError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Validation(v) => Self::invalid(
                v.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            crate::Error::NotFound(w) => Self::not_found(&w),
            crate::Error::Conflict(w) => Self::uniqueness(&w),
            other => {
                tracing::error!(error = %other, "directory store failed during a SCIM request");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error")
            }
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({ "schemas": [ERROR], "status": self.status.as_u16().to_string(), "detail": self.detail });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        scim_json(self.status, body)
    }
}

fn scim_json(status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    r
}

type Res = Result<Response, ScimError>;

/// The token of an `Authorization: Bearer` header (the scheme is
/// case-insensitive, RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

async fn auth(State(s): State<ScimState>, req: Request, next: Next) -> Response {
    if bearer(req.headers()).is_some_and(|t| s.token.matches(t)) {
        return next.run(req).await;
    }
    let mut r = ScimError::new(
        StatusCode::UNAUTHORIZED,
        None,
        "a valid bearer token is required",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"muster-scim\""),
    );
    r
}

// ---- request parts --------------------------------------------------------------

/// This service's absolute base URL, for `meta.location` (RFC 7643 §3.1):
/// the scheme and host the request came through, `/scim/v2` when there is
/// no usable `Host`.
struct Base(String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let authority = |h: &str| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        };
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| authority(h))
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        let proto = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .filter(|p| p == "https" || p == "http")
            .or_else(|| parts.uri.scheme_str().map(str::to_string))
            .unwrap_or_else(|| "http".into());
        Ok(Base(match host {
            Some(h) => format!("{proto}://{h}{PREFIX}"),
            None => PREFIX.to_string(),
        }))
    }
}

/// A resource id from the path; one that cannot be decoded names nothing.
struct Id(String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ScimError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Id(id))
            .map_err(|_| ScimError::not_found("resource"))
    }
}

/// A JSON object body (`application/scim+json` or `application/json`; a
/// body without a Content-Type is read as JSON too).
struct Body(Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ScimError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE)
            && !crate::api::is_json_media_type(ct.to_str().unwrap_or_default())
        {
            return Err(ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "send application/scim+json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ScimError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    format!("the body is larger than {MAX_BODY} bytes"),
                )
            } else {
                ScimError::invalid_syntax("the body could not be read")
            }
        })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ScimError::invalid_syntax(format!(
                "malformed JSON at line {}, column {}",
                e.line(),
                e.column()
            ))
        })?;
        if !v.is_object() {
            return Err(ScimError::invalid_syntax("the body must be a JSON object"));
        }
        Ok(Body(v))
    }
}

/// Query parameters, read leniently: names case-insensitive, unknown ones
/// ignored.
struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ScimError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|_| ScimError::invalid("the query string could not be decoded"))
    }
}

// ---- discovery ----------------------------------------------------------------

fn list_of(items: Vec<Value>) -> Response {
    let n = items.len();
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST], "totalResults": n, "startIndex": 1, "itemsPerPage": n, "Resources": items}),
    )
}

async fn service_provider_config(base: Base) -> Response {
    scim_json(StatusCode::OK, schema::service_provider_config(&base.0))
}

async fn schemas(base: Base) -> Response {
    list_of(schema::schemas(&base.0))
}

async fn schema_by_id(base: Base, Id(id): Id) -> Res {
    schema::schema(&base.0, &id)
        .map(|s| scim_json(StatusCode::OK, s))
        .ok_or_else(|| ScimError::not_found("schema"))
}

async fn resource_types(base: Base) -> Response {
    list_of(schema::resource_types(&base.0))
}

async fn resource_type_by_id(base: Base, Id(id): Id) -> Res {
    schema::resource_type(&base.0, &id)
        .map(|s| scim_json(StatusCode::OK, s))
        .ok_or_else(|| ScimError::not_found("resource type"))
}

// ---- list, filter, search, projection ---------------------------------------------

/// `attr eq "value"`: the filter form IdPs use for provisioning. The value
/// is a JSON string (escapes allowed, nothing after it).
pub(crate) fn parse_filter(f: &str, allowed: &[&str]) -> Result<(String, String), ScimError> {
    let bad = || {
        ScimError::new(
            StatusCode::BAD_REQUEST,
            Some("invalidFilter"),
            format!(
                "unsupported filter; use one of: {} eq \"value\"",
                allowed.join(", ")
            ),
        )
    };
    let f = f.trim();
    let (attr, rest) = f.split_once(' ').ok_or_else(bad)?;
    let (op, value) = rest.trim_start().split_once(' ').ok_or_else(bad)?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(bad());
    }
    let value = value.trim();
    let value = match serde_json::from_str::<Value>(value) {
        Ok(Value::String(s)) => s,
        Ok(Value::Bool(b)) => b.to_string(),
        _ => return Err(bad()),
    };
    let attr = allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(attr))
        .ok_or_else(bad)?;
    Ok((attr.to_string(), value))
}

/// RFC 7644 §3.4.2: filter, paging and the attributes to return.
#[derive(Default)]
pub(crate) struct Listing {
    filter: Option<String>,
    start: usize,
    count: usize,
    attributes: Vec<String>,
    excluded: Vec<String>,
}

fn names(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `startIndex` below 1 is 1 and a negative `count` is 0 (RFC 7644
/// §3.4.2.4); `count` is capped at [`MAX_RESULTS`].
fn paging(name: &str, v: &Value) -> Result<i64, ScimError> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .ok_or_else(|| ScimError::invalid(format!("{name} must be an integer")))
}

impl Listing {
    pub(crate) fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Result<Self, ScimError> {
        let mut l = Listing {
            start: 1,
            count: MAX_RESULTS,
            ..Default::default()
        };
        for (k, v) in pairs {
            match k.to_ascii_lowercase().as_str() {
                "filter" => l.filter = v.as_str().map(str::to_string),
                "startindex" => l.start = paging("startIndex", &v)?.max(1) as usize,
                "count" => l.count = (paging("count", &v)?.max(0) as usize).min(MAX_RESULTS),
                "attributes" => l.attributes = list_param(&v),
                "excludedattributes" => l.excluded = list_param(&v),
                _ => {}
            }
        }
        Ok(l)
    }
    fn from_query(p: Params) -> Result<Self, ScimError> {
        Self::from_pairs(p.0.iter().map(|(k, v)| (k.as_str(), json!(v))))
    }
    pub(crate) fn from_search(body: &Value) -> Result<Self, ScimError> {
        if let Some(s) = body.get("schemas").and_then(Value::as_array)
            && !s.iter().any(|x| x.as_str() == Some(SEARCH))
        {
            return Err(ScimError::invalid_syntax(format!(
                "schemas must include {SEARCH}"
            )));
        }
        let obj = body.as_object().cloned().unwrap_or_default();
        Self::from_pairs(
            obj.iter()
                .filter(|(k, _)| *k != "schemas")
                .map(|(k, v)| (k.as_str(), v.clone())),
        )
    }
}

fn list_param(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => names(s),
        Value::Array(a) => a.iter().filter_map(Value::as_str).flat_map(names).collect(),
        _ => Vec::new(),
    }
}

/// An attribute name as `attributes` gives it: (schema URN, attribute,
/// sub-attribute). Core URNs are dropped (`urn:...:User:userName` is
/// `userName`).
fn attribute_ref(name: &str) -> (Option<&'static str>, String, Option<String>) {
    let lower = name.to_ascii_lowercase();
    for urn in [USER, GROUP] {
        if let Some(rest) = lower.strip_prefix(&format!("{}:", urn.to_ascii_lowercase())) {
            let rest = &name[name.len() - rest.len()..];
            let (a, s) = split_sub(rest);
            return (None, a, s);
        }
    }
    for urn in [ENTERPRISE, MUSTER_USER, MUSTER_GROUP] {
        let l = urn.to_ascii_lowercase();
        if lower == l {
            return (Some(urn), String::new(), None);
        }
        if let Some(rest) = lower.strip_prefix(&format!("{l}:")) {
            let rest = &name[name.len() - rest.len()..];
            let (a, s) = split_sub(rest);
            return (Some(urn), a, s);
        }
    }
    let (a, s) = split_sub(name);
    (None, a, s)
}

fn split_sub(s: &str) -> (String, Option<String>) {
    match s.split_once('.') {
        Some((a, b)) => (a.to_string(), Some(b.to_string())),
        None => (s.to_string(), None),
    }
}

fn find_key(obj: &Map<String, Value>, name: &str) -> Option<String> {
    obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// Always returned, whatever `attributes` or `excludedAttributes` say.
const ALWAYS: [&str; 3] = ["schemas", "id", "meta"];

/// Applies `attributes` (only these, and those always returned) or
/// `excludedAttributes` (all but these) to a resource.
pub(crate) fn project(doc: Value, l: &Listing) -> Value {
    let Value::Object(mut full) = doc else {
        return doc;
    };
    if !l.attributes.is_empty() {
        let mut out = Map::new();
        for k in ALWAYS {
            if let Some(v) = full.remove(k) {
                out.insert(k.to_string(), v);
            }
        }
        for name in &l.attributes {
            let (ext, attr, sub) = attribute_ref(name);
            let (src, dst) = match ext {
                None => (&full, &mut out),
                Some(urn) => {
                    let Some(Value::Object(e)) = full.get(urn) else {
                        continue;
                    };
                    if attr.is_empty() {
                        out.insert(urn.to_string(), Value::Object(e.clone()));
                        continue;
                    }
                    let slot = out
                        .entry(urn.to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                    let Value::Object(slot) = slot else { continue };
                    copy_attr(e, slot, &attr, sub.as_deref());
                    continue;
                }
            };
            copy_attr(src, dst, &attr, sub.as_deref());
        }
        return Value::Object(out);
    }
    for name in &l.excluded {
        let (ext, attr, sub) = attribute_ref(name);
        let target = match ext {
            None => Some(&mut full),
            Some(urn) if attr.is_empty() => {
                full.remove(urn);
                None
            }
            Some(urn) => match full.get_mut(urn) {
                Some(Value::Object(e)) => Some(e),
                _ => None,
            },
        };
        let Some(target) = target else { continue };
        let Some(key) = find_key(target, &attr) else {
            continue;
        };
        if ALWAYS.contains(&key.as_str()) && ext.is_none() {
            continue;
        }
        match sub {
            None => {
                target.remove(&key);
            }
            Some(s) => match target.get_mut(&key) {
                Some(Value::Object(o)) => {
                    if let Some(sk) = find_key(o, &s) {
                        o.remove(&sk);
                    }
                }
                Some(Value::Array(items)) => {
                    for it in items.iter_mut() {
                        if let Some(o) = it.as_object_mut()
                            && let Some(sk) = find_key(o, &s)
                        {
                            o.remove(&sk);
                        }
                    }
                }
                _ => {}
            },
        }
    }
    Value::Object(full)
}

fn copy_attr(
    src: &Map<String, Value>,
    dst: &mut Map<String, Value>,
    attr: &str,
    sub: Option<&str>,
) {
    let Some(key) = find_key(src, attr) else {
        return;
    };
    let v = &src[&key];
    match sub {
        None => {
            dst.insert(key, v.clone());
        }
        Some(s) => match v {
            Value::Object(o) => {
                if let Some(sk) = find_key(o, s) {
                    let slot = dst.entry(key).or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(slot) = slot {
                        slot.insert(sk.clone(), o[&sk].clone());
                    }
                }
            }
            Value::Array(items) => {
                let picked: Vec<Value> = items
                    .iter()
                    .filter_map(|it| {
                        let o = it.as_object()?;
                        let sk = find_key(o, s)?;
                        Some(json!({ sk.clone(): o[&sk].clone() }))
                    })
                    .collect();
                dst.insert(key, Value::Array(picked));
            }
            _ => {}
        },
    }
}

fn list_response(items: Vec<Value>, l: &Listing) -> Response {
    let total = items.len();
    let page: Vec<Value> = items
        .into_iter()
        .skip(l.start - 1)
        .take(l.count)
        .map(|d| project(d, l))
        .collect();
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST], "totalResults": total, "startIndex": l.start, "itemsPerPage": page.len(), "Resources": page}),
    )
}

fn one(status: StatusCode, doc: Value, l: &Listing) -> Response {
    scim_json(status, project(doc, l))
}

// ---- users ------------------------------------------------------------------------

fn location(base: &str, kind: &str, id: &str) -> Value {
    json!({"resourceType": kind.trim_end_matches('s'), "location": format!("{base}/{kind}/{id}")})
}

/// The SCIM form of a person: what the IdP wrote (or, for a person from a
/// directory file, their fields), with the id, meta and schemas.
pub(crate) fn user_json(p: &Stakeholder, base: &str) -> Value {
    let mut obj = match &p.idp {
        Some(r) => r.attributes().clone(),
        None => synthesized_user(p),
    };
    obj.insert("id".into(), json!(p.id.as_str()));
    if !obj.contains_key("userName") {
        obj.insert("userName".into(), json!(p.id.as_str()));
    }
    if !p.active {
        obj.insert("active".into(), json!(false));
    }
    obj.insert("meta".into(), location(base, "Users", p.id.as_str()));
    let mut schemas = vec![json!(USER)];
    for ext in [ENTERPRISE, MUSTER_USER] {
        if obj.contains_key(ext) {
            schemas.push(json!(ext));
        }
    }
    obj.insert("schemas".into(), Value::Array(schemas));
    Value::Object(obj)
}

fn synthesized_user(p: &Stakeholder) -> Map<String, Value> {
    let mut v = json!({
        "displayName": p.name,
        "name": {"formatted": p.name},
        "active": p.active,
        MUSTER_USER: {"tier": p.tier.get().to_string(), "channels": p.preferences.iter().map(|c| c.as_str()).collect::<Vec<_>>()},
    });
    if let Some(l) = &p.locale {
        v["locale"] = json!(l);
    }
    let mut phones = Vec::new();
    if let Some(ph) = &p.contacts.phone {
        phones.push(json!({"value": ph.expose(), "type": "mobile", "primary": true}));
    }
    if let Some(ph) = p
        .contacts
        .sms
        .as_ref()
        .filter(|s| Some(*s) != p.contacts.phone.as_ref())
    {
        phones.push(json!({"value": ph.expose(), "type": "other"}));
    }
    if !phones.is_empty() {
        v["phoneNumbers"] = json!(phones);
    }
    if let Some(e) = &p.contacts.email {
        v["emails"] = json!([{"value": e.expose(), "type": "work", "primary": true}]);
    }
    if let Some(m) = &p.manager {
        v[ENTERPRISE] = json!({"manager": {"value": m.as_str()}});
    }
    if let Some(push) = &p.contacts.push {
        v[MUSTER_USER]["pushEndpoint"] = json!(push.expose());
    }
    if let Some(q) = &p.quiet {
        v["timezone"] = json!(q.time_zone);
        v[MUSTER_USER]["quietHours"] = json!(String::from(q.hours));
    }
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A multi-valued attribute must be an array of objects.
fn check_multi(v: &Value, attr: &str) -> Result<(), ScimError> {
    match v.get(attr) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(items)) if items.iter().all(Value::is_object) => Ok(()),
        Some(_) => Err(ScimError::invalid(format!(
            "{attr} must be an array of objects"
        ))),
    }
}

/// A user id or an object with `value` (how IdPs send references).
fn reference(v: &Value, what: &str) -> Result<Option<StakeholderId>, ScimError> {
    let raw = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.as_str(),
        Value::Object(_) => match v.get("value") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(ScimError::invalid(format!("{what}.value must be a string"))),
        },
        _ => return Err(ScimError::invalid(format!("{what} must be a user id"))),
    };
    StakeholderId::parse(raw.trim())
        .map(Some)
        .map_err(|_| ScimError::invalid(format!("{what} is not a known user")))
}

/// How a write treats an extension it does not carry: a PUT or POST
/// leaves Muster's own values as they were (IdPs that do not know the
/// extension never send it); a PATCH's result is the whole resource, so
/// an extension it removed is removed.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Write {
    Put,
    Patch,
}

/// Builds the stakeholder a SCIM user resource describes and the record
/// kept of it.
pub(crate) fn user_from_json(
    v: &Value,
    id: StakeholderId,
    existing: Option<&Stakeholder>,
    write: Write,
) -> Result<Stakeholder, ScimError> {
    let user_name = str_at(v, "userName")
        .ok_or_else(|| ScimError::invalid("userName is required"))?
        .to_string();
    if user_name.len() > 256 {
        return Err(ScimError::invalid("userName is longer than 256 characters"));
    }
    for key in ["displayName", "externalId", "locale"] {
        if v.get(key).is_some_and(|x| !x.is_string() && !x.is_null()) {
            return Err(ScimError::invalid(format!("{key} must be a string")));
        }
    }
    check_multi(v, "emails")?;
    check_multi(v, "phoneNumbers")?;
    if v.get("name")
        .is_some_and(|n| !n.is_object() && !n.is_null())
    {
        return Err(ScimError::invalid("name must be an object"));
    }
    let name = str_at(v, "displayName")
        .or_else(|| v.get("name").and_then(|n| str_at(n, "formatted")))
        .map(str::to_string)
        .or_else(|| {
            let n = v.get("name")?;
            let full = [str_at(n, "givenName"), str_at(n, "familyName")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!full.is_empty()).then_some(full)
        })
        .unwrap_or_else(|| user_name.clone());
    let active = match v.get("active") {
        None | Some(Value::Null) => true,
        Some(a) => as_bool(a).ok_or_else(|| ScimError::invalid("active must be true or false"))?,
    };
    let mut person = existing
        .cloned()
        .unwrap_or_else(|| Stakeholder::new(id.clone(), "", Tier::DEFAULT, Default::default()));
    person.id = id;
    person.name = name;
    person.locale = str_at(v, "locale").map(str::to_string);
    person.active = active;

    // Contacts Muster can use; others are kept in the record only.
    let phone = preferred_phone(v).and_then(|p| str_at(p, "value"));
    person.contacts.phone = match phone.map(PhoneNumber::parse) {
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => {
            tracing::warn!(stakeholder = %person.id, "SCIM user's phone number is not an international number: voice and SMS will not reach them");
            None
        }
        None => None,
    };
    person.contacts.sms = None;
    let email = preferred_email(v).and_then(|e| str_at(e, "value"));
    person.contacts.email = match email.map(EmailAddress::parse) {
        Some(Ok(e)) => Some(e),
        Some(Err(_)) => {
            tracing::warn!(stakeholder = %person.id, "SCIM user's email is not an address: email will not reach them");
            None
        }
        None => None,
    };

    person.manager = match v.get(ENTERPRISE) {
        None | Some(Value::Null) => None,
        Some(Value::Object(e)) => match e.iter().find(|(k, _)| k.eq_ignore_ascii_case("manager")) {
            Some((_, m)) => reference(m, "manager")?,
            None => None,
        },
        Some(_) => {
            return Err(ScimError::invalid(format!(
                "{ENTERPRISE} must be an object"
            )));
        }
    };
    let mut record = v.as_object().cloned().unwrap_or_default();
    for k in ["schemas", "id", "meta", "password", "groups"] {
        record.remove(k);
    }
    match v.get(MUSTER_USER) {
        Some(Value::Object(ext)) => {
            // The tier is kept in the schema's form, a string.
            if let Some(Value::Object(e)) = record.get_mut(MUSTER_USER)
                && let Some(k) = e.keys().find(|k| k.eq_ignore_ascii_case("tier")).cloned()
                && let Some(n) = e[&k].as_i64()
            {
                e.insert(k, json!(n.to_string()));
            }
            let field = |k: &str| {
                ext.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v)
            };
            person.tier = match field("tier") {
                None | Some(Value::Null) => Tier::DEFAULT,
                Some(t) => {
                    let n = t
                        .as_i64()
                        .or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()))
                        .ok_or_else(|| ScimError::invalid("tier must be 1, 2 or 3"))?;
                    Tier::new(n).map_err(|e| ScimError::invalid(format!("tier: {}", e.message)))?
                }
            };
            person.preferences = match field("channels") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(c)) => {
                    let mut out = Vec::new();
                    for c in c {
                        let ch = c
                            .as_str()
                            .map(Channel::parse)
                            .unwrap_or_else(|| {
                                Err(crate::domain::InvalidValue::new(
                                    "",
                                    "channels must be strings",
                                ))
                            })
                            .map_err(|e| ScimError::invalid(format!("channels: {}", e.message)))?;
                        if !out.contains(&ch) {
                            out.push(ch);
                        }
                    }
                    out
                }
                Some(_) => return Err(ScimError::invalid("channels must be an array")),
            };
            person.contacts.push = match field("pushEndpoint") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(
                    PushEndpoint::parse(s)
                        .map_err(|e| ScimError::invalid(format!("pushEndpoint: {}", e.message)))?,
                ),
                Some(_) => return Err(ScimError::invalid("pushEndpoint must be a string")),
            };
            // Quiet hours in the user's `timezone` (core attribute). As
            // with a phone number Muster cannot use, refusing the user
            // would leave them unprovisioned: a window it cannot read, or
            // a zone its database does not know, leaves them unset (the
            // IdP record keeps the values) and the log says so.
            person.quiet = match field("quietHours") {
                None | Some(Value::Null) => None,
                Some(Value::String(h)) => {
                    let hours = crate::domain::QuietHours::parse(h).ok();
                    let zone = str_at(v, "timezone").and_then(|z| crate::domain::time_zone(z).ok());
                    match (zone, hours) {
                        (Some(time_zone), Some(hours)) => {
                            Some(crate::domain::Quiet { time_zone, hours })
                        }
                        _ => {
                            tracing::warn!(stakeholder_id = %person.id, "SCIM quietHours or timezone unreadable: quiet hours not set");
                            None
                        }
                    }
                }
                Some(_) => return Err(ScimError::invalid("quietHours must be a string")),
            };
        }
        None | Some(Value::Null) if write == Write::Put => {
            // Kept as they were, with their record.
            if let Some(ext) = existing
                .and_then(|e| e.idp.as_ref())
                .and_then(|r| r.attributes().get(MUSTER_USER))
            {
                record.insert(MUSTER_USER.into(), ext.clone());
            }
        }
        None | Some(Value::Null) => {
            person.tier = Tier::DEFAULT;
            person.preferences = Vec::new();
            person.contacts.push = None;
            person.quiet = None;
            record.remove(MUSTER_USER);
        }
        Some(_) => {
            return Err(ScimError::invalid(format!(
                "{MUSTER_USER} must be an object"
            )));
        }
    }
    person.idp = Some(IdpRecord::new(record));
    Ok(person)
}

/// A new opaque user id nobody has: `u-` and 20 random hex digits (each
/// candidate asked of the directory by key).
async fn new_user_id(s: &ScimState) -> Result<StakeholderId, ScimError> {
    use rand::TryRngCore;
    for _ in 0..8 {
        let mut b = [0u8; 10];
        rand::rngs::OsRng.try_fill_bytes(&mut b).map_err(|_| {
            tracing::error!("the OS random number generator failed");
            ScimError::new(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error")
        })?;
        let id = StakeholderId::parse(&format!("u-{}", hex::encode(b)))
            .map_err(|e| ScimError::invalid(e.message))?;
        if !s.dir.contains(&id).await? {
            return Ok(id);
        }
    }
    Err(ScimError::uniqueness("no free id"))
}

async fn find_user(s: &ScimState, id: &str) -> Result<Stakeholder, ScimError> {
    let id = StakeholderId::parse(id).map_err(|_| ScimError::not_found("user"))?;
    s.dir
        .stakeholder(&id)
        .await?
        .ok_or_else(|| ScimError::not_found("user"))
}

async fn ensure_unique_user_name(
    s: &ScimState,
    user_name: &str,
    except: Option<&StakeholderId>,
) -> Result<(), ScimError> {
    let clash = s
        .dir
        .find_by_user_name(user_name)
        .await?
        .iter()
        .any(|id| Some(id) != except);
    if clash {
        return Err(ScimError::uniqueness("userName is already in use"));
    }
    Ok(())
}

/// Stores a person; an inactive one is taken out of every group.
async fn save_user(s: &ScimState, person: Stakeholder) -> Result<(), ScimError> {
    if let Some(m) = &person.manager {
        s.dir
            .stakeholder(m)
            .await?
            .ok_or_else(|| ScimError::invalid("manager.value is not a known user"))?;
    }
    let (id, active) = (person.id.clone(), person.active);
    s.dir.put_stakeholder(person).await?;
    if !active {
        for mut g in s.dir.list_groups().await? {
            let before = g.members.len();
            g.members.retain(|m| m != &id);
            let was_manager = g.on_call_manager.as_ref() == Some(&id);
            if was_manager {
                g.on_call_manager = None;
            }
            if g.members.len() != before || was_manager {
                s.dir.put_group(g).await?;
            }
        }
    }
    Ok(())
}

fn user_matches(p: &Stakeholder, attr: &str, value: &str) -> bool {
    match attr {
        "userName" => p.scim_user_name().eq_ignore_ascii_case(value),
        "externalId" => p.idp.as_ref().and_then(IdpRecord::external_id) == Some(value),
        "displayName" => p.name.eq_ignore_ascii_case(value),
        _ => p.id.as_str() == value,
    }
}

const USER_FILTERS: [&str; 4] = ["userName", "externalId", "id", "displayName"];
const GROUP_FILTERS: [&str; 3] = ["displayName", "id", "externalId"];

async fn users(s: &ScimState, l: &Listing, base: &str) -> Result<Vec<Value>, ScimError> {
    let filter = l
        .filter
        .as_deref()
        .map(|f| parse_filter(f, &USER_FILTERS))
        .transpose()?;
    let mut people = match &filter {
        // The lookup IdPs make before every create: asked of the index.
        Some((attr, value)) if attr == "userName" => {
            let mut found = Vec::new();
            for id in s.dir.find_by_user_name(value).await? {
                found.extend(s.dir.stakeholder(&id).await?);
            }
            found
        }
        _ => s.dir.list_stakeholders().await?,
    };
    if let Some((attr, value)) = &filter {
        people.retain(|p| user_matches(p, attr, value));
    }
    people.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(people.iter().map(|p| user_json(p, base)).collect())
}

async fn list_users(State(s): State<ScimState>, base: Base, p: Params) -> Res {
    let l = Listing::from_query(p)?;
    Ok(list_response(users(&s, &l, &base.0).await?, &l))
}

async fn search_users(State(s): State<ScimState>, base: Base, Body(body): Body) -> Res {
    let l = Listing::from_search(&body)?;
    Ok(list_response(users(&s, &l, &base.0).await?, &l))
}

async fn create_user(State(s): State<ScimState>, base: Base, p: Params, Body(body): Body) -> Res {
    let l = Listing::from_query(p)?;
    let user_name =
        str_at(&body, "userName").ok_or_else(|| ScimError::invalid("userName is required"))?;
    ensure_unique_user_name(&s, user_name, None).await?;
    let id = new_user_id(&s).await?;
    let person = user_from_json(&body, id, None, Write::Put)?;
    let out = user_json(&person, &base.0);
    save_user(&s, person).await?;
    let mut r = one(StatusCode::CREATED, out.clone(), &l);
    if let Some(loc) = out["meta"]["location"]
        .as_str()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

async fn get_user(State(s): State<ScimState>, base: Base, Id(id): Id, p: Params) -> Res {
    let l = Listing::from_query(p)?;
    Ok(one(
        StatusCode::OK,
        user_json(&find_user(&s, &id).await?, &base.0),
        &l,
    ))
}

async fn replace_user(
    State(s): State<ScimState>,
    base: Base,
    Id(id): Id,
    p: Params,
    Body(body): Body,
) -> Res {
    let l = Listing::from_query(p)?;
    let current = find_user(&s, &id).await?;
    let out = store_user(&s, &current, &body, Write::Put, &base.0).await?;
    Ok(one(StatusCode::OK, out, &l))
}

async fn store_user(
    s: &ScimState,
    current: &Stakeholder,
    body: &Value,
    write: Write,
    base: &str,
) -> Result<Value, ScimError> {
    let person = user_from_json(body, current.id.clone(), Some(current), write)?;
    ensure_unique_user_name(s, person.scim_user_name(), Some(&current.id)).await?;
    let out = user_json(&person, base);
    save_user(s, person).await?;
    Ok(out)
}

async fn patch_user(
    State(s): State<ScimState>,
    base: Base,
    Id(id): Id,
    p: Params,
    Body(body): Body,
) -> Res {
    let l = Listing::from_query(p)?;
    let current = find_user(&s, &id).await?;
    let mut doc = user_json(&current, &base.0);
    apply_patch(&mut doc, &body)?;
    let out = store_user(&s, &current, &doc, Write::Patch, &base.0).await?;
    Ok(one(StatusCode::OK, out, &l))
}

async fn delete_user(State(s): State<ScimState>, Id(id): Id) -> Res {
    let person = find_user(&s, &id).await?;
    s.dir.remove_stakeholder(&person.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- groups ---------------------------------------------------------------------

/// The SCIM form of a group: what the IdP wrote, with the members as they
/// are now (a deprovisioned user has left every group).
fn group_json(g: &Group, base: &str) -> Value {
    let mut obj = g
        .idp
        .as_ref()
        .map(|r| r.attributes().clone())
        .unwrap_or_default();
    let written: Vec<Value> = obj
        .remove("members")
        .and_then(|m| match m {
            Value::Array(a) => Some(a),
            _ => None,
        })
        .unwrap_or_default();
    let members: Vec<Value> = g
        .members
        .iter()
        .map(|m| {
            written
                .iter()
                .find(|w| w.get("value").and_then(Value::as_str) == Some(m.as_str()))
                .cloned()
                .unwrap_or_else(|| json!({"value": m.as_str(), "$ref": format!("{base}/Users/{m}"), "type": "User"}))
        })
        .collect();
    if !members.is_empty() {
        obj.insert("members".into(), Value::Array(members));
    }
    obj.insert("displayName".into(), json!(g.name));
    if g.idp.is_none() && (g.on_call_manager.is_some() || !g.escalation_channels.is_empty()) {
        let mut ext = json!({"escalationChannels": g.escalation_channels.iter().map(|c| c.as_str()).collect::<Vec<_>>()});
        if let Some(m) = &g.on_call_manager {
            ext["onCallManager"] = json!({ "value": m.as_str() });
        }
        obj.insert(MUSTER_GROUP.into(), ext);
    }
    obj.insert("id".into(), json!(g.id.as_str()));
    obj.insert("meta".into(), location(base, "Groups", g.id.as_str()));
    let mut schemas = vec![json!(GROUP)];
    if obj.contains_key(MUSTER_GROUP) {
        schemas.push(json!(MUSTER_GROUP));
    }
    obj.insert("schemas".into(), Value::Array(schemas));
    Value::Object(obj)
}

async fn group_from_json(
    s: &ScimState,
    v: &Value,
    id: GroupId,
    existing: Option<&Group>,
    write: Write,
) -> Result<Group, ScimError> {
    let name = str_at(v, "displayName")
        .ok_or_else(|| ScimError::invalid("displayName is required"))?
        .to_string();
    if v.get("externalId")
        .is_some_and(|x| !x.is_string() && !x.is_null())
    {
        return Err(ScimError::invalid("externalId must be a string"));
    }
    check_multi(v, "members")?;
    let already: HashSet<&StakeholderId> = existing
        .map(|g| g.members.iter().collect())
        .unwrap_or_default();
    let mut members = Vec::new();
    let mut seen = HashSet::new();
    for m in v
        .get("members")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let mid = reference(m, "members[]")?
            .ok_or_else(|| ScimError::invalid("members[].value is required"))?;
        if !seen.insert(mid.clone()) {
            continue;
        }
        // Members already in the group are known; only new ones are looked up.
        if already.contains(&mid) {
            members.push(mid);
            continue;
        }
        let person = s
            .dir
            .stakeholder(&mid)
            .await?
            .ok_or_else(|| ScimError::invalid("members[].value is not a known user"))?;
        if person.active {
            members.push(mid);
        }
    }
    let mut record = v.as_object().cloned().unwrap_or_default();
    for k in ["schemas", "id", "meta"] {
        record.remove(k);
    }
    let (mut on_call_manager, mut escalation_channels) = match existing {
        Some(g) if write == Write::Put => {
            (g.on_call_manager.clone(), g.escalation_channels.clone())
        }
        _ => (None, Vec::new()),
    };
    match v.get(MUSTER_GROUP) {
        Some(Value::Object(ext)) => {
            // The on-call manager is kept in the schema's form, {"value": id}.
            if let Some(Value::Object(e)) = record.get_mut(MUSTER_GROUP)
                && let Some(k) = e
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case("onCallManager"))
                    .cloned()
                && let Some(id) = e[&k].as_str().map(str::to_string)
            {
                e.insert(k, json!({ "value": id }));
            }
            let field = |k: &str| {
                ext.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v)
            };
            on_call_manager = match field("onCallManager") {
                None => None,
                Some(m) => match reference(m, "onCallManager")? {
                    None => None,
                    Some(mid) => {
                        s.dir.stakeholder(&mid).await?.ok_or_else(|| {
                            ScimError::invalid("onCallManager is not a known user")
                        })?;
                        Some(mid)
                    }
                },
            };
            escalation_channels = match field("escalationChannels") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(list)) => {
                    let mut out = Vec::new();
                    for c in list {
                        let ch = c
                            .as_str()
                            .map(Channel::parse)
                            .unwrap_or_else(|| {
                                Err(crate::domain::InvalidValue::new("", "must be strings"))
                            })
                            .map_err(|e| {
                                ScimError::invalid(format!("escalationChannels: {}", e.message))
                            })?;
                        if !out.contains(&ch) {
                            out.push(ch);
                        }
                    }
                    out
                }
                Some(_) => return Err(ScimError::invalid("escalationChannels must be an array")),
            };
        }
        None | Some(Value::Null) => {
            if write == Write::Put
                && let Some(ext) = existing
                    .and_then(|g| g.idp.as_ref())
                    .and_then(|r| r.attributes().get(MUSTER_GROUP))
            {
                record.insert(MUSTER_GROUP.into(), ext.clone());
            }
        }
        Some(_) => {
            return Err(ScimError::invalid(format!(
                "{MUSTER_GROUP} must be an object"
            )));
        }
    }
    Ok(Group {
        id,
        name,
        members,
        on_call_manager,
        escalation_channels,
        idp: Some(IdpRecord::new(record)),
    })
}

async fn find_group(s: &ScimState, id: &str) -> Result<Group, ScimError> {
    let id = GroupId::parse(id).map_err(|_| ScimError::not_found("group"))?;
    s.dir
        .get_group(&id)
        .await?
        .ok_or_else(|| ScimError::not_found("group"))
}

fn group_matches(g: &Group, attr: &str, value: &str) -> bool {
    match attr {
        "displayName" => g.name.eq_ignore_ascii_case(value),
        "externalId" => g.idp.as_ref().and_then(IdpRecord::external_id) == Some(value),
        _ => g.id.as_str() == value,
    }
}

async fn groups(s: &ScimState, l: &Listing, base: &str) -> Result<Vec<Value>, ScimError> {
    let mut groups = s.dir.list_groups().await?;
    if let Some(f) = &l.filter {
        let (attr, value) = parse_filter(f, &GROUP_FILTERS)?;
        groups.retain(|g| group_matches(g, &attr, &value));
    }
    groups.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(groups.iter().map(|g| group_json(g, base)).collect())
}

async fn list_groups(State(s): State<ScimState>, base: Base, p: Params) -> Res {
    let l = Listing::from_query(p)?;
    Ok(list_response(groups(&s, &l, &base.0).await?, &l))
}

async fn search_groups(State(s): State<ScimState>, base: Base, Body(body): Body) -> Res {
    let l = Listing::from_search(&body)?;
    Ok(list_response(groups(&s, &l, &base.0).await?, &l))
}

/// `POST /.search`: users then groups; a filter on an attribute one of
/// them lacks matches none of that kind.
async fn search_all(State(s): State<ScimState>, base: Base, Body(body): Body) -> Res {
    let l = Listing::from_search(&body)?;
    let mut all = Vec::new();
    match &l.filter {
        None => {
            all.extend(users(&s, &l, &base.0).await?);
            all.extend(groups(&s, &l, &base.0).await?);
        }
        Some(f) => {
            let mut any: Vec<&str> = USER_FILTERS.to_vec();
            any.extend(GROUP_FILTERS);
            parse_filter(f, &any)?;
            if parse_filter(f, &USER_FILTERS).is_ok() {
                all.extend(users(&s, &l, &base.0).await?);
            }
            if parse_filter(f, &GROUP_FILTERS).is_ok() {
                all.extend(groups(&s, &l, &base.0).await?);
            }
        }
    }
    Ok(list_response(all, &l))
}

/// A group id from a display name: lower case, other characters '-', and a
/// suffix makes it unique.
fn new_group_id(name: &str, taken: &dyn Fn(&GroupId) -> bool) -> Result<GroupId, ScimError> {
    let base: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    let base = match base.trim_matches('-') {
        "" | "." | ".." => "group".to_string(),
        b => b.to_string(),
    };
    for n in 1..10_000 {
        let candidate = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let id = GroupId::parse(&candidate).map_err(|e| ScimError::invalid(e.message))?;
        if !taken(&id) {
            return Ok(id);
        }
    }
    Err(ScimError::uniqueness("no free id for this displayName"))
}

async fn create_group(State(s): State<ScimState>, base: Base, p: Params, Body(body): Body) -> Res {
    let l = Listing::from_query(p)?;
    let name = str_at(&body, "displayName")
        .ok_or_else(|| ScimError::invalid("displayName is required"))?;
    let groups = s.dir.list_groups().await?;
    if groups.iter().any(|g| g.name.eq_ignore_ascii_case(name)) {
        return Err(ScimError::uniqueness("displayName is already in use"));
    }
    let taken: HashSet<GroupId> = groups.into_iter().map(|g| g.id).collect();
    let id = new_group_id(name, &|id| taken.contains(id))?;
    let group = group_from_json(&s, &body, id, None, Write::Put).await?;
    let out = group_json(&group, &base.0);
    s.dir.put_group(group).await?;
    let mut r = one(StatusCode::CREATED, out.clone(), &l);
    if let Some(loc) = out["meta"]["location"]
        .as_str()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

async fn get_group(State(s): State<ScimState>, base: Base, Id(id): Id, p: Params) -> Res {
    let l = Listing::from_query(p)?;
    Ok(one(
        StatusCode::OK,
        group_json(&find_group(&s, &id).await?, &base.0),
        &l,
    ))
}

async fn store_group(
    s: &ScimState,
    current: &Group,
    body: &Value,
    write: Write,
    base: &str,
) -> Result<Value, ScimError> {
    let group = group_from_json(s, body, current.id.clone(), Some(current), write).await?;
    if !group.name.eq_ignore_ascii_case(&current.name)
        && s.dir
            .list_groups()
            .await?
            .iter()
            .any(|g| g.id != current.id && g.name.eq_ignore_ascii_case(&group.name))
    {
        return Err(ScimError::uniqueness("displayName is already in use"));
    }
    let out = group_json(&group, base);
    s.dir.put_group(group).await?;
    Ok(out)
}

async fn replace_group(
    State(s): State<ScimState>,
    base: Base,
    Id(id): Id,
    p: Params,
    Body(body): Body,
) -> Res {
    let l = Listing::from_query(p)?;
    let current = find_group(&s, &id).await?;
    let out = store_group(&s, &current, &body, Write::Put, &base.0).await?;
    Ok(one(StatusCode::OK, out, &l))
}

async fn patch_group(
    State(s): State<ScimState>,
    base: Base,
    Id(id): Id,
    p: Params,
    Body(body): Body,
) -> Res {
    let l = Listing::from_query(p)?;
    let current = find_group(&s, &id).await?;
    let mut doc = group_json(&current, &base.0);
    apply_patch(&mut doc, &body)?;
    let out = store_group(&s, &current, &doc, Write::Patch, &base.0).await?;
    Ok(one(StatusCode::OK, out, &l))
}

async fn delete_group(State(s): State<ScimState>, Id(id): Id) -> Res {
    let g = find_group(&s, &id).await?;
    s.dir.remove_group(&g.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
