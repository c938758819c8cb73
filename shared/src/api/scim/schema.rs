//! SCIM discovery (RFC 7644 §4, RFC 7643 §5 to §7): the service provider's
//! configuration, its resource types and the schema of every attribute it
//! keeps, Muster's own extensions included. The schemas describe what
//! Muster stores and returns; other attributes an IdP sends are kept as
//! sent but not described.

use super::{ENTERPRISE, GROUP, MUSTER_GROUP, MUSTER_USER, USER};
use serde_json::{Value, json};

const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SPC: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// An attribute definition (RFC 7643 §7).
struct A {
    name: &'static str,
    kind: &'static str,
    multi: bool,
    required: bool,
    mutability: &'static str,
    uniqueness: &'static str,
    canonical: Value,
    refs: &'static [&'static str],
    sub: Vec<A>,
    description: &'static str,
}

fn a(name: &'static str, kind: &'static str, description: &'static str) -> A {
    A {
        name,
        kind,
        multi: false,
        required: false,
        mutability: "readWrite",
        uniqueness: "none",
        canonical: Value::Null,
        refs: &[],
        sub: Vec::new(),
        description,
    }
}

impl A {
    fn multi(mut self) -> Self {
        self.multi = true;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn mutability(mut self, m: &'static str) -> Self {
        self.mutability = m;
        self
    }
    fn unique(mut self) -> Self {
        self.uniqueness = "server";
        self
    }
    fn canonical(mut self, v: Value) -> Self {
        self.canonical = v;
        self
    }
    fn refs(mut self, r: &'static [&'static str]) -> Self {
        self.refs = r;
        self
    }
    fn sub(mut self, s: Vec<A>) -> Self {
        self.sub = s;
        self
    }
    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "type": self.kind,
            "multiValued": self.multi,
            "description": self.description,
            "required": self.required,
            "caseExact": self.kind == "reference",
            "mutability": self.mutability,
            "returned": "default",
            "uniqueness": self.uniqueness,
        });
        if !self.canonical.is_null() {
            v["canonicalValues"] = self.canonical.clone();
        }
        if !self.refs.is_empty() {
            v["referenceTypes"] = json!(self.refs);
        }
        if !self.sub.is_empty() {
            v["subAttributes"] = Value::Array(self.sub.iter().map(A::json).collect());
        }
        v
    }
}

fn multi_valued(kinds: Value) -> Vec<A> {
    vec![
        a("value", "string", "The value."),
        a("display", "string", "A human-readable name."),
        a("type", "string", "What it is for.").canonical(kinds),
        a(
            "primary",
            "boolean",
            "The primary value of the attribute (at most one).",
        ),
    ]
}

fn user() -> Vec<A> {
    vec![
        a("userName", "string", "The identity provider's unique name for the user (often an email address; masked wherever contacts are).").required().unique(),
        a("name", "complex", "The user's name.").sub(vec![
            a("formatted", "string", "The full name."),
            a("familyName", "string", "Family name."),
            a("givenName", "string", "Given name."),
            a("middleName", "string", "Middle name."),
            a("honorificPrefix", "string", "Honorific prefix."),
            a("honorificSuffix", "string", "Honorific suffix."),
        ]),
        a("displayName", "string", "The name Muster shows (else name.formatted, else given and family names, else userName)."),
        a("locale", "string", "The user's locale (fr, fr-CA): picks the incident's message in that language, and the voice its calls are read in."),
        a("timezone", "string", "IANA time zone (Europe/London): where the user's quietHours are counted."),
        a("active", "boolean", "false deprovisions: kept on record, removed from every group."),
        a("emails", "complex", "Email addresses; Muster emails the primary one, else the first.").multi().sub(multi_valued(json!(["work", "home", "other"]))),
        a("phoneNumbers", "complex", "Phone numbers; Muster calls and texts the mobile one, else work, else the first, when it is an international number (+ and country code). Others are kept but reach no one.").multi().sub(multi_valued(json!(["mobile", "work", "home", "fax", "pager", "other"]))),
    ]
}

fn enterprise() -> Vec<A> {
    vec![
        a("employeeNumber", "string", "Employee number."),
        a("costCenter", "string", "Cost center."),
        a("organization", "string", "Organization."),
        a("division", "string", "Division."),
        a("department", "string", "Department."),
        a(
            "manager",
            "complex",
            "The user's manager: escalations of the user's failures reach them.",
        )
        .sub(vec![
            a(
                "value",
                "string",
                "The manager's id (a user of this service).",
            ),
            a("$ref", "reference", "The manager's URI.").refs(&["User"]),
            a("displayName", "string", "The manager's name.").mutability("readOnly"),
        ]),
    ]
}

