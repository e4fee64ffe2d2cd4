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

    /// `1234567.5` as the raw data writes it: `1,234,567.50`.
    fn with_separators(v: f64) -> String {
        let text = format!("{v:.2}");
        let (whole, cents) = text.split_once('.').expect("two decimals");
        let digits = whole.as_bytes();
        let mut out = String::new();
        for (i, d) in digits.iter().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(char::from(*d));
        }
        format!("{out}.{cents}")
    }

    proptest::proptest! {
        /// Every way the raw data and API clients write an amount parses to the amount
        /// written plainly.
        #[test]
        fn currency_strings_parse_to_their_amount(
            pence in 0u64..10_000_000_000,
            symbol in proptest::sample::select(vec!["", "£", "$", "€"]),
            before in "[ ]{0,2}",
            after in proptest::sample::select(vec!["", " ", "  ", "\u{a0}"]),
        ) {
            let v = pence as f64 / 100.0;
            let plain = format!("{v:.2}");
            let written = format!("{before}{symbol}{}{after}", with_separators(v));
            proptest::prop_assert_eq!(parse_currency(&written), parse_number(&plain));
            proptest::prop_assert_eq!(parse_currency(&plain), Some(plain.parse::<f64>().unwrap()));
        }

        /// Nothing makes parsing panic or return NaN or an infinity; and whatever
        /// parses as a plain number parses to the same amount as currency.
        #[test]
        fn parsing_any_text_is_total_and_finite(s in "\\PC{0,24}") {
            if let Some(v) = parse_currency(&s) {
                proptest::prop_assert!(v.is_finite());
            }
            if let Some(v) = parse_number(&s) {
                proptest::prop_assert!(v.is_finite());
                let plain = !s.contains(['£', '$', '€', ',', ' ', '\u{a0}']);
                if plain {
                    proptest::prop_assert_eq!(parse_currency(&s), Some(v));
                }
            }
        }

        /// Numbers survive being written out and read back, with the spaces and the
        /// `69.0` style the raw data has.
        #[test]
        fn numbers_round_trip(v in proptest::num::f64::NORMAL | proptest::num::f64::ZERO, pad in "[ \t]{0,2}") {
            proptest::prop_assert_eq!(parse_number(&format!("{pad}{v}{pad}")), Some(v));
            proptest::prop_assert_eq!(parse_number(&format!("{v:?}")), Some(v));
            let whole = v.trunc();
            if whole.abs() < 1e15 {
                proptest::prop_assert_eq!(parse_number(&format!("{whole:.1}")), Some(whole));
            }
        }

        /// Text that is not a number is refused, not read as zero.
        #[test]
        fn words_are_not_numbers(s in "[a-zA-Z_]{1,12}") {
            let lower = s.to_ascii_lowercase();
            let special = ["inf", "infinity", "nan"].contains(&lower.as_str());
            proptest::prop_assume!(!special && lower != "e");
            proptest::prop_assert_eq!(parse_number(&s), None);
            proptest::prop_assert_eq!(parse_currency(&s), None);
        }
    }

    #[test]
    fn categories_normalise_numbers() {
        assert_eq!(normalize_category("1.0"), "1");
        assert_eq!(normalize_category(" Male "), "Male");
        assert_eq!(normalize_category("2.5"), "2.5");
    }
}
