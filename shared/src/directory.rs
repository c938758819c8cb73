//! Directory files: stakeholders and groups in YAML or CSV, validated as a
//! whole. Phone numbers are normalised to E.164, emails and ids validated,
//! references (members, managers, on-call managers) resolved. Every problem
//! is reported with its line (YAML) or row (CSV), field and value, and no
//! directory is produced unless the whole file is valid.
//!
//! YAML:
//! ```yaml
//! stakeholders:
//!   - id: cio
//!     name: Chief Information Officer
//!     tier: 1
//!     phone: "+44 20 7946 0001"
//!     email: cio@example.com
//!     channels: [voice, sms, email]
//! groups:
//!   - id: ops-leadership
//!     members: [cio]
//!     on_call_manager: cio
//!     escalation_channels: [voice, sms]
//! ```
//! CSV (one row per stakeholder; list cells separated by `;`):
//! `id,name,tier,phone,sms,email,push,channels,locale,time_zone,quiet_hours,manager,groups,on_call_for`

use crate::domain::{
    Channel, ContactMethods, EmailAddress, Group, GroupId, InvalidValue, PhoneNumber, PushEndpoint,
    Stakeholder, StakeholderId, Tier,
};
use marked_yaml::Spanned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// A validated directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirectoryFile {
    pub stakeholders: Vec<Stakeholder>,
    pub groups: Vec<Group>,
}

/// One problem: where, which field, what value, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryError {
    pub location: String,
    pub field: String,
    pub value: String,
    pub message: String,
}

impl fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.field)?;
        if !self.value.is_empty() {
            write!(f, " = {:?}", self.value)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every group must have an escalation path: an on-call manager, or the
/// policy's fallback rota; and every fallback must be in the directory. A
/// group with neither would let its failures reach nobody, so it is an
/// error, never a log line. One error per problem, naming the group.
pub fn escalation_paths(
    stakeholders: &[Stakeholder],
    groups: &[Group],
    policy: &crate::policy::Policy,
) -> Vec<DirectoryError> {
    let known: HashSet<&StakeholderId> = stakeholders.iter().map(|s| &s.id).collect();
    let fallback = &policy.escalation.fallback;
    let mut errors = Vec::new();
    for (i, f) in fallback.iter().enumerate() {
        if !known.contains(f) {
            errors.push(DirectoryError {
                location: "policy".into(),
                field: format!("escalation.fallback[{i}]"),
                value: f.to_string(),
                message: "is not in the directory".into(),
            });
        }
    }
    for g in groups {
        let manager = g.on_call_manager.as_ref().filter(|m| known.contains(m));
        match manager {
            None if fallback.is_empty() => errors.push(DirectoryError {
                location: format!("group {}", g.id),
                field: "on_call_manager".into(),
                value: String::new(),
                message: "the group has no escalation path: give it an on-call manager, or name an [escalation] fallback in the policy".into(),
            }),
            // The on-call manager's own failure goes to their manager, or
            // to the fallback: one of them must exist.
            Some(m) if g.members.contains(m) && fallback.is_empty() => {
                let boss = stakeholders
                    .iter()
                    .find(|s| &s.id == m)
                    .and_then(|s| s.manager.as_ref())
                    .filter(|b| known.contains(b) && *b != m);
                if boss.is_none() {
                    errors.push(DirectoryError {
                        location: format!("group {}", g.id),
                        field: "on_call_manager".into(),
                        value: m.to_string(),
                        message: "is a member of the group with no manager of their own: their own failure would reach nobody; give them a manager, or name an [escalation] fallback in the policy".into(),
                    });
                }
            }
            _ => {}
        }
    }
    errors
}

/// Parses a directory file; the format comes from the extension (`.yaml`,
/// `.yml` or `.csv`).
pub fn parse_file(
    path: &std::path::Path,
    text: &str,
) -> Result<DirectoryFile, Vec<DirectoryError>> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("yaml" | "yml") => parse_yaml(text),
        Some("csv") => parse_csv(text),
        // A directory written by `muster directory import`.
        Some("json") => serde_json::from_str(text).map_err(|e| {
            vec![DirectoryError {
                location: format!("line {}", e.line()),
                field: "json".into(),
                value: String::new(),
                message: e.to_string(),
            }]
        }),
        _ => Err(vec![DirectoryError {
            location: path.display().to_string(),
            field: "file".into(),
            value: String::new(),
            message: "unknown format: use a .yaml, .yml, .csv or .json file".into(),
        }]),
    }
}

