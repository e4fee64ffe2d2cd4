use std::borrow::Cow;

/// One input value before cleaning, as it arrives from a CSV cell or a JSON field.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue<'a> {
    Missing,
    Number(f64),
    Text(Cow<'a, str>),
}

impl RawValue<'_> {
    pub fn text(s: &str) -> RawValue<'_> {
        RawValue::Text(Cow::Borrowed(s))
    }
}

/// Parses a plain number such as `69`, `69.0` or ` 2305.40 `. Returns `None` for anything
/// else, including NaN and infinities, which no column accepts.
pub fn parse_number(s: &str) -> Option<f64> {
    let v: f64 = s.trim().parse().ok()?;
    v.is_finite().then_some(v)
}

/// Parses an amount of money as the original pipeline wrote it: `"£1,623.85 "`,
/// `"$2,305.40"`, `"2305.4"`. Currency symbols, thousands separators and surrounding
/// spaces are dropped; a leading minus survives so range checks can reject it.
pub fn parse_currency(s: &str) -> Option<f64> {
    let cleaned: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, '£' | '$' | '€' | ',' | ' ' | '\u{a0}'))
        .collect();
    if cleaned.is_empty() {
        return None;
    }
    parse_number(&cleaned)
}

/// Categories that look numeric are written the way an integer would be, so that the
/// CSV's `1.0` and a JSON client's `1` land in the same one-hot column.
pub(crate) fn normalize_category(s: &str) -> Cow<'_, str> {
    let t = s.trim();
    match parse_number(t) {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => Cow::Owned(format!("{}", v as i64)),
        _ => Cow::Borrowed(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_forms() {
        assert_eq!(parse_currency("£1,623.85 "), Some(1623.85));
        assert_eq!(parse_currency("£131.50 "), Some(131.5));
        assert_eq!(parse_currency("2305.40"), Some(2305.4));
        assert_eq!(parse_currency("-5"), Some(-5.0));
        assert_eq!(parse_currency("£"), None);
        assert_eq!(parse_currency("abc"), None);
        assert_eq!(parse_currency("NaN"), None);
    }

    #[test]
    fn categories_normalise_numbers() {
        assert_eq!(normalize_category("1.0"), "1");
        assert_eq!(normalize_category(" Male "), "Male");
        assert_eq!(normalize_category("2.5"), "2.5");
    }
}
