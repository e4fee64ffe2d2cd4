//! The allocation-light path for `POST /predict`: parse the body into borrowed values
//! in the model's field order and predict. Anything unusual — a missing field, a
//! nested value, a refused field, malformed JSON — returns `None` and the caller takes
//! the general path, which produces the exact same answers and the detailed errors.

use std::borrow::Cow;
use std::fmt;

use predict_buy_data::RawValue;
use predict_buy_model::{Model, Prediction};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// One top-level value of the request object.
enum Scalar<'a> {
    Null,
    Number(f64),
    Text(Cow<'a, str>),
    /// An array or object: only the general path explains what is wrong with it.
    Nested,
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Number(f64::from(u8::from(b))))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Number(n as f64))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Number(n as f64))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Number(n))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Scalar::Text(Cow::Owned(s)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Nested)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Nested)
            }
        }
        d.deserialize_any(V)
    }
}

/// The request object as (key, value) pairs in body order.
struct Record<'a>(Vec<(Cow<'a, str>, Scalar<'a>)>);

impl<'de> de::Deserialize<'de> for Record<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Record<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    out.push((key, map.next_value::<Scalar<'de>>()?));
                }
                Ok(Record(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Predicts from the raw body, or `None` when the general path must decide. `seen`
/// gets the parsed values of a successful prediction (for the drift counters).
pub(crate) fn predict(
    model: &Model,
    fields: &[String],
    body: &[u8],
    seen: impl FnOnce(&[RawValue<'_>], &Prediction),
) -> Option<Prediction> {
    let record: Record<'_> = serde_json::from_slice(body).ok()?;
    let mut values = Vec::with_capacity(fields.len());
    for name in fields {
        // Like a JSON map, a repeated key counts once, with its last value.
        let (_, v) = record.0.iter().rev().find(|(k, _)| k == name)?;
        values.push(match v {
            Scalar::Null => RawValue::Missing,
            Scalar::Number(n) => RawValue::Number(*n),
            Scalar::Text(s) => RawValue::Text(Cow::Borrowed(s.as_ref())),
            Scalar::Nested => return None,
        });
    }
    let p = model.predict_values(&values).ok()?;
    seen(&values, &p);
    Some(p)
}
