//! Every parser of outside input as a fuzz target: a function of bytes that
//! must return, whatever the bytes, without panicking (and without
//! recursing as deep as the input is nested). The `muster-fuzz` crate
//! feeds them random and mutated bytes (docs/testing.md); each target
//! names seed inputs, real examples to mutate.
//!
//! What each target parses is what arrives from outside: HTTP bodies and
//! paths, AWS event payloads, identity-provider and HRIS documents, and
//! the files an operator hands to `muster`.

use crate::api::scim::{self, ScimError, patch};
use crate::api::sign::{AckTokens, SignedRequest, verify_request};
use crate::domain::{EmailAddress, PhoneNumber, StakeholderId, Trigger, Ts};
use crate::events::{chime, cwlogs, ses, sns};
use crate::secret::Secret;
use serde_json::{Value, json};

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Real inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Parses the input; returns whatever it returns.
    pub run: fn(&[u8]),
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(b: &[u8]) -> Option<Value> {
    serde_json::from_slice(b).ok()
}

fn seeds(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!("../../", $path))
    };
}

fn trigger_seeds() -> Vec<Vec<u8>> {
    let f = json!({"incidentId": "INC-2024-0892", "severity": "P1", "stakeholderGroupId": "ops-leadership", "messageTemplate": "System outage detected. Activate BCP protocol. Acknowledge by pressing 1.", "timestamp": "2024-05-20T14:32:00Z"});
    [
        json!({ "trigger": f }),
        json!({"eventType": "bcp.cascade.trigger", "payload": f}),
        f.clone(),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

fn run_trigger(b: &[u8]) {
    if let Some(v) = json(b) {
        let _ = Trigger::field_prefix(&v);
        let _ = Trigger::from_json(&v);
    }
}

fn run_webhook(b: &[u8]) {
    if let Some(v) = json(b) {
        let _ = crate::api::v1::webhook_event("gateway", &v);
    }
}

fn run_sns(b: &[u8]) {
    let Some(v) = json(b) else { return };
    let Ok(event) = <sns::SnsEvent as serde::Deserialize>::deserialize(&v) else {
        return;
    };
    for r in &event.records {
        let _ = sns::string_to_sign(&r.sns);
        let _ = sns::check_cert_url(&r.sns.signing_cert_url);
        let _ = sns::receipts_from_notification(&r.sns);
    }
}

fn run_pem(b: &[u8]) {
    let _ = sns::public_key_from_pem(&text(b), std::time::UNIX_EPOCH);
}

fn run_ses(b: &[u8]) {
    if let Some(v) = json(b) {
        let _ = ses::is_ses_event(&v);
        let _ = ses::receipt_from_ses_event(&v);
    }
}

fn run_sms_event(b: &[u8]) {
    if let Some(v) = json(b) {
        let _ = crate::events::sms::is_sms_event(&v);
        let _ = crate::events::sms::receipt_from_sms_event(&v);
    }
}

fn run_chime(b: &[u8]) {
    if let Some(v) = json(b) {
        let _ = chime::needs_call(&v);
        let _ = chime::handle(&v, None);
    }
}

fn run_cwlogs_event(b: &[u8]) {
    if let Some(v) = json(b) {
        let _ = cwlogs::receipts_from_cloudwatch_logs(&v);
    }
}

/// The decompressed payload of a subscription event: the input is gzipped
/// and base64-encoded into the event, as CloudWatch Logs sends it.
fn run_cwlogs_payload(b: &[u8]) {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if gz.write_all(b).is_err() {
        return;
    }
    let Ok(data) = gz.finish() else { return };
    let event =
        json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(data)}});
    let _ = cwlogs::receipts_from_cloudwatch_logs(&event);
    for line in text(b).lines() {
        let _ = cwlogs::receipt_from_sms_log(line);
    }
}

fn cwlogs_payload_seeds() -> Vec<Vec<u8>> {
    let line = |status: &str, response: &str| {
        json!({"notification": {"messageId": "m-1", "timestamp": "2024-05-20 14:32:01.000"}, "delivery": {"destination": "+14155550100", "providerResponse": response}, "status": status}).to_string()
    };
    vec![
        json!({"messageType": "DATA_MESSAGE", "logGroup": "sns/us-east-1/1/DirectPublishToPhoneNumber", "logEvents": [{"id": "1", "timestamp": 1, "message": line("SUCCESS", "Message has been accepted by phone carrier")}, {"id": "2", "timestamp": 2, "message": line("FAILURE", "Phone is currently unreachable")}]}).to_string().into_bytes(),
        json!({"messageType": "CONTROL_MESSAGE", "logEvents": []}).to_string().into_bytes(),
    ]
}

