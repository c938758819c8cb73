//! Quiet hours: a person's time zone (IANA, from the directory) and a
//! window of local time ("22:00-07:00", possibly across midnight) in which
//! a message of a severity the policy does not let through waits for the
//! window to end.

use super::{InvalidValue, Ts};
use serde::{Deserialize, Serialize};

/// A window of local wall-clock time, `start` included, `end` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuietHours {
    /// Minutes after local midnight.
    pub start: u16,
    pub end: u16,
}

fn minutes(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.trim().len() == 5).then_some(h * 60 + m)
}

impl QuietHours {
    pub fn parse(s: &str) -> Result<QuietHours, InvalidValue> {
        let bad = || {
            InvalidValue::new(
                "",
                format!(
                    "{s:?} is not a window: expected HH:MM-HH:MM in local time, e.g. 22:00-07:00"
                ),
            )
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(InvalidValue::new(
                "",
                "an empty window: start and end are the same",
            ));
        }
        Ok(QuietHours { start, end })
    }

    fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// When the window that holds `now` in `zone` ends; `None` when `now`
    /// is outside it (or the zone is unknown).
    pub fn ends_after(&self, zone: &str, now: Ts) -> Option<Ts> {
        let tz = jiff::tz::TimeZone::get(zone).ok()?;
        let at = jiff::Timestamp::from_millisecond(i64::try_from(now.0).ok()?).ok()?;
        let local = at.to_zoned(tz.clone());
        let minute = u16::try_from(local.hour()).ok()? * 60 + u16::try_from(local.minute()).ok()?;
        if !self.contains(minute) {
            return None;
        }
        let end = jiff::civil::Time::new(
            i8::try_from(self.end / 60).ok()?,
            i8::try_from(self.end % 60).ok()?,
            0,
            0,
        )
        .ok()?;
        let mut date = local.date();
        if minute >= self.end {
            date = date.tomorrow().ok()?;
        }
        // A local time a clock change skips is taken as the moment after.
        let ends = date.to_datetime(end).to_zoned(tz).ok()?.timestamp();
        u64::try_from(ends.as_millisecond()).ok().map(Ts)
    }
}

/// `zone` if it is a time zone the bundled database knows ("Europe/London").
pub fn time_zone(zone: &str) -> Result<String, InvalidValue> {
    let z = zone.trim();
    jiff::tz::TimeZone::get(z)
        .map(|_| z.to_string())
        .map_err(|_| {
            InvalidValue::new(
                "",
                format!("{zone:?} is not a time zone: expected an IANA name, e.g. Europe/London"),
            )
        })
}

impl TryFrom<String> for QuietHours {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<QuietHours> for String {
    fn from(q: QuietHours) -> String {
        format!(
            "{:02}:{:02}-{:02}:{:02}",
            q.start / 60,
            q.start % 60,
            q.end / 60,
            q.end % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Ts {
        Ts::parse_rfc3339(rfc3339).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_window_across_midnight_ends_the_next_morning_local_time() {
        let q = QuietHours::parse("22:00-07:00").unwrap_or_else(|e| panic!("{e}"));
        // 23:30 in London in winter (UTC+0): ends 07:00 next day.
        assert_eq!(
            q.ends_after("Europe/London", at("2026-12-06T23:30:00Z")),
            Some(at("2026-12-07T07:00:00Z"))
        );
        // 02:00 local in New York (UTC-5): ends 07:00 the same day.
        assert_eq!(
            q.ends_after("America/New_York", at("2026-12-07T07:00:00Z")),
            Some(at("2026-12-07T12:00:00Z"))
        );
        // 12:00 local: outside.
        assert_eq!(
            q.ends_after("Europe/London", at("2026-12-06T12:00:00Z")),
            None
        );
        // In summer, London is UTC+1.
        assert_eq!(
            q.ends_after("Europe/London", at("2026-07-01T05:00:00Z")),
            Some(at("2026-07-01T06:00:00Z"))
        );
    }

    #[test]
    fn bad_windows_and_zones_are_refused() {
        for bad in [
            "22:00",
            "22-07",
            "25:00-07:00",
            "22:00-22:00",
            "7:00-9:00",
            "",
        ] {
            assert!(QuietHours::parse(bad).is_err(), "{bad}");
        }
        assert!(time_zone("Europe/London").is_ok());
        assert!(time_zone("Mars/Olympus").is_err());
        let q = QuietHours::parse("09:30-17:05").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(String::from(q), "09:30-17:05");
    }
}