pub mod ldap;

/// A raw value and where it stands.
#[derive(Debug, Clone)]
struct Cell {
    at: String,
    value: String,
}

#[derive(Debug, Default)]
struct RawPerson {
    at: String,
    id: Option<Cell>,
    name: Option<Cell>,
    tier: Option<Cell>,
    phone: Option<Cell>,
    sms: Option<Cell>,
    email: Option<Cell>,
    push: Option<Cell>,
    channels: Vec<Cell>,
    locale: Option<Cell>,
    time_zone: Option<Cell>,
    quiet_hours: Option<Cell>,
    manager: Option<Cell>,
    groups: Vec<Cell>,
    on_call_for: Vec<Cell>,
}

#[derive(Debug, Default)]
struct RawGroup {
    at: String,
    id: Option<Cell>,
    name: Option<Cell>,
    members: Vec<Cell>,
    on_call_manager: Option<Cell>,
    escalation_channels: Vec<Cell>,
}

// ---- YAML -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YFile {
    #[serde(default)]
    stakeholders: Vec<Spanned<YPerson>>,
    #[serde(default)]
    groups: Vec<Spanned<YGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YPerson {
    id: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    tier: Option<Spanned<String>>,
    phone: Option<Spanned<String>>,
    sms: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    push: Option<Spanned<String>>,
    #[serde(default)]
    channels: Vec<Spanned<String>>,
    locale: Option<Spanned<String>>,
    time_zone: Option<Spanned<String>>,
    quiet_hours: Option<Spanned<String>>,
    manager: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YGroup {
    id: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    #[serde(default)]
    members: Vec<Spanned<String>>,
    on_call_manager: Option<Spanned<String>>,
    #[serde(default)]
    escalation_channels: Vec<Spanned<String>>,
}

fn line_of<T>(s: &Spanned<T>) -> String {
    s.span()
        .start()
        .map(|m| format!("line {}", m.line()))
        .unwrap_or_else(|| "file".into())
}

fn ycell(s: &Option<Spanned<String>>) -> Option<Cell> {
    s.as_ref().map(|v| Cell {
        at: line_of(v),
        value: v.as_str().to_string(),
    })
}

fn ycells(v: &[Spanned<String>]) -> Vec<Cell> {
    v.iter()
        .map(|s| Cell {
            at: line_of(s),
            value: s.as_str().to_string(),
        })
        .collect()
}

/// Deepest block nesting a YAML directory may have (a real one has 4).
pub const MAX_YAML_DEPTH: usize = 64;

/// The first line (1-based) where the YAML's nesting would pass
/// [`MAX_YAML_DEPTH`], estimated from indentation, compact `- ` entries,
/// mapping values that open on the same line (`a: b: c`), `? ` keys and
/// flow brackets outside quotes (it never underestimates). The YAML parser
/// recurses once per level, so deeper input is refused before it is parsed.
fn too_deep(text: &str) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        while indents.last().is_some_and(|&top| top >= indent) {
            indents.pop();
        }
        indents.push(indent);
        let mut inline = 0usize;
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            let next = chars.peek().copied();
            let gap = |c: Option<char>| c.is_none_or(|c| c == ' ' || c == '\t');
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '#') if prev == ' ' || prev == '\t' => break,
                (None, '"' | '\'')
                    if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':' | '-' | '?') =>
                {
                    quote = Some(c)
                }
                (None, '[' | '{') => flow += 1,
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                (None, ':' | '-' | '?')
                    if gap(next) && (c == ':' || matches!(prev, ' ' | '\t')) =>
                {
                    inline += 1
                }
                _ => {}
            }
            prev = c;
        }
        if indents.len() + inline + flow > MAX_YAML_DEPTH {
            return Some(n + 1);
        }
    }
    None
}

