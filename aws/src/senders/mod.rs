//! Channel senders: SMS through End User Messaging SMS `SendTextMessage`
//! (`sms`), push through SNS `Publish`, email through SESv2 `SendEmail`,
//! voice through Chime SDK Voice `CreateSipMediaApplicationCall`.
//! Each SDK error maps to a [`SendError`]:
//!
//! | SDK outcome | SendError |
//! |---|---|
//! | HTTP 429, or a throttling code: the SDK retry classifiers' `THROTTLING_ERRORS` (`Throttling*`, `ThrottledException`, `TooManyRequestsException`, `LimitExceededException`, ...), `Throttled`, `KMSThrottling*`, Chime `ThrottledClientException`, `ResourceLimitExceededException` (concurrent calls) | `Throttled { retry_after }`, from `Retry-After` when sent |
//! | timeout, connection failure, unreadable response, HTTP 5xx, the SDK's `TRANSIENT_ERRORS` (`RequestTimeout*`), `InternalError*`, `InternalFailure`, `ServiceUnavailable*`, Chime `ServiceFailureException` | `Transient` |
//! | SNS `InvalidParameter*` (a number SNS will not send to), `EndpointDisabledException` (push endpoint disabled), `PlatformApplicationDisabledException`; SESv2 `MessageRejected` | `Unreachable` |
//! | anything else: `AuthorizationError*`, `NotFound*`, other `KMS*`, `SendingPausedException`, `AccountSuspendedException`, `MailFromDomainNotVerifiedException`, `BadRequestException`, `Forbidden*`, `Unauthorized*`, other 4xx | `Failed` |
//!
//! Error strings carry the operation and the error code only, never the
//! service's message, which can echo the phone number or address.
//!
//! The sender clients are built with SDK retries off, so that every 429
//! reaches the rate limiter, which paces the endpoint (and the queue retries).

/// A copy of an SDK client with SDK retries off (see the module doc): every
/// client type is its own, so this is a macro.
macro_rules! no_retries {
    ($krate:ident, $client:expr) => {
        $krate::Client::from_conf(
            $client
                .config()
                .to_builder()
                .retry_config($krate::config::retry::RetryConfig::disabled())
                .build(),
        )
    };
}
pub(crate) use no_retries;

pub mod email;
pub mod sms;
pub mod sns;
pub mod voice;

pub use email::EmailSender;
pub use sms::{Origination, SmsSender};
pub use sns::PushSender;
pub use voice::VoiceSender;

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use muster::domain::Millis;
use muster::ports::SendError;

/// Throttling codes beyond the SDK's own list
/// ([`aws_runtime::retries::classifiers::THROTTLING_ERRORS`]): KMS's, Chime's
/// and the concurrent-call limit.
const THROTTLED_TOO: &[&str] = &[
    "Throttled",
    "KMSThrottling",
    "KMSThrottlingException",
    "ThrottledClientException",
    "ResourceLimitExceededException",
];
/// Transient codes beyond the SDK's own list
/// ([`aws_runtime::retries::classifiers::TRANSIENT_ERRORS`]); most also come
/// with a 5xx.
const TRANSIENT_TOO: &[&str] = &[
    "InternalError",
    "InternalErrorException",
    "InternalFailure",
    "ServiceFailureException",
    "InternalServiceError",
    "InternalServiceErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

fn throttled(code: &str) -> bool {
    THROTTLING_ERRORS.contains(&code) || THROTTLED_TOO.contains(&code)
}

fn transient(code: &str) -> bool {
    TRANSIENT_ERRORS.contains(&code) || TRANSIENT_TOO.contains(&code)
}
const UNREACHABLE: &[&str] = &[
    "InvalidParameter",
    "InvalidParameterException",
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "EndpointDisabled",
    "EndpointDisabledException",
    "PlatformApplicationDisabled",
    "PlatformApplicationDisabledException",
    "MessageRejected",
];

/// `Retry-After` in seconds, as milliseconds.
pub(crate) fn retry_after(resp: &HttpResponse) -> Option<Millis> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s * 1000)
}

/// Maps a send's SDK error per the table above. `op` names the call.
pub fn map_send_error<E>(op: &str, err: &SdkError<E, HttpResponse>) -> SendError
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::TimeoutError(_) => SendError::Transient(format!("{op}: timed out")),
        SdkError::DispatchFailure(_) => SendError::Transient(format!("{op}: connection failed")),
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            if status == 429 {
                SendError::Throttled {
                    retry_after: retry_after(r.raw()),
                }
            } else {
                SendError::Transient(format!("{op}: unreadable response ({status})"))
            }
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("unknown");
            let status = se.raw().status().as_u16();
            if status == 429 || throttled(code) {
                SendError::Throttled {
                    retry_after: retry_after(se.raw()),
                }
            } else if status >= 500 || transient(code) {
                SendError::Transient(format!("{op}: {code} ({status})"))
            } else if UNREACHABLE.contains(&code) {
                SendError::Unreachable(format!("{op}: {code}"))
            } else {
                SendError::Failed(format!("{op}: {code} ({status})"))
            }
        }
        _ => SendError::Failed(format!("{op}: request not built")),
    }
}

/// A value safe for an SES message tag (`[A-Za-z0-9_-]`): other bytes become
/// `_` and two hex digits, `_` itself `_5f`, so distinct values stay distinct.
pub fn tag_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}
