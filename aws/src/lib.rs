//! AWS implementations of Muster's ports, with the memory adapters'
//! semantics: DynamoDB state, directory and rate limiting, SQS
//! work queue and timers (EventBridge Scheduler beyond SQS's 15 minutes),
//! SNS / SESv2 senders, and KMS envelope encryption of contact details.
//! See docs/aws.md for table layouts, error mapping and cost figures.

pub mod archive;
pub mod crypto;
pub mod dynamo;
pub mod error;
pub mod kms_seal;
pub mod runtime;
pub mod senders;
pub mod sqs;
pub mod timers;