/// A user as an IdP writes it, replaced and patched.
fn run_scim_user(b: &[u8]) {
    let Some(v) = json(b) else { return };
    let Ok(id) = StakeholderId::parse("u-0") else {
        return;
    };
    let put = scim::user_from_json(&v, id.clone(), None, scim::Write::Put);
    if let Ok(p) = &put {
        let doc = scim::user_json(p, "https://scim.example.com/scim/v2");
        let _ = scim::user_from_json(&doc, id, Some(p), scim::Write::Patch);
    }
    if let Ok(l) = scim::Listing::from_search(&v) {
        let _ = scim::project(v, &l);
    }
}

fn scim_user_seeds() -> Vec<Vec<u8>> {
    [
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@example.com", "name": {"givenName": "Alice", "familyName": "Example"}, "emails": [{"primary": true, "value": "alice@example.com", "type": "work"}], "phoneNumbers": [{"value": "+1 (212) 555-0101", "type": "mobile"}], "displayName": "Alice Example", "locale": "en-US", "externalId": "00uAlice", "active": true}),
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"], "externalId": "8aa1a0c0", "userName": "Test_User", "active": "True", "emails": [{"primary": "true", "type": "work", "value": "t@example.com"}], "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "u-1"}}, "urn:muster:scim:1.0:User": {"tier": "1", "channels": ["sms", "voice"], "pushEndpoint": "arn:aws:sns:us-east-1:1:endpoint/GCM/app/x"}}),
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName eq \"a\"", "attributes": ["userName", "emails.value"], "excludedAttributes": "phoneNumbers", "startIndex": 0, "count": 10}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

fn run_scim_patch(b: &[u8]) {
    let Some(ops) = json(b) else { return };
    let mut doc = json!({"userName": "a@example.com", "emails": [{"value": "a@example.com", "type": "work"}], "urn:muster:scim:1.0:User": {"tier": "2"}});
    if patch::apply_patch(&mut doc, &ops).is_ok()
        && let Ok(id) = StakeholderId::parse("u-0")
    {
        let _ = scim::user_from_json(&doc, id, None, scim::Write::Patch);
    }
}

fn scim_patch_seeds() -> Vec<Vec<u8>> {
    [
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]}),
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+44 20 7946 0123"}, {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "u-1"}, {"op": "remove", "path": "members[value eq \"u-2\"]"}, {"op": "add", "path": "name.givenName", "value": "A"}]}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

fn run_scim_filter(b: &[u8]) {
    let t = text(b);
    let _ = scim::parse_filter(&t, &["userName", "externalId", "id", "displayName"]);
    let _ = patch::parse_path(&t);
}

/// A query string, as `GET /scim/v2/Users?...` receives it.
fn run_scim_query(b: &[u8]) {
    let pairs: Vec<(String, String)> = url_pairs(&text(b));
    let r: Result<scim::Listing, ScimError> =
        scim::Listing::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), json!(v))));
    if let Ok(l) = r {
        let _ = scim::project(
            json!({"id": "u-1", "userName": "a", "emails": [{"value": "a@example.com"}], "name": {"givenName": "A"}}),
            &l,
        );
    }
}

