//! Signatures: HMAC-SHA256 request signing for triggers and webhooks, and
//! signed, expiring acknowledgement tokens for one-click links.
//!
//! Request signing binds a signature to what it authorises: the method, the
//! path (so a webhook's provider, which is in its path, is signed), the
//! query, the time and the body. The sender sends `X-Muster-Timestamp`
//! (Unix seconds) and `X-Muster-Signature: sha256=<hex>`, the hex being
//! HMAC-SHA256(secret, string to sign) with the string to sign
//!
//! ```text
//! MUSTER-HMAC-SHA256\n
//! <METHOD, upper case>\n
//! <path, as sent, percent-encoded, without the query>\n
//! <query pairs as sent, sorted bytewise, joined by &; empty if none>\n
//! <timestamp>\n
//! <hex SHA-256 of the body>
//! ```
//!
//! (no newline at the end). Requests more than 300 s from the server's
//! clock are refused (replays). docs/api.md has a test vector.
//!
//! Ack token: `base64url(incident|stakeholder|route|expiry_ms)` + "." +
//! `base64url(HMAC-SHA256(secret, payload))`.

use crate::domain::{Channel, IncidentId, StakeholderId, Ts};
use crate::engine::{CascadeKey, Route};
use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Largest clock difference accepted on a signed request.
pub const MAX_SKEW_SECS: u64 = 300;

/// The first line of every string to sign (the scheme and its version).
pub const SCHEME: &str = "MUSTER-HMAC-SHA256";

fn mac(secret: &Secret, parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut m = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        m.update(p);
    }
    m
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Muster-Timestamp or X-Muster-Signature")]
    Missing,
    #[error("the timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the request is more than 300 s old or in the future")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// What a request signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded), without the query.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    pub timestamp: u64,
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    /// The string the HMAC is computed over (see the module documentation).
    pub fn string_to_sign(&self) -> String {
        let mut pairs: Vec<&str> = self
            .query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        pairs.sort_unstable();
        format!(
            "{SCHEME}\n{}\n{}\n{}\n{}\n{}",
            self.method.to_ascii_uppercase(),
            self.path,
            pairs.join("&"),
            self.timestamp,
            hex::encode(Sha256::digest(self.body))
        )
    }
}

/// The `X-Muster-Signature` value for `request` (for clients and tests).
pub fn sign_request(secret: &Secret, request: &SignedRequest<'_>) -> String {
    let text = request.string_to_sign();
    format!(
        "sha256={}",
        hex::encode(mac(secret, &[text.as_bytes()]).finalize().into_bytes())
    )
}

/// Verifies the signature headers (`X-Muster-Timestamp`,
/// `X-Muster-Signature`) of a request for `method` and `uri` with `body`.
pub fn verify_headers(
    secret: &Secret,
    headers: &axum::http::HeaderMap,
    method: &str,
    uri: &axum::http::Uri,
    body: &[u8],
    now: Ts,
) -> Result<(), SignatureError> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = SignedRequest {
        method,
        path: uri.path(),
        query: uri.query(),
        timestamp: 0,
        body,
    };
    verify_request(
        secret,
        h("x-muster-timestamp"),
        h("x-muster-signature"),
        &signed,
        now,
    )
}

/// Verifies a signed request at `now`: `timestamp` and `signature` are the
/// headers as received; `request.timestamp` is ignored (the header's is
/// used).
pub fn verify_request(
    secret: &Secret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    request: &SignedRequest<'_>,
    now: Ts,
) -> Result<(), SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let secs: u64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let now_secs = now.0 / 1000;
    if now_secs.abs_diff(secs) > MAX_SKEW_SECS {
        return Err(SignatureError::Stale);
    }
    let hex_sig = sig.trim().strip_prefix("sha256=").unwrap_or(sig.trim());
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::Mismatch)?;
    let text = SignedRequest {
        timestamp: secs,
        ..*request
    }
    .string_to_sign();
    mac(secret, &[text.as_bytes()])
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// Mints and checks acknowledgement tokens.
#[derive(Clone, Debug)]
pub struct AckTokens {
    secret: Secret,
    /// How long a link stays valid.
    pub ttl_ms: u64,
}

impl AckTokens {
    pub fn new(secret: Secret, ttl_ms: u64) -> Self {
        AckTokens { secret, ttl_ms }
    }

