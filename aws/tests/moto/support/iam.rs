//! The IAM contract, which moto does not enforce: every AWS call a function
//! makes, recorded by an SDK interceptor on that function's clients, must
//! be allowed by the role `infra/template.yaml` gives the function.
//!
//! A call is its IAM action (`dynamodb:Query`) and, where the request names
//! one, the template resource it touches, found by matching the request's
//! strings against the function's environment (a table name is the value
//! of `MUSTER_STATE_TABLE`, which the template sets to `!Ref StateTable`).
//! DynamoDB transactions are authorised per item by the item's own action
//! (`PutItem`, `UpdateItem`, `DeleteItem`, `ConditionCheckItem`), and a
//! query of an index needs the index's ARN; both are modelled.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use yaml_rust2::{Yaml, YamlLoader};

/// One AWS call: the IAM action and the request's strings (table names,
/// queue URLs, key ids, ...), with whether it used an index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub action: String,
    pub strings: BTreeSet<String>,
    pub index: bool,
}

/// Records every call made through the clients it is installed on.
#[derive(Debug, Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Call>>>);

fn iam_prefix(service: &str) -> String {
    match service {
        "SESv2" => "ses".into(),
        "ChimeSDKVoice" | "Chime SDK Voice" => "chime".into(),
        "Pinpoint SMS Voice V2" | "PinpointSMSVoiceV2" => "sms-voice".into(),
        other => other.to_ascii_lowercase(),
    }
}

fn strings(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            out.insert(s.clone());
        }
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone());
                strings(v, out);
            }
        }
        _ => {}
    }
}

/// DynamoDB transactions: one call per item, under the item's action.
fn transact_items(body: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for item in body["TransactItems"].as_array().into_iter().flatten() {
        for (op, action) in [
            ("Put", "PutItem"),
            ("Update", "UpdateItem"),
            ("Delete", "DeleteItem"),
            ("ConditionCheck", "ConditionCheckItem"),
            ("Get", "GetItem"),
        ] {
            if let Some(x) = item.get(op) {
                out.push((format!("dynamodb:{action}"), x.clone()));
            }
        }
    }
    out
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "iam-contract-recorder"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(meta) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        // SQS authorises its batch actions as the single ones.
        let op = match (meta.service(), meta.name()) {
            ("SQS", "SendMessageBatch") => "SendMessage",
            ("SQS", "DeleteMessageBatch") => "DeleteMessage",
            ("SQS", "ChangeMessageVisibilityBatch") => "ChangeMessageVisibility",
            (_, name) => name,
        };
        let action = format!("{}:{op}", iam_prefix(meta.service()));
        let req = ctx.request();
        let body: Value = req
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let mut calls = Vec::new();
        if action.ends_with(":TransactWriteItems") || action.ends_with(":TransactGetItems") {
            for (a, item) in transact_items(&body) {
                let mut s = BTreeSet::new();
                strings(&item, &mut s);
                calls.push(Call {
                    action: a,
                    strings: s,
                    index: false,
                });
            }
        } else {
            let mut s = BTreeSet::new();
            strings(&body, &mut s);
            // REST APIs name their resources in the path.
            for part in req.uri().split(['/', '?', '&', '=']) {
                s.insert(part.to_string());
            }
            calls.push(Call {
                action,
                index: body.get("IndexName").is_some(),
                strings: s,
            });
        }
        self.0.lock().unwrap().extend(calls);
        Ok(())
    }
}

struct Statement {
    actions: Vec<String>,
    resources: Vec<String>,
    /// `dynamodb:LeadingKeys` patterns the statement is conditioned on.
    leading_keys: Vec<String>,
}

/// A function's role as the template writes it.
pub struct Role {
    pub name: String,
    /// Each Allow statement.
    statements: Vec<Statement>,
    /// Environment variable -> the template resource it names.
    env: HashMap<String, String>,
}

fn list(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Array(a) => a.iter().flat_map(list).collect(),
        _ => Vec::new(),
    }
}

/// The environment variables the template sets for `function`.
pub fn variables_of(function: &str) -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let mut out = BTreeSet::new();
    for vars in [
        &doc["Globals"]["Function"]["Environment"]["Variables"],
        &doc["Resources"][function]["Properties"]["Environment"]["Variables"],
    ] {
        if let Yaml::Hash(h) = vars {
            out.extend(h.keys().filter_map(|k| k.as_str().map(String::from)));
        }
    }
    out
}

