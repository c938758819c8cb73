//! The four functions' handlers. Each is a struct built once per Lambda
//! instance (from the configuration and the dependencies) whose `handle`
//! takes one invocation's event as JSON and answers JSON; tests call them
//! in-process with recorded AWS event shapes.
//!
//! | function | events | answer |
//! | --- | --- | --- |
//! | trigger | API Gateway HTTP API (payload 2.0): `/v1/*`, `/scim/v2/*` | the HTTP response |
//! | dispatch | SQS batch of work items | `batchItemFailures` |
//! | receipt | API Gateway `POST /v1/webhooks/{provider}`; Chime SMA events; SNS; CloudWatch Logs | HTTP response; SMA actions |
//! | tick | SQS batch of timers; `{"muster": "sweep"}`; DynamoDB stream of the audit table | `batchItemFailures`; sweep report |

use super::config::Config;
use super::wiring::ack_tokens;
use crate::archive::{AuditArchive, StreamEvent};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use axum::Router;
use lambda_http::request::LambdaRequest;
use lambda_http::{RequestExt, Service};
use lambda_runtime::{Context, LambdaEvent};
use muster::api::scim;
use muster::api::v1::{self, ApiState, Caller};
use muster::app::{self, ReceiptEvent};
use muster::domain::Ts;
use muster::events::cwlogs::receipts_from_cloudwatch_logs;
use muster::events::sns::{CertFetcher, SnsVerifier, receipts_from_sns};
use muster::ports::{Deps, Job, TimerMsg};
use muster::secret::Secret;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

/// Why an invocation failed. The message goes back to the invoker and to
/// the log: it never holds a contact detail.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("event not understood: {0}")]
    BadEvent(String),
    #[error("{0}: this function is not configured for these events")]
    NotConfigured(&'static str),
    #[error(transparent)]
    App(#[from] muster::Error),
}

/// The shape of an incoming event, told from its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// API Gateway HTTP API, payload format 2.0.
    Http,
    /// Chime SDK SIP media application invocation.
    ChimeSma,
    /// SNS notifications delivered by Lambda subscription.
    Sns,
    /// CloudWatch Logs subscription (`awslogs.data`).
    CloudWatchLogs,
    /// SQS batch.
    Sqs,
    /// DynamoDB stream batch.
    DynamoDbStream,
    /// `{"muster": "sweep"}` from EventBridge Scheduler.
    Sweep,
    Unknown,
}

pub fn shape(event: &Value) -> Shape {
    if event.get("requestContext").is_some() && event["version"] == "2.0" {
        return Shape::Http;
    }
    if event.get("InvocationEventType").is_some() && event.get("CallDetails").is_some() {
        return Shape::ChimeSma;
    }
    if event["awslogs"]["data"].is_string() {
        return Shape::CloudWatchLogs;
    }
    if event["muster"] == "sweep" {
        return Shape::Sweep;
    }
    let first = &event["Records"][0];
    // SNS spells its source `EventSource`, SQS and DynamoDB `eventSource`.
    match (first["EventSource"].as_str(), first["eventSource"].as_str()) {
        (Some("aws:sns"), _) => Shape::Sns,
        (_, Some("aws:sqs")) => Shape::Sqs,
        (_, Some("aws:dynamodb")) => Shape::DynamoDbStream,
        _ => Shape::Unknown,
    }
}

/// Epoch milliseconds at which a Lambda invocation's work should stop:
/// `margin_ms` before the deadline the runtime reports. A context without a
/// deadline (tests) gives `None`.
pub fn stop_at(ctx: &Context, margin_ms: u64) -> Option<Ts> {
    (ctx.deadline > 0).then(|| Ts(ctx.deadline.saturating_sub(margin_ms)))
}