    /// A token for `key`, sent on `channel` (the channel the
    /// acknowledgement is recorded on: a push notification's link counts as
    /// push, not email).
    pub fn mint(&self, key: &CascadeKey, channel: Channel, now: Ts) -> String {
        let route = match &key.route {
            Route::Member => "m".to_string(),
            Route::Escalation { about } => format!("e:{about}"),
        };
        let payload = format!(
            "{}|{}|{}|{}|{}",
            key.incident,
            key.stakeholder,
            route,
            now.plus(self.ttl_ms).0,
            channel.as_str()
        );
        let sig = mac(&self.secret, &[payload.as_bytes()])
            .finalize()
            .into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// The cascade a token acknowledges and the channel it was sent on, if
    /// it is genuine and unexpired. A token minted before tokens named their
    /// channel was an email's.
    pub fn check(&self, token: &str, now: Ts) -> Option<LinkTarget> {
        let (p, s) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(p).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        mac(&self.secret, &[&payload]).verify_slice(&sig).ok()?;
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.split('|');
        let (incident, stakeholder, route, expiry) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let channel = match parts.next() {
            None => Channel::Email,
            Some(c) => Channel::parse(c).ok()?,
        };
        if parts.next().is_some() || now.0 > expiry.parse::<u64>().ok()? {
            return None;
        }
        let route = match route {
            "m" => Route::Member,
            _ => Route::escalation(StakeholderId::parse(route.strip_prefix("e:")?).ok()?),
        };
        let key = CascadeKey {
            incident: IncidentId::parse(incident).ok()?,
            stakeholder: StakeholderId::parse(stakeholder).ok()?,
            route,
        };
        Some(LinkTarget { key, channel })
    }
}

/// What a genuine acknowledgement token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTarget {
    pub key: CascadeKey,
    /// The channel whose message carried the link.
    pub channel: Channel,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(
        path: &str,
        query: Option<&'static str>,
        body: &'static [u8],
    ) -> SignedRequest<'static> {
        let path: &'static str = Box::leak(path.to_string().into_boxed_str());
        SignedRequest {
            method: "POST",
            path,
            query,
            timestamp: 1_700_000_000,
            body,
        }
    }

    #[test]
    fn a_signature_is_bound_to_method_path_query_time_and_body() {
        let s = Secret::new("k");
        let now = Ts::from_secs(1_700_000_000);
        let req = post("/v1/incidents/A/close", Some("b=2&a=1"), b"{}");
        let sig = sign_request(&s, &req);
        let ts = Some("1700000000");
        assert_eq!(verify_request(&s, ts, Some(&sig), &req, now), Ok(()));
        // The query's order does not matter; its content does.
        let reordered = post("/v1/incidents/A/close", Some("a=1&b=2"), b"{}");
        assert_eq!(verify_request(&s, ts, Some(&sig), &reordered, now), Ok(()));
        for other in [
            SignedRequest {
                method: "GET",
                ..req
            },
            post("/v1/incidents/B/close", Some("b=2&a=1"), b"{}"),
            post("/v1/incidents/A/close", Some("a=1&b=3"), b"{}"),
            post("/v1/incidents/A/close", None, b"{}"),
            post("/v1/incidents/A/close", Some("b=2&a=1"), b"{ }"),
        ] {
            assert_eq!(
                verify_request(&s, ts, Some(&sig), &other, now),
                Err(SignatureError::Mismatch),
                "{other:?}"
            );
        }
        // A webhook signed for one provider is refused on another's path.
        let a = post("/v1/webhooks/provider-a", None, b"{}");
        let sig_a = sign_request(&s, &a);
        let b = post("/v1/webhooks/console", None, b"{}");
        assert_eq!(
            verify_request(&s, ts, Some(&sig_a), &b, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_request(&Secret::new("other"), ts, Some(&sig), &req, now),
            Err(SignatureError::Mismatch)
        );
        let old = SignedRequest {
            timestamp: 1_699_999_699,
            ..req
        };
        assert_eq!(
            verify_request(
                &s,
                Some("1699999699"),
                Some(&sign_request(&s, &old)),
                &req,
                now
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_request(&s, None, Some(&sig), &req, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_request(&s, Some("soon"), Some(&sig), &req, now),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn the_documented_test_vector_holds() {
        // docs/api.md, "Signed requests".
        let req = SignedRequest {
            method: "POST",
            path: "/v1/incidents",
            query: None,
            timestamp: 1_716_215_520,
            body: br#"{"trigger":{"incidentId":"INC-2024-0892","severity":"P1","stakeholderGroupId":"ops-leadership","messageTemplate":"System outage detected."}}"#,
        };
        // Both values computed independently (Python's hashlib and hmac).
        assert_eq!(
            req.string_to_sign(),
            "MUSTER-HMAC-SHA256\nPOST\n/v1/incidents\n\n1716215520\n7d7b7469be24c6036206b62b74fc7a5af7ed4601ea205a0e52d88210c32ddfbf"
        );
        assert_eq!(
            sign_request(&Secret::new("muster-test-secret"), &req),
            "sha256=a2dd125313a160270a6b0eaf853bde157f60262ad7e39562f2a623de63d5e523"
        );
    }

    #[test]
    fn ack_tokens_round_trip_and_expire() {
        let t = AckTokens::new(Secret::new("k"), 60_000);
        let key = CascadeKey {
            incident: IncidentId::parse("INC-1").unwrap_or_else(|e| panic!("{e}")),
            stakeholder: StakeholderId::parse("a").unwrap_or_else(|e| panic!("{e}")),
            route: Route::Member,
        };
        let now = Ts::from_secs(100);
        let token = t.mint(&key, Channel::Push, now);
        let target = LinkTarget {
            key: key.clone(),
            channel: Channel::Push,
        };
        assert_eq!(t.check(&token, now.plus(59_000)), Some(target));
        assert_eq!(t.check(&token, now.plus(61_000)), None, "expired");
        let mut forged = token.clone();
        forged.insert(3, 'x');
        assert_eq!(t.check(&forged, now), None);
        assert_eq!(
            AckTokens::new(Secret::new("other"), 60_000).check(&token, now),
            None
        );
    }
}

/// Ack links under a base URL (`{base}/v1/ack/{token}`).
#[derive(Clone, Debug)]
pub struct SignedAckLinks {
    pub tokens: AckTokens,
    pub base_url: String,
}

impl crate::ports::AckLinks for SignedAckLinks {
    fn link(&self, key: &CascadeKey, channel: Channel, now: Ts) -> String {
        format!(
            "{}/v1/ack/{}",
            self.base_url.trim_end_matches('/'),
            self.tokens.mint(key, channel, now)
        )
    }
}
