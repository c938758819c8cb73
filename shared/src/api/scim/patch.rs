//! SCIM PATCH (RFC 7644 §3.5.2) applied to a resource's SCIM form.
//!
//! A path is parsed once into its parts, as RFC 7644's grammar allows
//! them: an optional schema URN, an attribute, an optional value filter
//! (`[type eq "work"]`) and an optional sub-attribute. Anything deeper is
//! `invalidPath`: nothing here follows the input's depth.

use super::{ENTERPRISE, GROUP, MUSTER_GROUP, MUSTER_USER, ScimError, USER, parse_filter};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// Longest path accepted (the longest real one is about 80 characters).
const MAX_PATH: usize = 512;
/// Most operations in one PATCH.
pub const MAX_OPERATIONS: usize = 1000;

/// The schema URNs a path may start with; core URNs name the resource itself.
const CORE: [&str; 2] = [USER, GROUP];
const EXTENSIONS: [&str; 3] = [ENTERPRISE, MUSTER_USER, MUSTER_GROUP];

#[derive(Debug, PartialEq)]
pub(crate) struct PatchPath {
    /// The extension the attribute is in (`None`: the core schema).
    pub ext: Option<&'static str>,
    /// The attribute; `None` names the whole extension.
    pub attr: Option<String>,
    /// A value filter on a multi-valued attribute: (key, value).
    pub filter: Option<(String, String)>,
    pub sub: Option<String>,
}

fn invalid_path(why: &str) -> ScimError {
    ScimError::new(
        StatusCode::BAD_REQUEST,
        Some("invalidPath"),
        format!("unsupported path: {why}"),
    )
}

/// `ATTRNAME = ALPHA *(nameChar)`, plus `$ref`.
fn attr_name(s: &str) -> Result<String, ScimError> {
    let ok = s == "$ref"
        || (s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid_path(
            "an attribute name is letters, digits, '-' and '_'",
        ))
    }
}

/// Splits `attr`, `attr.sub`, `attr[filter]` and `attr[filter].sub` (of
/// the core schema; the caller sets the extension).
fn attr_path(s: &str) -> Result<PatchPath, ScimError> {
    let path = |attr: &str, filter, sub: Option<&str>| {
        Ok(PatchPath {
            ext: None,
            attr: Some(attr_name(attr)?),
            filter,
            sub: sub.map(attr_name).transpose()?,
        })
    };
    if let Some((head, tail)) = s.split_once('[') {
        let (filter, rest) = tail
            .rsplit_once(']')
            .ok_or_else(|| invalid_path("'[' without ']'"))?;
        let filter = parse_filter(filter, &["type", "value", "display", "primary"])?;
        let sub = match rest {
            "" => None,
            r => Some(
                r.strip_prefix('.')
                    .ok_or_else(|| invalid_path("expected '.' after ']'"))?,
            ),
        };
        return path(head, Some(filter), sub);
    }
    match s.split_once('.') {
        Some((head, sub)) => path(head, None, Some(sub)),
        None => path(s, None, None),
    }
}

pub(crate) fn parse_path(path: &str) -> Result<PatchPath, ScimError> {
    let path = path.trim();
    if path.is_empty() || path.len() > MAX_PATH {
        return Err(invalid_path("empty or too long"));
    }
    let lower = path.to_ascii_lowercase();
    if !lower.starts_with("urn:") {
        return attr_path(path);
    }
    // What follows `urn:...:` in the path as written.
    let rest_of = |urn: &str| {
        lower
            .strip_prefix(&urn.to_ascii_lowercase())
            .and_then(|r| r.strip_prefix(':'))
            .map(|r| &path[path.len() - r.len()..])
    };
    for urn in CORE {
        if let Some(rest) = rest_of(urn) {
            return attr_path(rest);
        }
    }
    for urn in EXTENSIONS {
        if lower == urn.to_ascii_lowercase() {
            return Ok(PatchPath {
                ext: Some(urn),
                attr: None,
                filter: None,
                sub: None,
            });
        }
        if let Some(rest) = rest_of(urn) {
            return Ok(PatchPath {
                ext: Some(urn),
                ..attr_path(rest)?
            });
        }
    }
    Err(invalid_path("unknown schema"))
}

