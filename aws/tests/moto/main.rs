//! muster-aws against moto (docs/aws.md, "Testing against moto"): one test
//! binary, so the SDK is linked once, with one harness (`support`) that
//! starts or finds moto and adds the checks moto cannot make (IAM).

mod support;

mod audit_archive;
mod dynamo_directory_limiter;
mod dynamo_state;
mod e2e_functions;
mod kms_vault_seal;
mod senders;
mod sqs_timers;