fn muster_user() -> Vec<A> {
    vec![
        a("tier", "string", "Stakeholder tier, \"1\", \"2\" or \"3\" (the integers are accepted too): tier 1 is reached first.").canonical(json!(["1", "2", "3"])),
        a("channels", "string", "Channels the user accepts (empty: all).").multi().canonical(json!(["voice", "sms", "email", "push"])),
        a("pushEndpoint", "string", "Push device token or platform endpoint ARN."),
        a("quietHours", "string", "Quiet hours in the user's timezone, HH:MM-HH:MM (22:00-07:00): a P3 or P4 waits for them to end."),
    ]
}

fn group() -> Vec<A> {
    vec![
        a(
            "displayName",
            "string",
            "The group's name; its id is made from it at creation.",
        )
        .required(),
        a(
            "members",
            "complex",
            "The group's members: users of this service.",
        )
        .multi()
        .sub(vec![
            a("value", "string", "The member's id."),
            a("$ref", "reference", "The member's URI.").refs(&["User"]),
            a("type", "string", "The member's resource type.").canonical(json!(["User"])),
            a("display", "string", "The member's name."),
        ]),
    ]
}

fn muster_group() -> Vec<A> {
    vec![
        a("onCallManager", "complex", "Who escalations of this group's failures reach first (a user id, or an object with value).").sub(vec![
            a("value", "string", "The on-call manager's id."),
            a("$ref", "reference", "The on-call manager's URI.").refs(&["User"]),
        ]),
        a("escalationChannels", "string", "Channel order of escalation cascades (empty: the policy's).").multi().canonical(json!(["voice", "sms", "email", "push"])),
    ]
}

/// Every schema: (id, name, description, attributes).
fn all() -> [(&'static str, &'static str, &'static str, Vec<A>); 5] {
    [
        (USER, "User", "User Account", user()),
        (GROUP, "Group", "Group", group()),
        (
            ENTERPRISE,
            "EnterpriseUser",
            "Enterprise User",
            enterprise(),
        ),
        (
            MUSTER_USER,
            "MusterUser",
            "How Muster reaches the user",
            muster_user(),
        ),
        (
            MUSTER_GROUP,
            "MusterGroup",
            "Where a group's escalations go",
            muster_group(),
        ),
    ]
}

fn schema_json(base: &str, id: &str, name: &str, description: &str, attrs: &[A]) -> Value {
    json!({
        "schemas": [SCHEMA],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attrs.iter().map(A::json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

pub(crate) fn schemas(base: &str) -> Vec<Value> {
    all()
        .iter()
        .map(|(id, n, d, a)| schema_json(base, id, n, d, a))
        .collect()
}

pub(crate) fn schema(base: &str, id: &str) -> Option<Value> {
    all()
        .iter()
        .find(|(s, ..)| s.eq_ignore_ascii_case(id))
        .map(|(id, n, d, a)| schema_json(base, id, n, d, a))
}

pub(crate) fn resource_types(base: &str) -> Vec<Value> {
    let rt = |id: &str, description: &str, endpoint: &str, schema: &str, exts: &[&str]| {
        json!({
            "schemas": [RESOURCE_TYPE],
            "id": id,
            "name": id,
            "description": description,
            "endpoint": endpoint,
            "schema": schema,
            "schemaExtensions": exts.iter().map(|e| json!({"schema": e, "required": false})).collect::<Vec<_>>(),
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{id}")},
        })
    };
    vec![
        rt(
            "User",
            "A stakeholder",
            "/Users",
            USER,
            &[ENTERPRISE, MUSTER_USER],
        ),
        rt(
            "Group",
            "A stakeholder group",
            "/Groups",
            GROUP,
            &[MUSTER_GROUP],
        ),
    ]
}

pub(crate) fn resource_type(base: &str, id: &str) -> Option<Value> {
    resource_types(base)
        .into_iter()
        .find(|r| r["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
}

/// Most resources one list or search answers.
pub const MAX_RESULTS: usize = 200;

pub(crate) fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SPC],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "Authorization: Bearer <the MUSTER_SCIM_TOKEN secret>",
            "primary": true
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}