/// Roles of a caller, from the JWT authorizer's claims (`roles`,
/// `cognito:groups` or `groups`; API Gateway renders a list claim as
/// `[a b]`) and scopes (`<resource server>/<Role>`, e.g.
/// `muster/ComplianceOfficer`).
pub fn caller_from_jwt(
    claims: &std::collections::HashMap<String, String>,
    scopes: &[String],
) -> Caller {
    let mut roles: Vec<String> = Vec::new();
    for claim in ["roles", "cognito:groups", "groups"] {
        if let Some(v) = claims.get(claim) {
            let list = v.trim().trim_start_matches('[').trim_end_matches(']');
            roles.extend(
                list.split(|c: char| c == ',' || c.is_whitespace())
                    .map(|r| r.trim_matches('"'))
                    .filter(|r| !r.is_empty())
                    .map(str::to_string),
            );
        }
    }
    roles.extend(
        scopes
            .iter()
            .filter_map(|s| s.rsplit('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    );
    roles.sort();
    roles.dedup();
    Caller {
        subject: claims.get("sub").cloned().unwrap_or_default(),
        roles,
    }
}

/// The caller API Gateway's JWT authorizer authenticated, if any.
fn caller_of(req: &lambda_http::Request) -> Option<Caller> {
    let jwt = req.request_context_ref()?.authorizer()?.jwt.as_ref()?;
    Some(caller_from_jwt(
        &jwt.claims,
        jwt.scopes.as_deref().unwrap_or_default(),
    ))
}

/// Serves one API Gateway HTTP API event through `router`; the answer is
/// the API Gateway response. `only` restricts the paths served (others 404).
async fn serve_http(
    router: &Router,
    event: Value,
    ctx: Context,
    only: Option<&str>,
) -> Result<Value, HandlerError> {
    let req: LambdaRequest = serde_json::from_value(event)
        .map_err(|e| HandlerError::BadEvent(format!("not an HTTP API request: {e}")))?;
    let router = router.clone();
    let only = only.map(str::to_string);
    let service = tower::service_fn(move |mut req: lambda_http::Request| {
        let router = router.clone();
        let only = only.clone();
        async move {
            if let Some(prefix) = &only
                && !req.uri().path().starts_with(prefix.as_str())
            {
                let r = axum::response::IntoResponse::into_response(v1::Problem::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "no such route",
                ));
                return Ok::<_, std::convert::Infallible>(r);
            }
            // Only the gateway's authorizer may vouch for a caller.
            req.extensions_mut().remove::<Caller>();
            if let Some(c) = caller_of(&req) {
                tracing::info!(subject = %c.subject, roles = ?c.roles, "caller authenticated by the gateway");
                req.extensions_mut().insert(c);
            }
            router.oneshot(req.map(axum::body::Body::new)).await
        }
    });
    let mut adapter = lambda_http::Adapter::from(service);
    let resp = match adapter.call(LambdaEvent::new(req, ctx)).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    serde_json::to_value(resp)
        .map_err(|e| HandlerError::App(muster::Error::permanent(format!("response: {e}"))))
}

/// `trigger`: the v1 API (all routes but webhooks, which API Gateway sends
/// to `receipt`), the incident sources configured
/// (`/v1/integrations/{source}`) and, with a SCIM token, `/scim/v2`.
pub struct Trigger {
    router: Router,
}

impl Trigger {
    /// `certs` fetches the SNS signing certificates of CloudWatch alarm
    /// deliveries (used only with `MUSTER_CLOUDWATCH_TOPIC_ARNS`).
    pub fn new(config: &Config, deps: Deps, certs: Arc<dyn CertFetcher>) -> Self {
        // Signed requests (HMAC) use the webhook secret when the deployment
        // gives trigger one; otherwise a random key: only callers the JWT
        // authorizer authenticated get in. The API is never open here.
        let secret = config.webhook_secret.clone().unwrap_or_else(random_secret);
        let admin = deps.admin.clone();
        let mut router = v1::router(ApiState {
            deps,
            secret: Some(secret),
            tokens: ack_tokens(config),
            integrations: muster::api::integrations::Integrations {
                secrets: config.integration_secrets.iter().cloned().collect(),
                cloudwatch: (!config.cloudwatch_topic_arns.is_empty()).then(|| {
                    Arc::new(SnsVerifier::new(
                        config.cloudwatch_topic_arns.iter().cloned(),
                        certs,
                    ))
                }),
                gateways: config
                    .gateways
                    .as_ref()
                    .and_then(|t| muster::adapters::gateways::from_json(t.expose()).ok())
                    .map(|g| g.hooks)
                    .unwrap_or_default(),
            },
        });
        if let Some(token) = &config.scim_token {
            router = router.merge(scim::router(admin, token.clone()));
        }
        // The incident board: public assets; the page signs in with the
        // Cognito hosted UI and calls the API with the access token.
        let board = muster::api::board::BoardConfig {
            auth: match &config.board {
                Some(sign_in) => muster::api::board::BoardAuth::Cognito(sign_in.clone()),
                None => muster::api::board::BoardAuth::Unconfigured,
            },
            local_phones: false,
        };
        let router = router.merge(muster::api::board::router(board));
        Trigger {
            router: muster::api::finish(router),
        }
    }

    pub async fn handle(&self, event: Value, ctx: Context) -> Result<Value, HandlerError> {
        match shape(&event) {
            Shape::Http => serve_http(&self.router, event, ctx, None).await,
            other => Err(HandlerError::BadEvent(format!(
                "trigger takes HTTP API requests, not {other:?}"
            ))),
        }
    }
}

fn random_secret() -> Secret {
    use rand::TryRngCore;
    let mut b = [0u8; 32];
    // An unreadable OS generator leaves zeros XORed with the time: still no
    // key anyone holds, and the JWT path is unaffected.
    if rand::rngs::OsRng.try_fill_bytes(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..16].copy_from_slice(&t.to_le_bytes());
    }
    Secret::new(hex::encode(b))
}

/// Runs `f` on every record's body, concurrently; the records it fails on
/// are the batch item failures (SQS delivers them again, then to the
/// dead-letter queue).
async fn sqs_batch<'a, T, F, Fut>(event: Value, what: &str, f: F) -> Result<Value, HandlerError>
where
    T: serde::de::DeserializeOwned,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = muster::Result<()>> + 'a,
{
    let event: SqsEvent = serde_json::from_value(event)
        .map_err(|e| HandlerError::BadEvent(format!("not an SQS batch: {e}")))?;
    let mut work = Vec::new();
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        match serde_json::from_str::<T>(record.body.as_deref().unwrap_or_default()) {
            Ok(item) => work.push((id, f(item))),
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "{what} message not understood");
                response.add_failure(id);
            }
        }
    }
    let (ids, futures): (Vec<String>, Vec<Fut>) = work.into_iter().unzip();
    for (id, result) in ids
        .into_iter()
        .zip(futures::future::join_all(futures).await)
    {
        if let Err(e) = result {
            tracing::warn!(message_id = %id, error = %e, "{what} failed; SQS will deliver it again");
            response.add_failure(id);
        }
    }
    serde_json::to_value(response)
        .map_err(|e| HandlerError::App(muster::Error::permanent(format!("response: {e}"))))
}

