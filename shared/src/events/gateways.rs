//! What checks the alternative gateways' webhooks (Twilio's auth token,
//! SendGrid's verification key), as the gateways' configuration
//! ([`crate::adapters::gateways`]) makes it and the API's routes
//! ([`crate::api::gateways`]) use it.

use crate::secret::Secret;

/// What checks the gateways' webhooks.
#[derive(Clone, Default)]
pub struct Hooks {
    /// The public base URL the gateways were given (`callback_url`).
    pub callback_url: String,
    /// Twilio's auth token.
    pub twilio: Option<Secret>,
    /// SendGrid's event webhook verification key.
    pub sendgrid: Option<p256::ecdsa::VerifyingKey>,
}

impl Hooks {
    /// The gateways served, for logs at start-up.
    pub fn served(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.twilio.is_some() {
            out.push("twilio");
        }
        if self.sendgrid.is_some() {
            out.push("sendgrid");
        }
        out
    }
}
