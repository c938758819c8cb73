//! Signatures: HMAC-SHA256 request signing for triggers and webhooks, and
//! signed, expiring acknowledgement tokens for one-click links.
//!
//! Request signing: the sender sends `X-Muster-Timestamp` (Unix seconds) and
//! `X-Muster-Signature: sha256=<hex>` where the hex is
//! HMAC-SHA256(secret, timestamp + "." + body). Requests more than 300 s
//! from the server's clock are refused (replays).
//!
//! Ack token: `base64url(incident|stakeholder|route|expiry_ms)` + "." +
//! `base64url(HMAC-SHA256(secret, payload))`.

use super::Secret;
use crate::domain::{IncidentId, StakeholderId, Ts};
use crate::engine::{CascadeKey, Route};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Largest clock difference accepted on a signed request.
pub const MAX_SKEW_SECS: u64 = 300;

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

/// The signature header value for `body` at `timestamp` (for clients and tests).
pub fn sign_request(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!(
        "sha256={}",
        hex::encode(
            mac(secret, &[ts.as_bytes(), b".", body])
                .finalize()
                .into_bytes()
        )
    )
}

/// Verifies a signed request at `now`.
pub fn verify_request(
    secret: &Secret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
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
    mac(secret, &[ts.trim().as_bytes(), b".", body])
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

    pub fn mint(&self, key: &CascadeKey, now: Ts) -> String {
        let route = match &key.route {
            Route::Member => "m".to_string(),
            Route::Escalation { about } => format!("e:{about}"),
        };
        let payload = format!(
            "{}|{}|{}|{}",
            key.incident,
            key.stakeholder,
            route,
            now.plus(self.ttl_ms).0
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

    /// The cascade a token acknowledges, if it is genuine and unexpired.
    pub fn check(&self, token: &str, now: Ts) -> Option<CascadeKey> {
        let (p, s) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(p).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        mac(&self.secret, &[&payload]).verify_slice(&sig).ok()?;
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.split('|');
        let (incident, stakeholder, route, expiry) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || now.0 > expiry.parse::<u64>().ok()? {
            return None;
        }
        let route = match route {
            "m" => Route::Member,
            _ => Route::escalation(StakeholderId::parse(route.strip_prefix("e:")?).ok()?),
        };
        Some(CascadeKey {
            incident: IncidentId::parse(incident).ok()?,
            stakeholder: StakeholderId::parse(stakeholder).ok()?,
            route,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_verify_and_stale_or_altered_ones_do_not() {
        let s = Secret::new("k");
        let now = Ts::from_secs(1_700_000_000);
        let sig = sign_request(&s, 1_700_000_000, b"{}");
        assert_eq!(
            verify_request(&s, Some("1700000000"), Some(&sig), b"{}", now),
            Ok(())
        );
        assert_eq!(
            verify_request(&s, Some("1700000000"), Some(&sig), b"{ }", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_request(
                &Secret::new("other"),
                Some("1700000000"),
                Some(&sig),
                b"{}",
                now
            ),
            Err(SignatureError::Mismatch)
        );
        let old = sign_request(&s, 1_699_999_699, b"{}");
        assert_eq!(
            verify_request(&s, Some("1699999699"), Some(&old), b"{}", now),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_request(&s, None, Some(&sig), b"{}", now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_request(&s, Some("soon"), Some(&sig), b"{}", now),
            Err(SignatureError::BadTimestamp)
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
        let token = t.mint(&key, now);
        assert_eq!(t.check(&token, now.plus(59_000)), Some(key.clone()));
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
    fn link(&self, key: &CascadeKey, now: Ts) -> String {
        format!(
            "{}/v1/ack/{}",
            self.base_url.trim_end_matches('/'),
            self.tokens.mint(key, now)
        )
    }
}