pub fn parse_yaml(text: &str) -> Result<DirectoryFile, Vec<DirectoryError>> {
    if let Some(line) = too_deep(text) {
        return Err(vec![DirectoryError {
            location: format!("line {line}"),
            field: "yaml".into(),
            value: String::new(),
            message: format!("nested deeper than {MAX_YAML_DEPTH} levels"),
        }]);
    }
    let file: YFile = marked_yaml::from_yaml(0, text).map_err(|e| {
        vec![DirectoryError {
            location: "file".into(),
            field: "yaml".into(),
            value: String::new(),
            message: e.to_string(),
        }]
    })?;
    let people = file
        .stakeholders
        .iter()
        .map(|p| RawPerson {
            at: line_of(p),
            id: ycell(&p.id),
            name: ycell(&p.name),
            tier: ycell(&p.tier),
            phone: ycell(&p.phone),
            sms: ycell(&p.sms),
            email: ycell(&p.email),
            push: ycell(&p.push),
            channels: ycells(&p.channels),
            locale: ycell(&p.locale),
            time_zone: ycell(&p.time_zone),
            quiet_hours: ycell(&p.quiet_hours),
            manager: ycell(&p.manager),
            ..Default::default()
        })
        .collect();
    let groups = file
        .groups
        .iter()
        .map(|g| RawGroup {
            at: line_of(g),
            id: ycell(&g.id),
            name: ycell(&g.name),
            members: ycells(&g.members),
            on_call_manager: ycell(&g.on_call_manager),
            escalation_channels: ycells(&g.escalation_channels),
        })
        .collect();
    build(people, groups)
}

// ---- CSV ------------------------------------------------------------------

const CSV_COLUMNS: [&str; 14] = [
    "id",
    "name",
    "tier",
    "phone",
    "sms",
    "email",
    "push",
    "channels",
    "locale",
    "time_zone",
    "quiet_hours",
    "manager",
    "groups",
    "on_call_for",
];

