//! SDK errors mapped once into `muster::Error`, never flattened into strings:
//! the SDK error stays the `source`. Transport failures, timeouts, throttling
//! and 5xx are `Transient`; other service errors are `Permanent`. A failed
//! condition is `Conflict`, decided by the caller from the typed error
//! (`ConditionalCheckFailedException`, or `TransactionCanceledException` with
//! the cancellation reasons).

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use muster::Error;

/// Whether a service error is worth retrying: a code the SDK's own retry
/// classifiers treat as throttling or transient
/// ([`aws_runtime::retries::classifiers`]), or a 5xx status (KMS's
/// `KMSInternalException`, DynamoDB's `InternalServerError` and the like all
/// come with one).
pub fn is_retryable_service<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(se) => se.err().code().is_some_and(is_retryable_code),
        _ => false,
    }
}

/// A code in the SDK's throttling or transient lists.
pub fn is_retryable_code(code: &str) -> bool {
    THROTTLING_ERRORS.contains(&code) || TRANSIENT_ERRORS.contains(&code)
}

/// HTTP status of a service error's response, if there was one.
pub fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        SdkError::ResponseError(re) => Some(re.raw().status().as_u16()),
        _ => None,
    }
}

/// Maps an SDK error to `Transient` or `Permanent`, keeping it as the source.
pub fn map_sdk<E>(context: impl Into<String>, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let context = context.into();
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            is_retryable_service(&err) || status(&err).is_some_and(|s| s >= 500)
        }
        _ => false,
    };
    let code = match &err {
        SdkError::ServiceError(se) => se.err().code().unwrap_or("unknown").to_string(),
        _ => String::new(),
    };
    let context = if code.is_empty() {
        context
    } else {
        format!("{context} ({code})")
    };
    if transient {
        Error::Transient {
            context,
            source: Some(Box::new(err)),
        }
    } else {
        Error::Permanent {
            context,
            source: Some(Box::new(err)),
        }
    }
}
