//! The audit archive: audit table items, as the table's DynamoDB Stream
//! delivers them (`NEW_IMAGE`), written to an S3 Object Lock bucket as JSON
//! lines in exactly the export format `muster audit verify` reads (an entry
//! per line; a seal as `{"seal": {...}}`).
//!
//! Layout: `incidents/<incident id>/<yyyy-mm-dd>/<first sequence number>.jsonl`,
//! one object per incident and day of a batch (the day of the first record's
//! time, UTC; the stream sequence number of its first record, zero-padded to
//! 40 digits so keys sort in stream order). Every put carries a SHA-256
//! checksum, which Object Lock buckets require (or Content-MD5).
//!
//! [`AuditArchive::archive`] returns the sequence numbers of the records that
//! were not archived, for the event source mapping's partial batch response
//! (`ReportBatchItemFailures`). Records without a new image (the TTL's
//! deletions) and items that are neither entries nor seals are skipped. A
//! retried batch may write a record into a second object; [`fetch_incident`]
//! drops repeated identical lines, so the fetched trail verifies.

use crate::error::map_sdk;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use muster::audit::{AuditEntry, ExportLine, Seal};
use muster::domain::{IncidentId, Ts};
use muster::{Error, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A DynamoDB Stream event as Lambda delivers it (the fields the archive
/// reads). Deserialize the invocation payload into it.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventName", default)]
    pub event_name: Option<String>,
    pub dynamodb: StreamData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamData {
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
    /// The item after the change, in DynamoDB's JSON (`{"attr": {"S": ...}}`).
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<HashMap<String, serde_json::Value>>,
}

impl StreamData {
    fn string(&self, name: &str) -> Option<&str> {
        self.new_image.as_ref()?.get(name)?.get("S")?.as_str()
    }
}

/// The lines of one object: an incident's records of one day in a batch.
struct Group {
    first_sequence: String,
    first_at: Ts,
    lines: Vec<String>,
    sequences: Vec<String>,
}

/// One archived line and where it belongs.
struct Line {
    incident: IncidentId,
    at: Ts,
    text: String,
}

/// The export line of a stream record: `Ok(None)` when the record is not an
/// audit entry or seal (or has no new image).
pub fn export_line(d: &StreamData) -> Result<Option<ExportLine>> {
    if let Some(entry) = d.string("entry") {
        let e: AuditEntry = serde_json::from_str(entry)
            .map_err(|_| Error::permanent("stream record holds an invalid audit entry"))?;
        return Ok(Some(ExportLine::Entry(Box::new(e))));
    }
    if let Some(seal) = d.string("seal") {
        let seal: Seal = serde_json::from_str(seal)
            .map_err(|_| Error::permanent("stream record holds an invalid seal"))?;
        return Ok(Some(ExportLine::Seal { seal }));
    }
    Ok(None)
}

fn line_of(d: &StreamData) -> Result<Option<Line>> {
    Ok(export_line(d)?.map(|l| Line {
        incident: l.incident().clone(),
        at: l.at(),
        // An entry as stored: the same bytes the table holds.
        text: match (&l, d.string("entry")) {
            (ExportLine::Entry(_), Some(text)) => text.to_string(),
            _ => l.to_json(),
        },
    }))
}

/// The prefix of an incident's objects.
pub fn incident_prefix(incident: &IncidentId) -> String {
    format!("incidents/{incident}/")
}

fn object_key(incident: &IncidentId, at: Ts, first_sequence: &str) -> String {
    let day: String = at.rfc3339().chars().take(10).collect();
    format!(
        "{}{day}/{first_sequence:0>40}.jsonl",
        incident_prefix(incident)
    )
}

pub struct AuditArchive {
    s3: Client,
    bucket: String,
}

impl AuditArchive {
    /// `bucket`: the Object Lock bucket (`MUSTER_AUDIT_ARCHIVE_BUCKET`).
    pub fn new(s3: Client, bucket: impl Into<String>) -> Self {
        AuditArchive {
            s3,
            bucket: bucket.into(),
        }
    }

    /// Archives a batch; returns the sequence numbers of the records that
    /// were not archived (empty: all were).
    pub async fn archive(&self, event: &StreamEvent) -> Vec<String> {
        let mut failed = Vec::new();
        let mut groups: BTreeMap<(IncidentId, String), Group> = BTreeMap::new();
        for r in &event.records {
            let seq = &r.dynamodb.sequence_number;
            match line_of(&r.dynamodb) {
                Ok(Some(line)) => {
                    let day: String = line.at.rfc3339().chars().take(10).collect();
                    let g = groups.entry((line.incident, day)).or_insert_with(|| Group {
                        first_sequence: seq.clone(),
                        first_at: line.at,
                        lines: Vec::new(),
                        sequences: Vec::new(),
                    });
                    g.lines.push(line.text);
                    g.sequences.push(seq.clone());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(sequence = %seq, error = %e, "audit stream record not archived");
                    failed.push(seq.clone());
                }
            }
        }
        for ((incident, _), g) in groups {
            let key = object_key(&incident, g.first_at, &g.first_sequence);
            let mut body = g.lines.join("\n");
            body.push('\n');
            let put = self
                .s3
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/x-ndjson")
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .body(ByteStream::from(body.into_bytes()))
                .send()
                .await;
            if let Err(e) = put {
                let e = map_sdk(format!("archiving audit lines of {incident}"), e);
                tracing::warn!(incident = %incident, error = %e, "audit archive write failed");
                failed.extend(g.sequences);
            }
        }
        failed
    }

    /// Every archived line of an incident, objects in key order (day, then
    /// stream order), repeated identical lines dropped: a trail
    /// `muster audit verify` checks.
    pub async fn fetch_incident(&self, incident: &IncidentId) -> Result<String> {
        fetch_incident(&self.s3, &self.bucket, incident).await
    }
}

/// See [`AuditArchive::fetch_incident`].
pub async fn fetch_incident(s3: &Client, bucket: &str, incident: &IncidentId) -> Result<String> {
    let prefix = incident_prefix(incident);
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let resp = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| map_sdk(format!("listing the archive of {incident}"), e))?;
        keys.extend(
            resp.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        match resp.next_continuation_token() {
            Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
    }
    keys.sort();
    let mut seen = HashSet::new();
    let mut out = String::new();
    for key in keys {
        let obj = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| map_sdk(format!("reading archive object {key}"), e))?;
        let bytes = obj
            .body
            .collect()
            .await
            .map_err(|e| Error::Transient {
                context: format!("reading archive object {key}"),
                source: Some(Box::new(e)),
            })?
            .into_bytes();
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::permanent(format!("archive object {key} is not UTF-8")))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if seen.insert(line.to_string()) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_sort_by_day_then_stream_order() {
        let inc = IncidentId::parse("INC-1").unwrap();
        let a = object_key(&inc, Ts::from_secs(1_700_000_000), "900");
        let b = object_key(&inc, Ts::from_secs(1_700_000_000), "10000");
        assert_eq!(
            a,
            "incidents/INC-1/2023-11-14/0000000000000000000000000000000000000900.jsonl"
        );
        assert!(a < b);
    }

    #[test]
    fn removals_and_foreign_items_are_skipped() {
        let ev: StreamEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "1", "Keys": {}}},
            {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "2",
                "NewImage": {"pk": {"S": "x"}, "other": {"N": "1"}}}}
        ]}))
        .unwrap();
        assert!(line_of(&ev.records[0].dynamodb).unwrap().is_none());
        assert!(line_of(&ev.records[1].dynamodb).unwrap().is_none());
    }
}