pub fn parse_csv(text: &str) -> Result<DirectoryFile, Vec<DirectoryError>> {
    let err = |location: String, field: &str, value: &str, message: String| DirectoryError {
        location,
        field: field.into(),
        value: value.into(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| vec![err("line 1".into(), "header", "", e.to_string())])?
        .clone();
    let mut errors = Vec::new();
    let mut index = BTreeMap::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.to_ascii_lowercase();
        if !CSV_COLUMNS.contains(&h.as_str()) {
            errors.push(err(
                "line 1".into(),
                "header",
                &h,
                format!(
                    "unknown column: expected some of {}",
                    CSV_COLUMNS.join(", ")
                ),
            ));
        } else if index.insert(h.clone(), i).is_some() {
            errors.push(err(
                "line 1".into(),
                "header",
                &h,
                "column given twice".into(),
            ));
        }
    }
    if !index.contains_key("id") {
        errors.push(err(
            "line 1".into(),
            "header",
            "",
            "the id column is required".into(),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut people = Vec::new();
    for (n, row) in reader.records().enumerate() {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                errors.push(err(
                    format!("row {} (line {line})", n + 1),
                    "row",
                    "",
                    e.to_string(),
                ));
                continue;
            }
        };
        let at = format!(
            "row {} (line {})",
            n + 1,
            row.position().map(|p| p.line()).unwrap_or(0)
        );
        let cell = |name: &str| -> Option<Cell> {
            index
                .get(name)
                .and_then(|i| row.get(*i))
                .filter(|v| !v.is_empty())
                .map(|v| Cell {
                    at: at.clone(),
                    value: v.to_string(),
                })
        };
        let list = |name: &str| -> Vec<Cell> {
            cell(name)
                .map(|c| {
                    c.value
                        .split(';')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(|v| Cell {
                            at: at.clone(),
                            value: v.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        people.push(RawPerson {
            at: at.clone(),
            id: cell("id"),
            name: cell("name"),
            tier: cell("tier"),
            phone: cell("phone"),
            sms: cell("sms"),
            email: cell("email"),
            push: cell("push"),
            channels: list("channels"),
            locale: cell("locale"),
            time_zone: cell("time_zone"),
            quiet_hours: cell("quiet_hours"),
            manager: cell("manager"),
            groups: list("groups"),
            on_call_for: list("on_call_for"),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Groups come from the membership columns, in order of first mention.
    let mut groups: Vec<RawGroup> = Vec::new();
    for p in &people {
        for (cells, on_call) in [(&p.groups, false), (&p.on_call_for, true)] {
            for g in cells {
                let pos = match groups
                    .iter()
                    .position(|x| x.id.as_ref().is_some_and(|i| i.value == g.value))
                {
                    Some(pos) => pos,
                    None => {
                        groups.push(RawGroup {
                            at: g.at.clone(),
                            id: Some(g.clone()),
                            ..Default::default()
                        });
                        groups.len() - 1
                    }
                };
                let Some(id) = p.id.clone() else { continue };
                let group = &mut groups[pos];
                if on_call {
                    if group
                        .on_call_manager
                        .as_ref()
                        .is_some_and(|m| m.value != id.value)
                    {
                        errors.push(err(
                            g.at.clone(),
                            "on_call_for",
                            &g.value,
                            "group already has another on-call manager".into(),
                        ));
                    }
                    group.on_call_manager = Some(id);
                } else {
                    group.members.push(id);
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    build(people, groups)
}

// ---- validation -----------------------------------------------------------

fn build(
    people: Vec<RawPerson>,
    groups: Vec<RawGroup>,
) -> Result<DirectoryFile, Vec<DirectoryError>> {
    let mut errs = Errs(Vec::new());
    let mut out = DirectoryFile::default();
    let mut ids = HashSet::new();
    let mut managers = Vec::new();
    for p in &people {
        let Some(id_cell) = &p.id else {
            errs.missing(&p.at, "id");
            continue;
        };
        // A bad id is reported and the rest of the record still checked.
        let id = StakeholderId::parse(&id_cell.value)
            .map_err(|e| errs.bad(id_cell, "id", e))
            .ok();
        if let Some(id) = &id
            && !ids.insert(id.clone())
        {
            errs.bad(
                id_cell,
                "id",
                InvalidValue::new("", "stakeholder listed twice"),
            );
        }
        let tier = match &p.tier {
            None => Tier::DEFAULT,
            Some(c) => match c
                .value
                .trim()
                .parse::<i64>()
                .map_err(|_| InvalidValue::new("", "tier must be 1, 2 or 3"))
                .and_then(Tier::new)
            {
                Ok(t) => t,
                Err(e) => {
                    errs.bad(c, "tier", e);
                    Tier::DEFAULT
                }
            },
        };
        let mut contacts = ContactMethods::default();
        if let Some(c) = &p.phone {
            contacts.phone = PhoneNumber::parse(&c.value)
                .map_err(|e| errs.bad(c, "phone", e))
                .ok();
        }
        if let Some(c) = &p.sms {
            contacts.sms = PhoneNumber::parse(&c.value)
                .map_err(|e| errs.bad(c, "sms", e))
                .ok();
        }
        if let Some(c) = &p.email {
            contacts.email = EmailAddress::parse(&c.value)
                .map_err(|e| errs.bad(c, "email", e))
                .ok();
        }
        if let Some(c) = &p.push {
            contacts.push = PushEndpoint::parse(&c.value)
                .map_err(|e| errs.bad(c, "push", e))
                .ok();
        }
        if p.phone.is_none() && p.sms.is_none() && p.email.is_none() && p.push.is_none() {
            errs.bad(
                id_cell,
                "contacts",
                InvalidValue::new(
                    "",
                    "no phone, sms, email or push: this person cannot be reached",
                ),
            );
        }
        let mut preferences = Vec::new();
        for c in &p.channels {
            match Channel::parse(&c.value) {
                Ok(ch) if !preferences.contains(&ch) => preferences.push(ch),
                Ok(_) => errs.bad(c, "channels", InvalidValue::new("", "channel listed twice")),
                Err(e) => errs.bad(c, "channels", e),
            }
        }
        let manager = p.manager.as_ref().and_then(|c| {
            StakeholderId::parse(&c.value)
                .map_err(|e| errs.bad(c, "manager", e))
                .ok()
        });
        if let (Some(m), Some(c)) = (&manager, &p.manager) {
            managers.push((m.clone(), c.clone()));
        }
        let locale = p
            .locale
            .as_ref()
            .filter(|c| !c.value.trim().is_empty())
            .and_then(|c| {
                crate::domain::locale::normalise(&c.value)
                    .map_err(|e| errs.bad(c, "locale", e))
                    .ok()
            });
        let present = |c: &Option<Cell>| c.clone().filter(|c| !c.value.trim().is_empty());
        let zone = present(&p.time_zone).and_then(|c| {
            crate::domain::time_zone(&c.value)
                .map_err(|e| errs.bad(&c, "time_zone", e))
                .ok()
        });
        let hours = present(&p.quiet_hours).and_then(|c| {
            crate::domain::QuietHours::parse(&c.value)
                .map_err(|e| errs.bad(&c, "quiet_hours", e))
                .ok()
        });
        let quiet = match (zone, hours, present(&p.quiet_hours)) {
            (Some(time_zone), Some(hours), _) => Some(crate::domain::Quiet { time_zone, hours }),
            (None, Some(_), Some(c)) if present(&p.time_zone).is_none() => {
                errs.bad(
                    &c,
                    "quiet_hours",
                    InvalidValue::new("", "quiet hours need the person's time_zone"),
                );
                None
            }
            _ => None,
        };
        let Some(id) = id else { continue };
        out.stakeholders.push(Stakeholder {
            id,
            name: p
                .name
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_else(|| id_cell.value.clone()),
            tier,
            contacts,
            preferences,
            manager,
            locale,
            quiet,
            idp: None,
            active: true,
        });
    }
    for (m, c) in managers {
        if !ids.contains(&m) {
            errs.bad(
                &c,
                "manager",
                InvalidValue::new("", "not a stakeholder in this file"),
            );
        }
    }
    let mut group_ids = HashSet::new();
    for g in &groups {
        let Some(id_cell) = &g.id else {
            errs.missing(&g.at, "group id");
            continue;
        };
        let id = match GroupId::parse(&id_cell.value) {
            Ok(id) => id,
            Err(e) => {
                errs.bad(id_cell, "group id", e);
                continue;
            }
        };
        if !group_ids.insert(id.clone()) {
            errs.bad(
                id_cell,
                "group id",
                InvalidValue::new("", "group listed twice"),
            );
        }
        let mut members = Vec::new();
        for c in &g.members {
            match StakeholderId::parse(&c.value) {
                Ok(m) if !ids.contains(&m) => errs.bad(
                    c,
                    "members",
                    InvalidValue::new("", "not a stakeholder in this file"),
                ),
                Ok(m) if members.contains(&m) => {
                    errs.bad(c, "members", InvalidValue::new("", "member listed twice"))
                }
                Ok(m) => members.push(m),
                Err(e) => errs.bad(c, "members", e),
            }
        }
        if g.members.is_empty() {
            errs.bad(
                id_cell,
                "members",
                InvalidValue::new("", "the group has no members"),
            );
        }
        let on_call_manager = match &g.on_call_manager {
            None => None,
            Some(c) => match StakeholderId::parse(&c.value) {
                Ok(m) if ids.contains(&m) => Some(m),
                Ok(_) => {
                    errs.bad(
                        c,
                        "on_call_manager",
                        InvalidValue::new("", "not a stakeholder in this file"),
                    );
                    None
                }
                Err(e) => {
                    errs.bad(c, "on_call_manager", e);
                    None
                }
            },
        };
        let mut escalation_channels = Vec::new();
        for c in &g.escalation_channels {
            match Channel::parse(&c.value) {
                Ok(ch) if !escalation_channels.contains(&ch) => escalation_channels.push(ch),
                Ok(_) => errs.bad(
                    c,
                    "escalation_channels",
                    InvalidValue::new("", "channel listed twice"),
                ),
                Err(e) => errs.bad(c, "escalation_channels", e),
            }
        }
        out.groups.push(Group {
            id,
            name: g
                .name
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_else(|| id_cell.value.clone()),
            members,
            on_call_manager,
            escalation_channels,
            idp: None,
        });
    }
    if errs.0.is_empty() {
        Ok(out)
    } else {
        Err(errs.0)
    }
}

struct Errs(Vec<DirectoryError>);

impl Errs {
    fn bad(&mut self, c: &Cell, field: &str, e: InvalidValue) {
        self.0.push(DirectoryError {
            location: c.at.clone(),
            field: field.into(),
            value: c.value.clone(),
            message: e.message,
        });
    }
    fn missing(&mut self, at: &str, field: &str) {
        self.0.push(DirectoryError {
            location: at.into(),
            field: field.into(),
            value: String::new(),
            message: "missing".into(),
        });
    }
}

// SCIM user resources' contacts (RFC 7643 `phoneNumbers`, `emails`): which
// one a person is reached on. Used by SCIM provisioning and by the live
// contact lookup, which answers SCIM users.
use serde_json::Value;

pub(crate) fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"stakeholders:
  - id: cio
    name: Chief Information Officer
    tier: 1
    phone: "+44 20 7946 0001"
    email: cio@example.com
  - id: duty
    sms: "+1 212 555 0101"
    channels: [sms]
    manager: cio
groups:
  - id: ops
    members: [cio]
    on_call_manager: duty
    escalation_channels: [sms, voice]
"#;

    #[test]
    fn yaml_nested_past_the_limit_is_refused_on_a_small_stack() {
        let deep = [
            format!("stakeholders:\n{}x\n", "- ".repeat(5_000)),
            format!("stakeholders:\n  - id: {}x\n", ": ".repeat(20_000)),
            format!("stakeholders: {}\n", "[".repeat(20_000)),
            format!("stakeholders:\n{}", "  {\n".repeat(20_000)),
            format!("stakeholders:\n{}x\n", "? ".repeat(20_000)),
            format!(
                "stakeholders:\n{}",
                (0..5_000)
                    .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                    .collect::<String>()
            ),
        ];
        // A 256 KiB stack: far less than a Lambda or tokio thread has.
        let out = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                // Just inside the limit parses (to a schema error), no overflow.
                let near = format!("stakeholders:\n{}x\n", "- ".repeat(MAX_YAML_DEPTH - 2));
                let near = parse_yaml(&near).err().unwrap_or_default();
                assert!(
                    !near.iter().any(|e| e.message.contains("nested deeper")),
                    "{near:?}"
                );
                deep.iter().map(|t| parse_yaml(t).err()).collect::<Vec<_>>()
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .join()
            .unwrap_or_else(|_| panic!("panicked"));
        for errs in out {
            let errs = errs.unwrap_or_else(|| panic!("accepted"));
            assert!(
                errs[0].message.contains("nested deeper than 64"),
                "{errs:?}"
            );
        }
        assert!(too_deep(YAML).is_none());
    }

    #[test]
    fn yaml_directory_is_normalised() {
        let d = parse_yaml(YAML).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(d.stakeholders.len(), 2);
        assert_eq!(
            d.stakeholders[0]
                .contacts
                .phone
                .as_ref()
                .map(|p| p.expose()),
            Some("+442079460001")
        );
        assert_eq!(d.stakeholders[1].tier, Tier::DEFAULT, "default tier 2");
        assert_eq!(d.stakeholders[1].preferences, [Channel::Sms]);
        assert_eq!(
            d.groups[0].on_call_manager.as_ref().map(|m| m.as_str()),
            Some("duty")
        );
        assert_eq!(
            d.groups[0].escalation_channels,
            [Channel::Sms, Channel::Voice]
        );
    }

    #[test]
    fn yaml_errors_carry_line_field_and_value() {
        let bad = YAML
            .replace("+44 20 7946 0001", "0207 946 0001")
            .replace("members: [cio]", "members: [cio, ghost]")
            .replace("[sms]", "[pager]");
        let errs = parse_yaml(&bad).err().unwrap_or_default();
        let shown: Vec<String> = errs
            .iter()
            .map(|e| format!("{} {} {}", e.location, e.field, e.value))
            .collect();
        assert_eq!(
            shown,
            [
                "line 5 phone 0207 946 0001",
                "line 9 channels pager",
                "line 13 members ghost"
            ]
        );
    }

    #[test]
    fn unknown_yaml_keys_are_refused() {
        let errs = parse_yaml("stakeholders:\n  - id: a\n    fax: \"1\"\n")
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("fax"), "{:?}", errs[0]);
    }

    #[test]
    fn csv_rows_build_groups_and_report_every_bad_cell() {
        let csv = "id,name,tier,phone,email,groups,on_call_for\n\
                   a,A,1,+44 20 7946 0001,a@example.com,ops,\n\
                   b,B,2,+44 20 7946 0002,,ops;eng,\n\
                   m,M,1,+44 20 7946 0003,m@example.com,,ops\n";
        let d = parse_csv(csv).unwrap_or_else(|e| panic!("{e:?}"));
        let ops = d
            .groups
            .iter()
            .find(|g| g.id.as_str() == "ops")
            .unwrap_or_else(|| panic!("no ops"));
        assert_eq!(
            ops.members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(ops.on_call_manager.as_ref().map(|m| m.as_str()), Some("m"));
        assert_eq!(d.groups.len(), 2);

        let bad = "id,tier,phone,email\nbad id,5,+1 555,\nc,1,,\n";
        let errs = parse_csv(bad).err().unwrap_or_default();
        let shown: Vec<String> = errs
            .iter()
            .map(|e| format!("{} {}", e.location, e.field))
            .collect();
        assert_eq!(
            shown,
            [
                "row 1 (line 2) id",
                "row 1 (line 2) tier",
                "row 1 (line 2) phone",
                "row 2 (line 3) contacts"
            ]
        );
    }

    #[test]
    fn csv_header_problems_are_reported() {
        let errs = parse_csv("name,colour\nx,red\n").err().unwrap_or_default();
        let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert!(
            msgs.iter().any(|m| m.contains("unknown column"))
                && msgs.iter().any(|m| m.contains("id column is required")),
            "{msgs:?}"
        );
    }
}