/// `k=v&k=v`, `+` and `%XX` decoded as a form is.
fn url_pairs(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| percent_decode(&s.replace('+', " "));
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn run_directory_yaml(b: &[u8]) {
    let _ = crate::directory::parse_file(std::path::Path::new("d.yaml"), &text(b));
}

fn run_directory_csv(b: &[u8]) {
    let _ = crate::directory::parse_file(std::path::Path::new("d.csv"), &text(b));
}

fn run_directory_json(b: &[u8]) {
    let _ = crate::directory::parse_file(std::path::Path::new("d.json"), &text(b));
}

fn directory_json_seeds() -> Vec<Vec<u8>> {
    crate::directory::parse_yaml(fixture!("examples/directory/ops-leadership.yaml"))
        .ok()
        .and_then(|d| serde_json::to_vec(&d).ok())
        .into_iter()
        .collect()
}

fn run_policy(b: &[u8]) {
    let _ = crate::policy::Policy::from_toml(&text(b));
}

fn run_scenario(b: &[u8]) {
    let _ = crate::drill::Scenario::from_toml(&text(b));
}

fn run_ack_token(b: &[u8]) {
    let tokens = AckTokens::new(Secret::new("fuzz-ack-key"), 86_400_000);
    let t = text(b);
    let _ = tokens.check(&t, Ts::from_secs(1_700_000_000));
}

fn ack_token_seeds() -> Vec<Vec<u8>> {
    let tokens = AckTokens::new(Secret::new("fuzz-ack-key"), 86_400_000);
    let (Ok(incident), Ok(stakeholder)) = (
        crate::domain::IncidentId::parse("INC-1"),
        StakeholderId::parse("alice"),
    ) else {
        return Vec::new();
    };
    let key = crate::engine::CascadeKey {
        incident,
        stakeholder,
        route: crate::engine::Route::Member,
    };
    vec![
        tokens
            .mint(
                &key,
                crate::domain::Channel::Push,
                Ts::from_secs(1_700_000_000),
            )
            .into_bytes(),
    ]
}

/// Headers and request, one per line: timestamp, signature, method, path,
/// query; the rest is the body.
fn run_signature(b: &[u8]) {
    let t = text(b);
    let mut lines = t.splitn(6, '\n');
    let ts = lines.next();
    let sig = lines.next();
    let method = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let query = lines.next().filter(|q| !q.is_empty());
    let body = lines.next().unwrap_or_default();
    let req = SignedRequest {
        method,
        path,
        query,
        timestamp: 0,
        body: body.as_bytes(),
    };
    let _ = verify_request(
        &Secret::new("fuzz"),
        ts,
        sig,
        &req,
        Ts::from_secs(1_700_000_000),
    );
}

fn run_values(b: &[u8]) {
    let t = text(b);
    let _ = Ts::parse_rfc3339_any(&t);
    let _ = PhoneNumber::parse(&t);
    let _ = EmailAddress::parse(&t);
    let _ = crate::domain::IncidentId::parse(&t);
    let _ = crate::domain::MessageTemplate::parse(&t);
}

fn run_hris(b: &[u8]) {
    if let Some(v) = json(b) {
        let _ = crate::adapters::http_lookup::contacts_from_scim(&v);
    }
}

fn run_twilio(b: &[u8]) {
    use crate::events::twilio;
    if let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(b) {
        let _ = twilio::call_status(&params);
        let _ = twilio::message_status(&params);
        let _ = twilio::verify(
            "twilio-auth-token",
            "https://muster.example.com/v1/gateways/twilio/voice",
            &params,
            twilio::param(&params, "Signature").unwrap_or_default(),
        );
        let _ = twilio::gather(
            twilio::param(&params, "Body").unwrap_or_default(),
            "https://m.example.com/g",
            None,
        );
    }
}

fn run_sendgrid(b: &[u8]) {
    use crate::events::sendgrid;
    if let Some(Value::Array(events)) = json(b) {
        for e in &events {
            let _ = sendgrid::receipt(e);
        }
    }
    let _ = sendgrid::key(&text(b));
    // SendGrid's documented verification key (sendgrid_signature_vector.json).
    const KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    if let Ok(k) = sendgrid::key(KEY) {
        let _ = sendgrid::verify(&k, "1600112502", b, &text(b));
    }
}

/// Every target.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "twilio-webhook",
            seeds: || {
                seeds(&[
                    "CallSid=CA1234567890ABCDE&CallStatus=no-answer&SipResponseCode=480&AccountSid=AC1",
                    "MessageSid=SM1&MessageStatus=undelivered&ErrorCode=30003",
                    "MessageSid=SM2&From=%2B13125550102&To=%2B12125550100&Body=ACK+4821",
                    "CallSid=CA1&Digits=1",
                ])
            },
            run: run_twilio,
        },
        Target {
            name: "sendgrid-events",
            seeds: || seeds(&[fixture!("tests/fixtures/gateways/sendgrid_events.json")]),
            run: run_sendgrid,
        },
        Target {
            name: "trigger",
            seeds: trigger_seeds,
            run: run_trigger,
        },
        Target {
            name: "webhook",
            seeds: || {
                seeds(&[
                    r#"{"messageId":"gw-000123","status":"delivered"}"#,
                    r#"{"from":"+14155550100","text":"STOP"}"#,
                ])
            },
            run: run_webhook,
        },
        Target {
            name: "sns",
            seeds: || {
                seeds(&[
                    fixture!("tests/fixtures/sns/lambda_ses_delivery.json"),
                    fixture!("tests/fixtures/sns/inbound_sms.json"),
                ])
            },
            run: run_sns,
        },
        Target {
            name: "sns-cert",
            seeds: || seeds(&[fixture!("tests/fixtures/sns/cert.pem")]),
            run: run_pem,
        },
        Target {
            name: "sms-event",
            seeds: || seeds(&[fixture!("tests/fixtures/sms/text_successful.json")]),
            run: run_sms_event,
        },
        Target {
            name: "ses",
            seeds: || {
                seeds(&[
                    fixture!("tests/fixtures/ses/delivery.json"),
                    fixture!("tests/fixtures/ses/bounce_permanent.json"),
                    fixture!("tests/fixtures/ses/bounce_transient.json"),
                    fixture!("tests/fixtures/ses/complaint.json"),
                    fixture!("tests/fixtures/ses/reject.json"),
                    fixture!("tests/fixtures/ses/delivery_delay.json"),
                ])
            },
            run: run_ses,
        },
        Target {
            name: "chime",
            seeds: || {
                seeds(&[
                    fixture!("tests/fixtures/chime/new_outbound_call.json"),
                    fixture!("tests/fixtures/chime/call_answered.json"),
                    fixture!("tests/fixtures/chime/digits_1.json"),
                    fixture!("tests/fixtures/chime/no_input.json"),
                    fixture!("tests/fixtures/chime/hangup_unanswered.json"),
                ])
            },
            run: run_chime,
        },
        Target {
            name: "cwlogs-event",
            seeds: || {
                seeds(&[fixture!(
                    "tests/fixtures/cloudwatch/subscription_event.json"
                )])
            },
            run: run_cwlogs_event,
        },
        Target {
            name: "cwlogs-payload",
            seeds: cwlogs_payload_seeds,
            run: run_cwlogs_payload,
        },
        Target {
            name: "scim-user",
            seeds: scim_user_seeds,
            run: run_scim_user,
        },
        Target {
            name: "scim-patch",
            seeds: scim_patch_seeds,
            run: run_scim_patch,
        },
        Target {
            name: "scim-filter-path",
            seeds: || {
                seeds(&[
                    "userName eq \"alice@example.com\"",
                    "emails[type eq \"work\"].value",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                    "members[value eq \"u-1\"]",
                ])
            },
            run: run_scim_filter,
        },
        Target {
            name: "scim-query",
            seeds: || {
                seeds(&[
                    "filter=userName%20eq%20%22a%40example.com%22&startIndex=1&count=100",
                    "attributes=userName,emails.value&excludedAttributes=name",
                ])
            },
            run: run_scim_query,
        },
        Target {
            name: "directory-yaml",
            seeds: || seeds(&[fixture!("examples/directory/ops-leadership.yaml")]),
            run: run_directory_yaml,
        },
        Target {
            name: "directory-csv",
            seeds: || seeds(&[fixture!("examples/directory/ops-leadership.csv")]),
            run: run_directory_csv,
        },
        Target {
            name: "directory-json",
            seeds: directory_json_seeds,
            run: run_directory_json,
        },
        Target {
            name: "policy",
            seeds: || {
                seeds(&[
                    fixture!("examples/policies/default.toml"),
                    fixture!("examples/policies/p3-no-voice.toml"),
                ])
            },
            run: run_policy,
        },
        Target {
            name: "drill",
            seeds: || {
                seeds(&[
                    fixture!("examples/drills/seed-p1-outage.toml"),
                    fixture!("examples/drills/escalation-chain.toml"),
                    fixture!("examples/drills/stale-directory.toml"),
                ])
            },
            run: run_scenario,
        },
        Target {
            name: "ack-token",
            seeds: ack_token_seeds,
            run: run_ack_token,
        },
        Target {
            name: "signature",
            seeds: || {
                seeds(&[
                    "1700000000\nsha256=00\nPOST\n/v1/incidents\n\n{\"trigger\":{}}",
                    "1700000000\nsha256=a2dd\nGET\n/v1/incidents/INC-1\nb=2&a=1\n",
                ])
            },
            run: run_signature,
        },
        Target {
            name: "values",
            seeds: || {
                seeds(&[
                    "2024-05-20T16:32:00.5+02:00",
                    "+44 20 7946 0001",
                    "cio@example.com",
                    "INC-2024-0892",
                    "System outage detected.",
                ])
            },
            run: run_values,
        },
        Target {
            name: "hris",
            seeds: || {
                seeds(&[
                    r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"cio","phoneNumbers":[{"value":"+44 20 7946 0001","type":"mobile"}],"emails":[{"value":"cio@example.com","primary":true}]}"#,
                ])
            },
            run: run_hris,
        },
    ]
}
