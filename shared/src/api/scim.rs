//! SCIM 2.0 provisioning (RFC 7643/7644) of the stakeholder directory, as
//! identity providers (Okta, Microsoft Entra ID) drive it: `/scim/v2/Users`
//! and `/scim/v2/Groups` with create, replace, patch, delete, get, and list
//! with `eq` filters on `userName`, `externalId`, `displayName` and `id`.
//!
//! - Auth: `Authorization: Bearer <token>`, compared in constant time.
//! - A user's `id` is the stakeholder id (from `userName` when it is a valid
//!   id, made unique). `phoneNumbers` (mobile first, then work) must be in
//!   international form; the first is used for voice and SMS. `emails`: the
//!   primary, else the first. The enterprise extension's `manager.value` is
//!   the manager. Muster's own extension `urn:muster:scim:1.0:User` carries
//!   `tier` (1-3), `channels` and `pushEndpoint`; left out, existing values
//!   are kept.
//! - `active: false` deprovisions: the person stays on record, inactive, and
//!   is removed from every group (so no cascade reaches them).
//! - PATCH operations are applied to the resource's SCIM form and the result
//!   is validated like a PUT, so both IdP dialects (Okta's path-less value
//!   maps, Entra's `path` filters and string booleans) take one route.
//! - Errors are SCIM error responses; nothing is changed on any error.

use super::Secret;
use crate::domain::{
    Channel, EmailAddress, Group, GroupId, PhoneNumber, PushEndpoint, Stakeholder, StakeholderId,
    Tier,
};
use crate::ports::DirectoryAdmin;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const MUSTER_USER: &str = "urn:muster:scim:1.0:User";
const MUSTER_GROUP: &str = "urn:muster:scim:1.0:Group";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

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
        .route(
            "/scim/v2/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/scim/v2/Groups", get(list_groups).post(create_group))
        .route(
            "/scim/v2/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
        )
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// A SCIM error response.
#[derive(Debug)]
pub struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: String,
}

impl ScimError {
    fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidValue"), detail)
    }
    fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, format!("{what} not found"))
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
            crate::Error::Conflict(w) => Self::new(StatusCode::CONFLICT, Some("uniqueness"), w),
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

async fn auth(State(s): State<ScimState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|t| s.token.matches(t.trim())) {
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

async fn service_provider_config() -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": 200},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{"type": "oauthbearertoken", "name": "Bearer token", "description": "Authorization: Bearer <token>"}]
        }),
    )
}

// ---- list and filter --------------------------------------------------------

#[derive(Deserialize)]
struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<usize>,
    count: Option<usize>,
}

/// `attr eq "value"`: the only filter form IdPs use for provisioning.
fn parse_filter(f: &str, allowed: &[&str]) -> Result<(String, String), ScimError> {
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
    let mut parts = f.trim().splitn(3, ' ');
    let (Some(attr), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let value = value
        .trim()
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(bad)?;
    let attr = allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(attr))
        .ok_or_else(bad)?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(bad());
    }
    Ok((attr.to_string(), value.replace("\\\"", "\"")))
}

fn list_response(mut items: Vec<Value>, q: &ListQuery) -> Response {
    let total = items.len();
    let start = q.start_index.unwrap_or(1).max(1);
    let count = q.count.unwrap_or(200).min(200);
    let page: Vec<Value> = items.drain(..).skip(start - 1).take(count).collect();
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST], "totalResults": total, "startIndex": start, "itemsPerPage": page.len(), "Resources": page}),
    )
}

// ---- users --------------------------------------------------------------------