/// `dispatch`: work items from the dispatch queue. A send the rate limiter
/// holds back is re-queued by the use case with an SQS delay until the slot
/// it booked (never waited for here); a carrier's throttle is an engine
/// event (the attempt is retried after Retry-After by a timer).
pub struct Dispatch {
    deps: Deps,
}

impl Dispatch {
    pub fn new(deps: Deps) -> Self {
        Dispatch { deps }
    }

    pub async fn handle(&self, event: Value, _ctx: Context) -> Result<Value, HandlerError> {
        match shape(&event) {
            Shape::Sqs => {
                sqs_batch(event, "work item", |job: Job| {
                    app::dispatch(&self.deps, job)
                })
                .await
            }
            other => Err(HandlerError::BadEvent(format!(
                "dispatch takes SQS batches, not {other:?}"
            ))),
        }
    }
}

/// `receipt`: signed webhooks over HTTP, Chime SMA call events, SNS
/// notifications (SES events and inbound SMS, signatures verified, topics
/// allow-listed) and CloudWatch Logs SMS delivery status.
pub struct Receipt {
    deps: Deps,
    router: Router,
    sns: SnsVerifier,
}

/// The only HTTP path `receipt` serves.
pub const WEBHOOK_PREFIX: &str = "/v1/webhooks/";

impl Receipt {
    /// `certs` fetches SNS signing certificates (HTTPS, cached by the
    /// verifier for the instance's lifetime).
    pub fn new(config: &Config, deps: Deps, certs: Arc<dyn CertFetcher>) -> Self {
        let secret = config.webhook_secret.clone().unwrap_or_else(random_secret);
        let router = muster::api::finish(v1::router(ApiState {
            deps: deps.clone(),
            secret: Some(secret),
            tokens: ack_tokens(config),
            // Incident sources are the trigger function's.
            integrations: Default::default(),
        }));
        let sns = SnsVerifier::new(config.sns_topic_arns.iter().cloned(), certs);
        Receipt { deps, router, sns }
    }

    pub async fn handle(&self, event: Value, ctx: Context) -> Result<Value, HandlerError> {
        match shape(&event) {
            Shape::Http => serve_http(&self.router, event, ctx, Some(WEBHOOK_PREFIX)).await,
            Shape::ChimeSma => self.chime(&event).await,
            Shape::Sns => {
                let receipts = receipts_from_sns(&event, &self.sns)
                    .await
                    .map_err(|e| HandlerError::BadEvent(format!("SNS: {e}")))?;
                self.apply(receipts, "SNS").await
            }
            Shape::CloudWatchLogs => {
                let receipts = receipts_from_cloudwatch_logs(&event)
                    .map_err(|e| HandlerError::BadEvent(format!("CloudWatch Logs: {e}")))?;
                self.apply(receipts, "SMS delivery log").await
            }
            other => Err(HandlerError::BadEvent(format!(
                "receipt takes HTTP API requests, Chime SMA, SNS and CloudWatch Logs events, not {other:?}"
            ))),
        }
    }

