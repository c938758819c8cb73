//! `muster-dispatch`: work items from the dispatch queue (SQS, partial
//! batch failures). See docs/functions.md.

use muster_aws::runtime::wiring::build_dispatch_deps;
use muster_aws::runtime::{self, Clients, Dispatch, Function};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), runtime::Error> {
    runtime::init_tracing();
    let config = runtime::load(Function::Dispatch)?;
    let clients = Clients::new(&runtime::sdk_config().await);
    let deps = build_dispatch_deps(&config, &clients, Arc::new(runtime::WallClock)).await?;
    let function = Dispatch::new(deps);
    runtime::serve(|event, ctx| function.handle(event, ctx)).await
}
