//! Locales: a person's language from the directory picks the incident's
//! message template and the voice their call is read in. Tags are kept in
//! one form (`fr`, `fr-CA`: language in lower case, region in upper case).

use super::InvalidValue;

/// `tag` in the one form kept, or what is wrong with it: a language of 2
/// or 3 letters, optionally a region (2 letters or 3 digits) after `-`
/// or `_` ("fr", "fr-CA", "pt_BR", "es-419").
pub fn normalise(tag: &str) -> Result<String, InvalidValue> {
    let bad = || {
        InvalidValue::new(
            "",
            format!(
                "{tag:?} is not a locale: expected a language, optionally with a region (fr, fr-CA)"
            ),
        )
    };
    let mut parts = tag.trim().split(['-', '_']);
    let lang = parts.next().unwrap_or_default();
    if !(2..=3).contains(&lang.len()) || !lang.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(bad());
    }
    let mut out = lang.to_ascii_lowercase();
    if let Some(region) = parts.next() {
        let letters = region.len() == 2 && region.chars().all(|c| c.is_ascii_alphabetic());
        let digits = region.len() == 3 && region.chars().all(|c| c.is_ascii_digit());
        if !letters && !digits {
            return Err(bad());
        }
        out.push('-');
        out.push_str(&region.to_ascii_uppercase());
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// The language of a kept tag ("fr" of "fr-CA").
pub fn language(tag: &str) -> &str {
    tag.split('-').next().unwrap_or(tag)
}

/// The entry of `choices` (keyed by kept tags) for `locale`: its own tag,
/// else its language's; `None` when neither is there.
pub fn pick<'a, V>(
    choices: &'a std::collections::BTreeMap<String, V>,
    locale: Option<&str>,
) -> Option<(&'a str, &'a V)> {
    let tag = normalise(locale?).ok()?;
    choices
        .get_key_value(tag.as_str())
        .or_else(|| choices.get_key_value(language(&tag)))
        .map(|(k, v)| (k.as_str(), v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn tags_are_kept_in_one_form_and_bad_ones_refused() {
        assert_eq!(normalise("FR_ca").ok().as_deref(), Some("fr-CA"));
        assert_eq!(normalise("es-419").ok().as_deref(), Some("es-419"));
        assert_eq!(normalise("de").ok().as_deref(), Some("de"));
        for bad in ["", "f", "french", "fr-CAN", "fr-CA-x", "1r"] {
            assert!(normalise(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_locale_picks_its_own_tag_then_its_language() {
        let m: BTreeMap<String, u8> = [("fr".to_string(), 1), ("fr-CA".to_string(), 2)].into();
        assert_eq!(pick(&m, Some("fr_ca")).map(|p| *p.1), Some(2));
        assert_eq!(pick(&m, Some("fr-BE")).map(|p| *p.1), Some(1));
        assert_eq!(pick(&m, Some("de")), None);
        assert_eq!(pick(&m, None), None);
    }
}
