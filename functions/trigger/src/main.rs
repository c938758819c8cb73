//! `muster-trigger`: the HTTP API (API Gateway HTTP API, payload 2.0).
//! See docs/functions.md.

use muster_aws::runtime::{self, Clients, Function, Trigger, build_deps};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), runtime::Error> {
    runtime::init_tracing();
    let config = runtime::load(Function::Trigger)?;
    let clients = Clients::new(&runtime::sdk_config().await);
    let deps = build_deps(&config, &clients, Arc::new(runtime::WallClock)).await?;
    let certs = Arc::new(runtime::sns_cert_fetcher()?);
    let function = Trigger::new(&config, deps, certs);
    runtime::serve(|event, ctx| function.handle(event, ctx)).await
}
