//! CloudWatch Logs subscription events carrying the SMS delivery status
//! logs SNS writes (`sns/<region>/<account>/DirectPublishToPhoneNumber` and
//! its `/Failure` group), as receipts for the SMS channel.
//!
//! The event is `{"awslogs": {"data": base64(gzip(JSON))}}`; the JSON has
//! `messageType` (`DATA_MESSAGE`, or `CONTROL_MESSAGE` for the subscription
//! test, which carries nothing) and `logEvents[].message`, each a delivery
//! log line:
//!
//! | status | providerResponse | receipt |
//! | --- | --- | --- |
//! | SUCCESS | any | DELIVERED |
//! | FAILURE | invalid number, opted out | UNREACHABLE |
//! | FAILURE | anything else | FAILED |
//!
//! keyed by `notification.messageId`, the `MessageId` SNS `Publish`
//! answered, which the SMS sender registers. `delivery.destination` is a
//! phone number: it is never read.

use crate::app::ReceiptEvent;
use crate::engine::ReceiptStatus;
use base64::Engine as _;
use flate2::read::GzDecoder;
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;

/// Largest decompressed payload accepted (CloudWatch Logs sends at most
/// about 1 MB; this bounds a gzip bomb).
pub const MAX_DECOMPRESSED: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CwLogsError {
    #[error("CloudWatch Logs event is malformed: {0}")]
    Malformed(String),
}

/// The decoded subscription payload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsData {
    pub message_type: String,
    #[serde(default)]
    pub log_group: String,
    #[serde(default)]
    pub log_events: Vec<LogEvent>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LogEvent {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub timestamp: i64,
    pub message: String,
}

/// Decodes `awslogs.data` (base64, gzip, JSON).
pub fn decode_awslogs(event: &Value) -> Result<LogsData, CwLogsError> {
    let data = event["awslogs"]["data"]
        .as_str()
        .ok_or_else(|| CwLogsError::Malformed("awslogs.data: missing".into()))?;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| CwLogsError::Malformed("awslogs.data: not base64".into()))?;
    let mut json = Vec::new();
    GzDecoder::new(gz.as_slice())
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut json)
        .map_err(|e| CwLogsError::Malformed(format!("awslogs.data: not gzip ({e})")))?;
    if json.len() as u64 > MAX_DECOMPRESSED {
        return Err(CwLogsError::Malformed(format!(
            "awslogs.data: more than {MAX_DECOMPRESSED} bytes decompressed"
        )));
    }
    serde_json::from_slice(&json)
        .map_err(|e| CwLogsError::Malformed(format!("awslogs.data: not the logs JSON ({e})")))
}

/// The receipt of one SMS delivery log line, or `None` when the line is
/// not one. Reads `notification.messageId`, `status` and
/// `delivery.providerResponse` only.
pub fn receipt_from_sms_log(line: &str) -> Option<ReceiptEvent> {
    let v: Value = serde_json::from_str(line).ok()?;
    let id = v["notification"]["messageId"]
        .as_str()
        .filter(|s| !s.is_empty())?;
    let status = match v["status"].as_str()? {
        "SUCCESS" => ReceiptStatus::Delivered,
        "FAILURE" => {
            let response = v["delivery"]["providerResponse"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if response.contains("invalid") || response.contains("opted out") {
                ReceiptStatus::Unreachable
            } else {
                ReceiptStatus::Failed
            }
        }
        _ => return None,
    };
    Some(ReceiptEvent::Delivery {
        provider_message_id: id.to_string(),
        status,
    })
}

/// Entry point for the `receipt` Lambda's CloudWatch Logs subscription:
/// the receipts of the SMS delivery logs in the event, in log order. Lines
/// that are not delivery logs are counted and skipped (never logged: they
/// may hold phone numbers).
pub fn receipts_from_cloudwatch_logs(event: &Value) -> Result<Vec<ReceiptEvent>, CwLogsError> {
    let data = decode_awslogs(event)?;
    if data.message_type != "DATA_MESSAGE" {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(data.log_events.len());
    let mut skipped = 0usize;
    for ev in &data.log_events {
        match receipt_from_sms_log(&ev.message) {
            Some(r) => out.push(r),
            None => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            log_group = %data.log_group,
            "log lines that are not SMS delivery logs skipped"
        );
    }
    Ok(out)
}
