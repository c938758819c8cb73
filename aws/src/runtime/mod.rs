//! What the four Lambda functions share: configuration from the
//! environment ([`config`]), the AWS wiring of the use cases ([`wiring`]),
//! and the handlers ([`handlers`]): plain async functions of an event, the
//! dependencies and a deadline, which tests call in-process and `main.rs`
//! hands to the Lambda runtime. See docs/functions.md.

pub mod config;
pub mod handlers;
pub mod wiring;

pub use config::{Config, ConfigError, Function};
pub use handlers::{Dispatch, HandlerError, Receipt, Tick, Trigger};
pub use lambda_runtime::{Context, Error};
/// The wall clock (the functions' clock; tests use a virtual one).
pub use muster::adapters::memory::SystemClock as WallClock;
pub use wiring::{Clients, build_deps};

use serde_json::Value;
use std::future::Future;

/// JSON log lines on stdout (CloudWatch Logs), at the level Lambda's
/// logging controls set (`AWS_LAMBDA_LOG_LEVEL`), INFO by default.
pub fn init_tracing() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .init();
}

/// The configuration of `function` from the process environment; a
/// failure is logged (naming every variable to fix) before it is returned.
pub fn load(function: Function) -> Result<Config, ConfigError> {
    Config::from_lookup(function, |name| std::env::var(name).ok()).inspect_err(|e| {
        tracing::error!(error = %e, "configuration refused");
    })
}

/// Fetches SNS signing certificates over HTTPS (2 s timeout, no redirects);
/// `Receipt` caches them for the instance's lifetime.
pub fn sns_cert_fetcher() -> Result<muster::events::sns::HttpCertFetcher, Error> {
    Ok(muster::events::sns::HttpCertFetcher::new()?)
}

/// The SDK configuration of the Lambda environment (region, credentials).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

/// The SDK's HTTPS client: rustls with ring, the one TLS crypto provider
/// of every function (reqwest's, for the SNS certificate and the contact
/// lookup, is ring too).
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Runs the Lambda runtime loop with `handler` for every invocation.
pub async fn serve<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(Value, Context) -> Fut,
    Fut: Future<Output = Result<Value, HandlerError>>,
{
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: lambda_runtime::LambdaEvent<Value>| {
            let answer = handler(event.payload, event.context);
            async move { answer.await.map_err(Error::from) }
        },
    ))
    .await
}

#[cfg(test)]
mod tests;
