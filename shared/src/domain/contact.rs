//! Contact addresses. A phone number is parsed and validated by libphonenumber's
//! metadata (the `phonenumber` crate) and held in E.164; an email address by
//! the `email_address` crate. Neither implements `Display`, and `Debug` masks
//! them: a contact detail reaches a log only by an explicit `expose()`.

use super::{Channel, InvalidValue};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::sync::Arc;

/// An E.164 phone number (`+14155550101`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(Arc<str>);

impl PhoneNumber {
    /// Parses an international number, with or without separators, and
    /// normalises it to E.164. The value is never echoed in the error.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let trimmed = s.trim();
        if !trimmed.starts_with('+') && !trimmed.starts_with("00") {
            return Err(InvalidValue::new(
                "",
                "phone number must be in international form, starting with + and the country code",
            ));
        }
        let candidate = trimmed
            .strip_prefix("00")
            .map(|r| format!("+{r}"))
            .unwrap_or_else(|| trimmed.to_string());
        let n = phonenumber::parse(None, &candidate)
            .map_err(|e| InvalidValue::new("", format!("phone number is not a number ({e})")))?;
        if !phonenumber::is_valid(&n) {
            return Err(InvalidValue::new(
                "",
                "phone number is not a valid number for its country",
            ));
        }
        Ok(Self(Arc::from(
            n.format().mode(phonenumber::Mode::E164).to_string(),
        )))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// `+44•••••••123`: country code and last three digits.
    pub fn masked(&self) -> String {
        let s = &*self.0;
        let tail = s.len().saturating_sub(3);
        let head = 3.min(tail);
        format!("{}{}{}", &s[..head], "•".repeat(tail - head), &s[tail..])
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A syntactically valid email address (RFC 5322 addr-spec, via `email_address`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(Arc<str>);

impl EmailAddress {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let t = s.trim();
        if t.len() > 254 {
            return Err(InvalidValue::new(
                "",
                "email address is longer than 254 characters",
            ));
        }
        let parsed = email_address::EmailAddress::parse_with_options(
            t,
            email_address::Options::default().without_display_text(),
        )
        .map_err(|e| InvalidValue::new("", format!("email address is not valid ({e})")))?;
        if !parsed.domain().contains('.') {
            return Err(InvalidValue::new("", "email address domain has no dot"));
        }
        Ok(Self(Arc::from(parsed.as_str())))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// `a•••@example.com`
    pub fn masked(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}•••@{domain}")
            }
            None => "•••".into(),
        }
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.masked())
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A push endpoint: a device token or platform-endpoint ARN (opaque, 1 to 2048
/// printable characters).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PushEndpoint(Arc<str>);

impl PushEndpoint {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let t = s.trim();
        if t.is_empty() || t.len() > 2048 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidValue::new(
                "",
                "push endpoint must be 1 to 2048 printable ASCII characters",
            ));
        }
        Ok(Self(Arc::from(t)))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn masked(&self) -> String {
        let tail: String = self
            .0
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("•••{tail}")
    }
}

impl fmt::Debug for PushEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushEndpoint({})", self.masked())
    }
}

impl<'de> Deserialize<'de> for PushEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The address one channel reaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Address {
    Phone(PhoneNumber),
    Email(EmailAddress),
    Push(PushEndpoint),
}

impl Address {
    pub fn masked(&self) -> String {
        match self {
            Address::Phone(p) => p.masked(),
            Address::Email(e) => e.masked(),
            Address::Push(p) => p.masked(),
        }
    }
    pub fn expose(&self) -> &str {
        match self {
            Address::Phone(p) => p.expose(),
            Address::Email(e) => e.expose(),
            Address::Push(p) => p.expose(),
        }
    }
}

/// A stakeholder's contact methods: one phone for voice and SMS (a separate
/// SMS number where given), an email address and a push endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactMethods {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushEndpoint>,
    /// SMS opted out (an inbound STOP); cascades skip the SMS channel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sms_opted_out: bool,
}

impl ContactMethods {
    /// The address for a channel, if the stakeholder has one and it is usable.
    pub fn address(&self, channel: Channel) -> Option<Address> {
        match channel {
            Channel::Voice => self.phone.clone().map(Address::Phone),
            Channel::Sms if self.sms_opted_out => None,
            Channel::Sms => self
                .sms
                .clone()
                .or_else(|| self.phone.clone())
                .map(Address::Phone),
            Channel::Email => self.email.clone().map(Address::Email),
            Channel::Push => self.push.clone().map(Address::Push),
        }
    }
    pub fn has(&self, channel: Channel) -> bool {
        match channel {
            Channel::Voice => self.phone.is_some(),
            Channel::Sms => !self.sms_opted_out && (self.sms.is_some() || self.phone.is_some()),
            Channel::Email => self.email.is_some(),
            Channel::Push => self.push.is_some(),
        }
    }
}

/// What the live lookup said, recorded in the cascade's first audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactCheck {
    /// The source confirmed the directory's contacts.
    Validated,
    /// The source had newer contacts; they are used.
    Changed,
    /// The source does not know the person: directory copy used, needs review.
    Unknown,
    /// The source failed or timed out: directory copy used, needs review.
    Unavailable,
}

impl ContactCheck {
    pub fn needs_review(self) -> bool {
        matches!(self, ContactCheck::Unknown | ContactCheck::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_normalise_to_e164() {
        let p = PhoneNumber::parse("+44 20 7946 0958").ok();
        assert_eq!(p.as_ref().map(|p| p.expose()), Some("+442079460958"));
        let p = PhoneNumber::parse("0061 491 570 156").ok();
        assert_eq!(p.as_ref().map(|p| p.expose()), Some("+61491570156"));
    }

    #[test]
    fn invalid_phone_numbers_are_refused_without_echoing_them() {
        for bad in ["4155550101", "+1 12", "+999 123456", "not a number"] {
            let err = PhoneNumber::parse(bad).err().map(|e| e.message);
            assert!(err.is_some(), "{bad} accepted");
            assert!(!err.unwrap_or_default().contains(bad));
        }
    }

    #[test]
    fn debug_masks_contact_details() {
        let p = PhoneNumber::parse("+442079460958").ok();
        let shown = format!("{p:?}");
        assert!(!shown.contains("2079460958"), "{shown}");
        let e = EmailAddress::parse("alice@example.com").ok();
        let shown = format!("{e:?}");
        assert!(!shown.contains("alice@"), "{shown}");
    }

    #[test]
    fn emails_are_validated() {
        assert!(EmailAddress::parse("alice@example.com").is_ok());
        assert!(EmailAddress::parse("alice").is_err());
        assert!(EmailAddress::parse("alice@localhost").is_err());
        assert!(EmailAddress::parse("Alice <alice@example.com>").is_err());
    }

    #[test]
    fn opted_out_sms_is_not_an_address() {
        let mut c = ContactMethods {
            phone: PhoneNumber::parse("+442079460958").ok(),
            ..Default::default()
        };
        assert!(c.has(Channel::Sms) && c.has(Channel::Voice));
        c.sms_opted_out = true;
        assert!(!c.has(Channel::Sms) && c.address(Channel::Sms).is_none() && c.has(Channel::Voice));
    }
}