    /// Applies every receipt of one event. Any failure fails the
    /// invocation: Lambda retries it (the engine ignores what was already
    /// applied, as duplicates), then hands it to the on-failure destination.
    async fn apply(&self, receipts: Vec<ReceiptEvent>, what: &str) -> Result<Value, HandlerError> {
        let (mut applied, mut held, mut unknown) = (0usize, 0usize, 0usize);
        for r in receipts {
            match app::receipt(&self.deps, r).await? {
                app::ReceiptOutcome::Unknown => unknown += 1,
                app::ReceiptOutcome::Held => held += 1,
                _ => applied += 1,
            }
        }
        tracing::info!(applied, held, unknown, "{what} receipts");
        Ok(json!({ "applied": applied, "held": held, "unknown": unknown }))
    }

    /// One SIP media application event: `app::voice_event` (the call
    /// resolved, its receipts applied, the actions answered).
    async fn chime(&self, event: &Value) -> Result<Value, HandlerError> {
        app::voice_event(&self.deps, event)
            .await
            .map_err(|e| match e {
                muster::Error::Validation(_) => {
                    HandlerError::BadEvent(format!("Chime SMA event: {e}"))
                }
                other => HandlerError::App(other),
            })
    }
}

/// `tick`: fired timers from the timer queue, the reconciliation sweep,
/// and the audit table's stream for the archive.
pub struct Tick {
    deps: Deps,
    archive: Option<AuditArchive>,
}

/// The sweep stops this long before the Lambda deadline.
pub const SWEEP_MARGIN_MS: u64 = 10_000;

impl Tick {
    pub fn new(deps: Deps) -> Self {
        Tick {
            deps,
            archive: None,
        }
    }

    /// Archives the audit table's stream records to `archive`.
    pub fn with_archive(mut self, archive: AuditArchive) -> Self {
        self.archive = Some(archive);
        self
    }

    pub async fn handle(&self, event: Value, ctx: Context) -> Result<Value, HandlerError> {
        match shape(&event) {
            Shape::Sqs => sqs_batch(event, "timer", |t: TimerMsg| app::tick(&self.deps, t)).await,
            Shape::Sweep => self.sweep(stop_at(&ctx, SWEEP_MARGIN_MS)).await,
            Shape::DynamoDbStream => self.archive(event).await,
            other => Err(HandlerError::BadEvent(format!(
                "tick takes SQS timer batches, the sweep and the audit stream, not {other:?}"
            ))),
        }
    }

    /// One batch of the audit table's stream, written to the archive; the
    /// records that could not be written are the batch item failures
    /// (the stream delivers them again; the archive drops repeated lines).
    async fn archive(&self, event: Value) -> Result<Value, HandlerError> {
        let Some(archive) = &self.archive else {
            return Err(HandlerError::NotConfigured(
                "DynamoDB stream (no archive bucket)",
            ));
        };
        let event: StreamEvent = serde_json::from_value(event)
            .map_err(|e| HandlerError::BadEvent(format!("not a DynamoDB stream batch: {e}")))?;
        let mut failed = archive.archive(&event).await;
        // The SIEM export, queued as the entries are archived: the records
        // before the first that failed (the stream delivers it and every
        // later one again).
        let archived: Vec<_> = event
            .records
            .iter()
            .take_while(|r| !failed.contains(&r.dynamodb.sequence_number))
            .collect();
        let lines: Vec<_> = archived
            .iter()
            .filter_map(|r| crate::archive::export_line(&r.dynamodb).ok().flatten())
            .collect();
        if let Err(e) = app::export::queue(&self.deps, lines).await {
            tracing::warn!(error = %e, "audit lines not queued for the SIEM; the stream delivers them again");
            failed.extend(archived.iter().map(|r| r.dynamodb.sequence_number.clone()));
        }
        if !failed.is_empty() {
            tracing::warn!(
                failed = failed.len(),
                records = event.records.len(),
                "audit records not archived; the stream delivers them again"
            );
        }
        let failures: Vec<Value> = failed
            .into_iter()
            .map(|seq| json!({ "itemIdentifier": seq }))
            .collect();
        Ok(json!({ "batchItemFailures": failures }))
    }

    /// One reconciliation pass, stopping at `deadline` (on the
    /// dependencies' clock); the next minute's sweep continues.
    pub async fn sweep(&self, deadline: Option<Ts>) -> Result<Value, HandlerError> {
        let r = app::sweep(&self.deps, deadline).await?;
        if r.incomplete {
            tracing::warn!(
                examined = r.examined,
                "sweep stopped at its deadline with more to examine"
            );
        } else {
            tracing::info!(
                examined = r.examined,
                redriven = r.redriven,
                deferred = r.deferred,
                reexpanded = r.reexpanded,
                "sweep done"
            );
        }
        Ok(json!({
            "examined": r.examined,
            "redriven": r.redriven,
            "deferred": r.deferred,
            "reexpanded": r.reexpanded,
            "incomplete": r.incomplete,
        }))
    }
}