/// The key in `obj` matching `name` case-insensitively (attribute names
/// are case-insensitive), else `name`.
fn key_of(obj: &Map<String, Value>, name: &str) -> String {
    obj.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// Applies a SCIM PatchOp to a resource's SCIM form. Without a path the
/// value is an object of attributes (each key a path) to set.
pub fn apply_patch(doc: &mut Value, body: &Value) -> Result<(), ScimError> {
    let ops = body
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("Operations is required, as an array"))?;
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::invalid_syntax(format!(
            "at most {MAX_OPERATIONS} operations in one PATCH"
        )));
    }
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| ScimError::invalid("the resource is not an object"))?;
    for (i, op) in ops.iter().enumerate() {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| ScimError::invalid(format!("Operations[{i}].op is required")))?;
        if !matches!(kind.as_str(), "add" | "replace" | "remove") {
            return Err(ScimError::invalid(format!(
                "Operations[{i}].op must be add, replace or remove"
            )));
        }
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match op.get("path") {
            None | Some(Value::Null) => {
                if kind == "remove" {
                    return Err(ScimError::new(
                        StatusCode::BAD_REQUEST,
                        Some("noTarget"),
                        format!("Operations[{i}]: remove needs a path"),
                    ));
                }
                let Value::Object(map) = value else {
                    return Err(ScimError::new(
                        StatusCode::BAD_REQUEST,
                        Some("noTarget"),
                        format!("Operations[{i}]: without a path the value must be an object"),
                    ));
                };
                for (k, v) in map {
                    apply(obj, &parse_path(&k)?, &kind, v)?;
                }
            }
            Some(Value::String(p)) => apply(obj, &parse_path(p)?, &kind, value)?,
            Some(_) => {
                return Err(invalid_path("path must be a string"));
            }
        }
    }
    Ok(())
}

/// One operation on one parsed path. The depth is fixed: extension, then
/// attribute, then one sub-attribute.
fn apply(
    doc: &mut Map<String, Value>,
    path: &PatchPath,
    kind: &str,
    value: Value,
) -> Result<(), ScimError> {
    let container = match path.ext {
        None => doc,
        Some(ext) => {
            let key = key_of(doc, ext);
            if path.attr.is_none() {
                // The whole extension.
                return set_value(doc, &key, kind, value);
            }
            if kind == "remove" && !doc.contains_key(&key) {
                return Ok(());
            }
            let entry = doc.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            entry
                .as_object_mut()
                .ok_or_else(|| invalid_path("extension is not an object"))?
        }
    };
    let attr = path.attr.as_deref().unwrap_or_default();
    let key = key_of(container, attr);
    match (&path.filter, &path.sub) {
        (None, None) => set_value(container, &key, kind, value),
        (None, Some(sub)) => {
            if kind == "remove" && !container.contains_key(&key) {
                return Ok(());
            }
            let entry = container
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let inner = entry
                .as_object_mut()
                .ok_or_else(|| invalid_path("not a complex attribute"))?;
            let sk = key_of(inner, sub);
            set_value(inner, &sk, kind, value)
        }
        (Some((fkey, want)), sub) => {
            let entry = container
                .entry(key.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !entry.is_array() {
                *entry = Value::Array(Vec::new());
            }
            let items = entry
                .as_array_mut()
                .ok_or_else(|| invalid_path("not a multi-valued attribute"))?;
            let matches = |e: &Value| {
                e.as_object()
                    .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(fkey)))
                    .map(|(_, v)| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .is_some_and(|v| v.eq_ignore_ascii_case(want))
            };
            if kind == "remove" && sub.is_none() {
                items.retain(|e| !matches(e));
                if items.is_empty() {
                    container.remove(&key);
                }
                return Ok(());
            }
            let pos = match items.iter().position(matches) {
                Some(p) => p,
                None if kind == "remove" => return Ok(()),
                None => {
                    let seed = match want.as_str() {
                        "true" => json!(true),
                        "false" => json!(false),
                        w => json!(w),
                    };
                    items.push(json!({ fkey.clone(): seed }));
                    items.len() - 1
                }
            };
            let item = items[pos]
                .as_object_mut()
                .ok_or_else(|| invalid_path("a value is not complex"))?;
            match sub {
                Some(s) => {
                    let sk = key_of(item, s);
                    set_value(item, &sk, kind, value)
                }
                None => {
                    if let Value::Object(m) = value {
                        item.extend(m);
                    }
                    Ok(())
                }
            }
        }
    }
}