/// The role of `function` (`TriggerFunction`, ...) in infra/template.yaml.
pub fn role_of(function: &str) -> Role {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let f = &doc["Resources"][function]["Properties"];
    let role_name = f["Role"]
        .as_str()
        .unwrap_or_else(|| panic!("{function} has no Role"))
        .trim_end_matches(".Arn")
        .to_string();
    let mut env = HashMap::new();
    for vars in [
        &doc["Globals"]["Function"]["Environment"]["Variables"],
        &f["Environment"]["Variables"],
    ] {
        if let Yaml::Hash(h) = vars {
            for (k, v) in h {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    let logical = v.split('.').next().unwrap_or(v).to_string();
                    // Only variables naming a resource (not a parameter).
                    if !doc["Resources"][logical.as_str()].is_badvalue() {
                        env.insert(k.to_string(), logical);
                    }
                }
            }
        }
    }
    let mut statements = Vec::new();
    for p in doc["Resources"][role_name.as_str()]["Properties"]["Policies"]
        .as_vec()
        .into_iter()
        .flatten()
    {
        // A statement under `!If [condition, statement, !Ref AWS::NoValue]`
        // counts as present (the test enables every channel).
        let flat: Vec<&Yaml> = p["PolicyDocument"]["Statement"]
            .as_vec()
            .into_iter()
            .flatten()
            .flat_map(|st| match st {
                Yaml::Array(branches) => {
                    branches.iter().filter(|b| b.as_hash().is_some()).collect()
                }
                other => vec![other],
            })
            .collect();
        for st in flat {
            if st["Effect"].as_str() == Some("Allow") {
                let mut leading_keys = Vec::new();
                if let Yaml::Hash(ops) = &st["Condition"] {
                    for (_, cond) in ops {
                        leading_keys.extend(list(&cond["dynamodb:LeadingKeys"]));
                    }
                }
                statements.push(Statement {
                    actions: list(&st["Action"]),
                    resources: list(&st["Resource"]),
                    leading_keys,
                });
            }
        }
    }
    assert!(!statements.is_empty(), "{role_name} has no statements");
    Role {
        name: role_name,
        statements,
        env,
    }
}

/// IAM's `StringLike`: `*` matches any run of characters.
fn glob(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == value;
    }
    if !value.starts_with(first) || !value[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn action_matches(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}

/// Whether a statement's resource string stands for `logical` (`L.Arn`,
/// `${L.Arn}/...`, `...${L}/...`) and, for an index call, an index of it.
fn resource_matches(resource: &str, logical: &str, index: bool) -> bool {
    if resource == "*" {
        return true;
    }
    let names = resource == logical
        || resource
            .strip_prefix(logical)
            .is_some_and(|r| r.starts_with('.'))
        || resource.contains(&format!("${{{logical}."))
        || resource.contains(&format!("${{{logical}}}"));
    names && (resource.contains("/index/") == index)
}

impl Role {
    /// The calls this role does not allow, each with the resource it
    /// touched (by template name) and why.
    pub fn denied(&self, calls: &[Call], physical: &HashMap<&str, String>) -> Vec<String> {
        let mut out = BTreeSet::new();
        for c in calls {
            // The template resources this call names, through the env.
            let touched: Vec<&str> = physical
                .iter()
                .filter(|(_, v)| {
                    c.strings.contains(v.as_str())
                        || c.strings.iter().any(|s| s.ends_with(&format!("/{v}")))
                })
                .filter_map(|(k, _)| self.env.get(*k).map(String::as_str))
                .collect();
            let allowed_on = |logical: Option<&str>| {
                self.statements.iter().any(|st| {
                    st.actions.iter().any(|a| action_matches(a, &c.action))
                        && logical.is_none_or(|l| {
                            st.resources.iter().any(|r| resource_matches(r, l, c.index))
                        })
                        && (st.leading_keys.is_empty()
                            || c.strings
                                .iter()
                                .any(|v| st.leading_keys.iter().any(|p| glob(p, v))))
                })
            };
            if touched.is_empty() {
                if !allowed_on(None) {
                    out.insert(format!(
                        "{}: {} (no statement allows it)",
                        self.name, c.action
                    ));
                }
            } else {
                for l in touched {
                    if !allowed_on(Some(l)) {
                        let on = if c.index {
                            format!("an index of {l}")
                        } else {
                            l.to_string()
                        };
                        out.insert(format!("{}: {} on {on}", self.name, c.action));
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}
