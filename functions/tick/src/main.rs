//! `muster-tick`: fired timers (SQS, partial batch failures), the
//! every-minute sweep (EventBridge Scheduler) and the audit archive stream.
//! See docs/functions.md.

use muster_aws::archive::AuditArchive;
use muster_aws::runtime::{self, Clients, Function, Tick, build_deps};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), runtime::Error> {
    runtime::init_tracing();
    let config = runtime::load(Function::Tick)?;
    let clients = Clients::new(&runtime::sdk_config().await);
    let deps = build_deps(&config, &clients, Arc::new(runtime::WallClock)).await?;
    let mut function = Tick::new(deps);
    if let Some(bucket) = &config.audit_archive_bucket {
        function = function.with_archive(AuditArchive::new(clients.s3.clone(), bucket));
    }
    runtime::serve(|event, ctx| function.handle(event, ctx)).await
}