/// Sets, adds to or removes one attribute of `obj` (`key` already matched
/// case-insensitively).
fn set_value(
    obj: &mut Map<String, Value>,
    key: &str,
    kind: &str,
    value: Value,
) -> Result<(), ScimError> {
    match kind {
        // Removing listed values from a multi-valued attribute (Entra's
        // member removal) removes just those.
        "remove" => match (obj.get_mut(key), value) {
            (Some(Value::Array(existing)), Value::Array(gone)) => {
                let gone: Vec<Option<&Value>> = gone.iter().map(|g| g.get("value")).collect();
                existing.retain(|e| !gone.contains(&e.get("value")));
                if existing.is_empty() {
                    obj.remove(key);
                }
            }
            _ => {
                obj.remove(key);
            }
        },
        // Add appends to a multi-valued attribute (skipping values already
        // there); add and replace merge into a complex one (RFC 7644
        // §3.5.2.1 and §3.5.2.3: sub-attributes not given are kept).
        _ => match (obj.get_mut(key), value) {
            (Some(Value::Array(existing)), Value::Array(more)) if kind == "add" => {
                for v in more {
                    if !existing.contains(&v) {
                        existing.push(v);
                    }
                }
            }
            (Some(Value::Object(existing)), Value::Object(more)) => {
                for (k, v) in more {
                    let k = key_of(existing, &k);
                    existing.insert(k, v);
                }
            }
            (_, Value::Null) if kind == "replace" => {
                obj.remove(key);
            }
            (_, v) => {
                obj.insert(key.to_string(), v);
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(doc: &mut Value, ops: Value) -> Result<(), ScimError> {
        apply_patch(doc, &json!({ "Operations": ops }))
    }

    #[test]
    fn paths_parse_to_at_most_extension_attribute_filter_and_sub_attribute() {
        let p = parse_path("emails[type eq \"work\"].value").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (p.ext, p.attr.as_deref(), p.filter, p.sub.as_deref()),
            (
                None,
                Some("emails"),
                Some(("type".into(), "work".into())),
                Some("value")
            )
        );
        let p = parse_path(&format!("{ENTERPRISE}:manager")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (p.ext, p.attr.as_deref()),
            (Some(ENTERPRISE), Some("manager"))
        );
        let p = parse_path(&format!("{USER}:name.givenName")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (p.ext, p.attr.as_deref(), p.sub.as_deref()),
            (None, Some("name"), Some("givenName"))
        );
        for bad in [
            "a.b.c",
            "",
            "emails[type eq \"x\"",
            "urn:other:thing:attr",
            "1abc",
            "a b",
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn a_path_of_a_hundred_thousand_segments_is_an_error_not_a_crash() {
        let deep = vec!["a"; 100_000].join(".");
        let mut doc = json!({"userName": "x"});
        let err = patch(&mut doc, json!([{"op": "add", "path": deep, "value": 1}]))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(err.scim_type, Some("invalidPath"));
        let deep_filter = format!("emails[{}]", vec!["type eq \"a\""; 50_000].join(" and "));
        assert!(
            patch(
                &mut doc,
                json!([{"op": "add", "path": deep_filter, "value": 1}])
            )
            .is_err()
        );
        assert_eq!(doc, json!({"userName": "x"}), "nothing changed");
    }

    #[test]
    fn add_replace_and_remove_follow_rfc_7644() {
        let mut doc = json!({"name": {"givenName": "A", "familyName": "B"}, "emails": [{"value": "a@example.com", "type": "work"}]});
        patch(
            &mut doc,
            json!([
                {"op": "replace", "path": "name", "value": {"givenName": "C"}},
                {"op": "add", "path": "emails", "value": [{"value": "b@example.com", "type": "home"}]},
                {"op": "add", "path": "emails", "value": [{"value": "b@example.com", "type": "home"}]},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@example.com"},
                {"op": "remove", "path": "emails[type eq \"home\"]"},
                {"op": "add", "path": format!("{MUSTER_USER}:tier"), "value": 1},
            ]),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            doc,
            json!({
                "name": {"givenName": "C", "familyName": "B"},
                "emails": [{"value": "w@example.com", "type": "work"}],
                MUSTER_USER: {"tier": 1}
            })
        );
        patch(&mut doc, json!([{"op": "remove", "path": MUSTER_USER}, {"op": "remove", "path": "emails[type eq \"work\"]"}]))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(doc, json!({"name": {"givenName": "C", "familyName": "B"}}));
    }
}