fn user_json(p: &Stakeholder) -> Value {
    let mut v = json!({
        "schemas": [USER, ENTERPRISE, MUSTER_USER],
        "id": p.id.as_str(),
        "userName": p.user_name.clone().unwrap_or_else(|| p.id.to_string()),
        "displayName": p.name,
        "name": {"formatted": p.name},
        "active": p.active,
        "meta": {"resourceType": "User", "location": format!("/scim/v2/Users/{}", p.id)},
        MUSTER_USER: {"tier": p.tier.get(), "channels": p.preferences.iter().map(|c| c.as_str()).collect::<Vec<_>>()},
    });
    if let Some(x) = &p.external_id {
        v["externalId"] = json!(x);
    }
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
    v
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// The phone number a SCIM user gives: mobile, else work, else the first.
pub fn preferred_phone(v: &Value) -> Option<&Value> {
    let rank = |p: &&Value| match str_at(p, "type").map(str::to_ascii_lowercase).as_deref() {
        Some("mobile") => 0,
        Some("work") => 1,
        _ => 2,
    };
    v.get("phoneNumbers")
        .and_then(Value::as_array)?
        .iter()
        .min_by_key(rank)
}

/// The email a SCIM user gives: the primary, else the first.
pub fn preferred_email(v: &Value) -> Option<&Value> {
    let emails = v.get("emails").and_then(Value::as_array)?;
    emails
        .iter()
        .find(|e| e.get("primary").and_then(as_bool) == Some(true))
        .or(emails.first())
}

/// Builds the stakeholder a SCIM user resource describes. Values the IdP
/// does not manage (tier, channels, push, opt-out) are kept from `existing`.
fn user_from_json(
    v: &Value,
    id: StakeholderId,
    existing: Option<&Stakeholder>,
) -> Result<Stakeholder, ScimError> {
    let user_name = str_at(v, "userName")
        .ok_or_else(|| ScimError::invalid("userName is required"))?
        .to_string();
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
        .unwrap_or_else(|| Stakeholder::new(id.clone(), "", Tier::ALL[1], Default::default()));
    person.id = id;
    person.name = name;
    person.user_name = Some(user_name);
    person.external_id = str_at(v, "externalId").map(str::to_string);
    person.locale = str_at(v, "locale").map(str::to_string);
    person.active = active;

    let phone = match preferred_phone(v) {
        Some(p) => {
            let raw = str_at(p, "value")
                .ok_or_else(|| ScimError::invalid("phoneNumbers[].value is required"))?;
            let kind = str_at(p, "type").unwrap_or("phone");
            Some(PhoneNumber::parse(raw).map_err(|e| {
                ScimError::invalid(format!(
                    "phoneNumbers[type eq \"{kind}\"].value: {}",
                    e.message
                ))
            })?)
        }
        None => None,
    };
    let email = preferred_email(v);
    let email = match email {
        Some(e) => {
            let raw = str_at(e, "value")
                .ok_or_else(|| ScimError::invalid("emails[].value is required"))?;
            Some(
                EmailAddress::parse(raw)
                    .map_err(|e| ScimError::invalid(format!("emails[].value: {}", e.message)))?,
            )
        }
        None => None,
    };
    person.contacts.phone = phone;
    person.contacts.sms = None;
    person.contacts.email = email;

    person.manager = match v.get(ENTERPRISE).and_then(|e| e.get("manager")) {
        None | Some(Value::Null) => None,
        Some(m) => {
            let raw = m
                .as_str()
                .or_else(|| str_at(m, "value"))
                .ok_or_else(|| ScimError::invalid("manager.value is required"))?;
            Some(
                StakeholderId::parse(raw)
                    .map_err(|e| ScimError::invalid(format!("manager.value: {}", e.message)))?,
            )
        }
    };
    if let Some(ext) = v.get(MUSTER_USER) {
        if let Some(t) = ext.get("tier") {
            let n = t
                .as_i64()
                .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| ScimError::invalid("tier must be 1, 2 or 3"))?;
            person.tier =
                Tier::new(n).map_err(|e| ScimError::invalid(format!("tier: {}", e.message)))?;
        }
        if let Some(c) = ext.get("channels").and_then(Value::as_array) {
            person.preferences = c
                .iter()
                .map(|c| {
                    c.as_str().map(Channel::parse).unwrap_or_else(|| {
                        Err(crate::domain::InvalidValue::new(
                            "",
                            "channels must be strings",
                        ))
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(|e| ScimError::invalid(format!("channels: {}", e.message)))?;
        }
        if let Some(p) = ext.get("pushEndpoint") {
            person.contacts.push = match p.as_str() {
                Some(s) => Some(
                    PushEndpoint::parse(s)
                        .map_err(|e| ScimError::invalid(format!("pushEndpoint: {}", e.message)))?,
                ),
                None => None,
            };
        }
    }
    Ok(person)
}

/// A stakeholder id from a userName: invalid characters become '-', and a
/// suffix makes it unique.
fn new_user_id(
    user_name: &str,
    taken: &dyn Fn(&StakeholderId) -> bool,
) -> Result<StakeholderId, ScimError> {
    let base: String = user_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@') {
                c
            } else {
                '-'
            }
        })
        .take(120)
        .collect();
    let base = if base.is_empty() {
        "user".to_string()
    } else {
        base
    };
    for n in 1..10_000 {
        let candidate = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let id = StakeholderId::parse(&candidate).map_err(|e| ScimError::invalid(e.message))?;
        if !taken(&id) {
            return Ok(id);
        }
    }
    Err(ScimError::new(
        StatusCode::CONFLICT,
        Some("uniqueness"),
        "no free id for this userName",
    ))
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
    let clash = s.dir.list_stakeholders().await?.into_iter().any(|p| {
        Some(&p.id) != except
            && p.user_name
                .as_deref()
                .unwrap_or(p.id.as_str())
                .eq_ignore_ascii_case(user_name)
    });
    if clash {
        return Err(ScimError::new(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            "userName is already in use",
        ));
    }
    Ok(())
}

/// Stores a person; an inactive one is taken out of every group.
async fn save_user(s: &ScimState, person: Stakeholder) -> Result<(), ScimError> {
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

async fn list_users(State(s): State<ScimState>, Query(q): Query<ListQuery>) -> Res {
    let mut people = s.dir.list_stakeholders().await?;
    if let Some(f) = &q.filter {
        let (attr, value) = parse_filter(f, &["userName", "externalId", "id"])?;
        people.retain(|p| match attr.as_str() {
            "userName" => p
                .user_name
                .as_deref()
                .unwrap_or(p.id.as_str())
                .eq_ignore_ascii_case(&value),
            "externalId" => p.external_id.as_deref() == Some(value.as_str()),
            _ => p.id.as_str() == value,
        });
    }
    Ok(list_response(people.iter().map(user_json).collect(), &q))
}

async fn create_user(State(s): State<ScimState>, Json(body): Json<Value>) -> Res {
    let user_name =
        str_at(&body, "userName").ok_or_else(|| ScimError::invalid("userName is required"))?;
    ensure_unique_user_name(&s, user_name, None).await?;
    let existing: Vec<StakeholderId> = s
        .dir
        .list_stakeholders()
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    let id = new_user_id(user_name, &|id| existing.contains(id))?;
    let person = user_from_json(&body, id, None)?;
    if let Some(m) = &person.manager {
        s.dir
            .stakeholder(m)
            .await?
            .ok_or_else(|| ScimError::invalid("manager.value is not a known user"))?;
    }
    let out = user_json(&person);
    save_user(&s, person).await?;
    Ok(scim_json(StatusCode::CREATED, out))
}

async fn get_user(State(s): State<ScimState>, Path(id): Path<String>) -> Res {
    Ok(scim_json(
        StatusCode::OK,
        user_json(&find_user(&s, &id).await?),
    ))
}

async fn replace_user(
    State(s): State<ScimState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Res {
    let current = find_user(&s, &id).await?;
    store_user(&s, &current, &body).await
}

async fn store_user(s: &ScimState, current: &Stakeholder, body: &Value) -> Res {
    let person = user_from_json(body, current.id.clone(), Some(current))?;
    if let Some(u) = &person.user_name {
        ensure_unique_user_name(s, u, Some(&current.id)).await?;
    }
    if let Some(m) = &person.manager {
        s.dir
            .stakeholder(m)
            .await?
            .ok_or_else(|| ScimError::invalid("manager.value is not a known user"))?;
    }
    let out = user_json(&person);
    save_user(s, person).await?;
    Ok(scim_json(StatusCode::OK, out))
}

async fn patch_user(
    State(s): State<ScimState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Res {
    let current = find_user(&s, &id).await?;
    let mut doc = user_json(&current);
    apply_patch(&mut doc, &body)?;
    store_user(&s, &current, &doc).await
}

async fn delete_user(State(s): State<ScimState>, Path(id): Path<String>) -> Res {
    let person = find_user(&s, &id).await?;
    s.dir.remove_stakeholder(&person.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- groups ---------------------------------------------------------------------

fn group_json(g: &Group) -> Value {
    let mut v = json!({
        "schemas": [GROUP, MUSTER_GROUP],
        "id": g.id.as_str(),
        "displayName": g.name,
        "members": g.members.iter().map(|m| json!({"value": m.as_str()})).collect::<Vec<_>>(),
        "meta": {"resourceType": "Group", "location": format!("/scim/v2/Groups/{}", g.id)},
        MUSTER_GROUP: {"escalationChannels": g.escalation_channels.iter().map(|c| c.as_str()).collect::<Vec<_>>()},
    });
    if let Some(m) = &g.on_call_manager {
        v[MUSTER_GROUP]["onCallManager"] = json!(m.as_str());
    }
    v
}

async fn group_from_json(
    s: &ScimState,
    v: &Value,
    id: GroupId,
    existing: Option<&Group>,
) -> Result<Group, ScimError> {
    let name = str_at(v, "displayName")
        .ok_or_else(|| ScimError::invalid("displayName is required"))?
        .to_string();
    let mut members = Vec::new();
    for m in v
        .get("members")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let raw =
            str_at(m, "value").ok_or_else(|| ScimError::invalid("members[].value is required"))?;
        let mid = StakeholderId::parse(raw)
            .map_err(|_| ScimError::invalid("members[].value is not a known user"))?;
        let person = s
            .dir
            .stakeholder(&mid)
            .await?
            .ok_or_else(|| ScimError::invalid("members[].value is not a known user"))?;
        if person.active && !members.contains(&mid) {
            members.push(mid);
        }
    }
    let ext = v.get(MUSTER_GROUP);
    let on_call_manager = match ext.and_then(|e| e.get("onCallManager")) {
        None => existing.and_then(|g| g.on_call_manager.clone()),
        Some(Value::Null) => None,
        Some(m) => {
            let raw = m
                .as_str()
                .or_else(|| str_at(m, "value"))
                .ok_or_else(|| ScimError::invalid("onCallManager must be a user id"))?;
            let mid = StakeholderId::parse(raw)
                .map_err(|_| ScimError::invalid("onCallManager is not a known user"))?;
            s.dir
                .stakeholder(&mid)
                .await?
                .ok_or_else(|| ScimError::invalid("onCallManager is not a known user"))?;
            Some(mid)
        }
    };
    let escalation_channels = match ext
        .and_then(|e| e.get("escalationChannels"))
        .and_then(Value::as_array)
    {
        None => existing
            .map(|g| g.escalation_channels.clone())
            .unwrap_or_default(),
        Some(list) => list
            .iter()
            .map(|c| {
                c.as_str()
                    .map(Channel::parse)
                    .unwrap_or_else(|| Err(crate::domain::InvalidValue::new("", "must be strings")))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| ScimError::invalid(format!("escalationChannels: {}", e.message)))?,
    };
    Ok(Group {
        id,
        name,
        members,
        on_call_manager,
        escalation_channels,
    })
}

async fn find_group(s: &ScimState, id: &str) -> Result<Group, ScimError> {
    let id = GroupId::parse(id).map_err(|_| ScimError::not_found("group"))?;
    s.dir
        .get_group(&id)
        .await?
        .ok_or_else(|| ScimError::not_found("group"))
}

async fn list_groups(State(s): State<ScimState>, Query(q): Query<ListQuery>) -> Res {
    let mut groups = s.dir.list_groups().await?;
    if let Some(f) = &q.filter {
        let (attr, value) = parse_filter(f, &["displayName", "id", "externalId"])?;
        groups.retain(|g| match attr.as_str() {
            "displayName" => g.name.eq_ignore_ascii_case(&value),
            "id" => g.id.as_str() == value,
            _ => false,
        });
    }
    Ok(list_response(groups.iter().map(group_json).collect(), &q))
}

async fn create_group(State(s): State<ScimState>, Json(body): Json<Value>) -> Res {
    let name = str_at(&body, "displayName")
        .ok_or_else(|| ScimError::invalid("displayName is required"))?;
    let groups = s.dir.list_groups().await?;
    if groups.iter().any(|g| g.name.eq_ignore_ascii_case(name)) {
        return Err(ScimError::new(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            "displayName is already in use",
        ));
    }
    let taken: Vec<GroupId> = groups.into_iter().map(|g| g.id).collect();
    let sid = new_user_id(&name.to_ascii_lowercase().replace(' ', "-"), &|id| {
        taken.iter().any(|g| g.as_str() == id.as_str())
    })?;
    let id = GroupId::parse(sid.as_str()).map_err(|e| ScimError::invalid(e.message))?;
    let group = group_from_json(&s, &body, id, None).await?;
    let out = group_json(&group);
    s.dir.put_group(group).await?;
    Ok(scim_json(StatusCode::CREATED, out))
}

async fn get_group(State(s): State<ScimState>, Path(id): Path<String>) -> Res {
    Ok(scim_json(
        StatusCode::OK,
        group_json(&find_group(&s, &id).await?),
    ))
}

async fn replace_group(
    State(s): State<ScimState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Res {
    let current = find_group(&s, &id).await?;
    let group = group_from_json(&s, &body, current.id.clone(), Some(&current)).await?;
    let out = group_json(&group);
    s.dir.put_group(group).await?;
    Ok(scim_json(StatusCode::OK, out))
}

async fn patch_group(
    State(s): State<ScimState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Res {
    let current = find_group(&s, &id).await?;
    let mut doc = group_json(&current);
    apply_patch(&mut doc, &body)?;
    let group = group_from_json(&s, &doc, current.id.clone(), Some(&current)).await?;
    let out = group_json(&group);
    s.dir.put_group(group).await?;
    Ok(scim_json(StatusCode::OK, out))
}

async fn delete_group(State(s): State<ScimState>, Path(id): Path<String>) -> Res {
    let g = find_group(&s, &id).await?;
    s.dir.remove_group(&g.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- PATCH ------------------------------------------------------------------------

/// Applies a SCIM PatchOp to a resource's SCIM form. Paths: `attr`,
/// `attr.sub`, `attr[key eq "v"]`, `attr[key eq "v"].sub`, and extension
/// URNs (`urn:...:User:manager`). Without a path the value is an object of
/// attributes to set.
pub fn apply_patch(doc: &mut Value, body: &Value) -> Result<(), ScimError> {
    let ops = body
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid("Operations is required"))?;
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| ScimError::invalid("op is required"))?;
        if !matches!(kind.as_str(), "add" | "replace" | "remove") {
            return Err(ScimError::invalid("op must be add, replace or remove"));
        }
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match op.get("path").and_then(Value::as_str) {
            None => {
                let Value::Object(map) = value else {
                    return Err(ScimError::new(
                        StatusCode::BAD_REQUEST,
                        Some("noTarget"),
                        "an operation without a path needs an object value",
                    ));
                };
                for (k, v) in map {
                    set_path(doc, &k, &kind, v)?;
                }
            }
            Some(path) => set_path(doc, path, &kind, value)?,
        }
    }
    Ok(())
}

fn set_path(doc: &mut Value, path: &str, kind: &str, value: Value) -> Result<(), ScimError> {
    let bad_path = || {
        ScimError::new(
            StatusCode::BAD_REQUEST,
            Some("invalidPath"),
            "unsupported path",
        )
    };
    let obj = doc.as_object_mut().ok_or_else(bad_path)?;
    // Extension attributes: "urn:...:User:manager" or an extension object key.
    for ext in [ENTERPRISE, MUSTER_USER, MUSTER_GROUP] {
        if let Some(rest) = path.strip_prefix(ext).and_then(|r| r.strip_prefix(':')) {
            let target = obj
                .entry(ext.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            return set_path(target, rest, kind, value);
        }
        if path == ext {
            return set_value(obj, ext, kind, value);
        }
    }
    if let Some((head, tail)) = path.split_once('[') {
        let (filter, sub) = tail.split_once(']').ok_or_else(bad_path)?;
        let (key, want) = parse_filter(filter, &["type", "value", "display", "primary"])?;
        let sub = sub.strip_prefix('.');
        let attr = obj
            .keys()
            .find(|k| k.eq_ignore_ascii_case(head))
            .cloned()
            .unwrap_or_else(|| head.to_string());
        let arr = obj.entry(attr).or_insert_with(|| Value::Array(Vec::new()));
        let items = arr.as_array_mut().ok_or_else(bad_path)?;
        let matches = |e: &Value| {
            e.get(&key)
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .is_some_and(|v| v.eq_ignore_ascii_case(&want))
        };
        if kind == "remove" && sub.is_none() {
            items.retain(|e| !matches(e));
            return Ok(());
        }
        let pos = match items.iter().position(matches) {
            Some(p) => p,
            None if kind == "remove" => return Ok(()),
            None => {
                items.push(json!({ key.clone(): want }));
                items.len() - 1
            }
        };
        let item = items[pos].as_object_mut().ok_or_else(bad_path)?;
        return match sub {
            Some(s) => set_value(item, s, kind, value),
            None => {
                if let Value::Object(m) = value {
                    item.extend(m);
                }
                Ok(())
            }
        };
    }
    if let Some((head, sub)) = path.split_once('.') {
        let attr = obj
            .keys()
            .find(|k| k.eq_ignore_ascii_case(head))
            .cloned()
            .unwrap_or_else(|| head.to_string());
        let target = obj.entry(attr).or_insert_with(|| Value::Object(Map::new()));
        return set_path(target, sub, kind, value);
    }
    set_value(obj, path, kind, value)
}

fn set_value(
    obj: &mut Map<String, Value>,
    attr: &str,
    kind: &str,
    value: Value,
) -> Result<(), ScimError> {
    let key = obj
        .keys()
        .find(|k| k.eq_ignore_ascii_case(attr))
        .cloned()
        .unwrap_or_else(|| attr.to_string());
    match kind {
        // Removing listed values from a multi-valued attribute (Entra's
        // member removal) removes just those.
        "remove" => match (obj.get_mut(&key), value) {
            (Some(Value::Array(existing)), Value::Array(gone)) => {
                let gone: Vec<Option<&Value>> = gone.iter().map(|g| g.get("value")).collect();
                existing.retain(|e| !gone.contains(&e.get("value")));
            }
            _ => {
                obj.remove(&key);
            }
        },
        "add" => match (obj.get_mut(&key), value) {
            // Adding to a multi-valued attribute appends.
            (Some(Value::Array(existing)), Value::Array(more)) => existing.extend(more),
            (_, v) => {
                obj.insert(key, v);
            }
        },
        _ => {
            obj.insert(key, value);
        }
    }
    Ok(())
}
