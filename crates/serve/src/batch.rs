//! Parses a `/predict/batch` body while counting its instances, so that a batch over
//! [`crate::Limits::batch_instances`] is refused at the first instance too many instead
//! of after the whole body has been turned into JSON values (a million small records
//! took about 1 GB that way). What is kept is bounded by the limits: at most that many
//! records, each holding only its top-level scalars; nested values are skipped and
//! remembered by kind, which is all the error message needs.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{ApiError, problem};

/// One element of the `instances` array.
pub(crate) enum Instance {
    Record(Map<String, Value>),
    /// Not an object: only its kind (`a number`, `an array`, …) is kept.
    Other(&'static str),
}

/// What the body said, or why it was refused.
pub(crate) fn parse(bytes: &[u8], limit: usize) -> Result<Vec<Instance>, ApiError> {
    // serde's errors are strings; the refusals that are not malformed JSON travel here.
    let refusal = Cell::new(None);
    let seed = Body {
        limit,
        refusal: &refusal,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, refusal.into_inner()) {
        (_, Some(refused)) => Err(refused),
        (Ok(Some(instances)), None) => Ok(instances),
        (Ok(None), None) => Err(ApiError::invalid("instances", "field required")),
        (Err(e), None) => Err(ApiError::MalformedJson(e.to_string())),
    }
}

struct Body<'r> {
    limit: usize,
    refusal: &'r Cell<Option<ApiError>>,
}

impl Body<'_> {
    fn refuse<E: de::Error>(&self, error: ApiError) -> E {
        let message = error.to_string();
        self.refusal.set(Some(error));
        E::custom(message)
    }
}

impl<'de> DeserializeSeed<'de> for Body<'_> {
    /// `None` when the object has no `instances` key.
    type Value = Option<Vec<Instance>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = Option<Vec<Instance>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{\"instances\": [...]} or an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Instances {
            limit: self.limit,
            refusal: self.refusal,
        }
        .visit_seq(seq)
        .map(Some)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut instances = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "instances" {
                // A repeated key replaces the earlier value, as a JSON map would.
                instances = Some(map.next_value_seed(Instances {
                    limit: self.limit,
                    refusal: self.refusal,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(instances)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.not_a_batch("null"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.not_a_batch("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.not_a_batch("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.not_a_batch("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.not_a_batch("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.not_a_batch("a string"))
    }
}

impl Body<'_> {
    fn not_a_batch<E: de::Error>(&self, found: &str) -> E {
        self.refuse(ApiError::invalid(
            "body",
            format!("expected {{\"instances\": [...]}} or an array, found {found}"),
        ))
    }
}

/// The `instances` array, counted as it is read.
struct Instances<'r> {
    limit: usize,
    refusal: &'r Cell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for Instances<'_> {
    type Value = Vec<Instance>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Instances<'_> {
    type Value = Vec<Instance>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The hint is the client's claim, so it only sizes the first allocation.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.limit).min(1024));
        while out.len() < self.limit {
            match seq.next_element_seed(InstanceSeed)? {
                Some(instance) => out.push(instance),
                None => return Ok(out),
            }
        }
        // At the limit: one more element, however small, is one too many. It is skipped,
        // not built.
        if seq.next_element::<IgnoredAny>()?.is_some() {
            let limit = self.limit;
            return Err(Body {
                limit,
                refusal: self.refusal,
            }
            .refuse(ApiError::BatchTooLarge { limit }));
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(self.not_an_array("an object"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.not_an_array("null"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.not_an_array("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.not_an_array("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.not_an_array("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.not_an_array("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.not_an_array("a string"))
    }
}

impl Instances<'_> {
    fn not_an_array<E: de::Error>(&self, found: &str) -> E {
        let error = ApiError::Invalid(vec![problem(
            "instances",
            format!("expected an array, found {found}"),
        )]);
        let message = error.to_string();
        self.refusal.set(Some(error));
        E::custom(message)
    }
}

/// One instance: an object of scalars, or the kind of whatever else it was.
struct InstanceSeed;

impl<'de> DeserializeSeed<'de> for InstanceSeed {
    type Value = Instance;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstanceSeed {
    type Value = Instance;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut record = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(FieldSeed)?;
            record.insert(key, value);
        }
        Ok(Instance::Record(record))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Instance::Other("an array"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Instance::Other("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Instance::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Instance::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Instance::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Instance::Other("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Instance::Other("a string"))
    }
}

/// A field of a record: scalars as they are; an array or object as an empty one of
/// its kind, since no field takes one and the refusal only names the kind.
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Object(Map::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(r: Result<Vec<Instance>, ApiError>) -> Vec<String> {
        r.unwrap()
            .into_iter()
            .map(|i| match i {
                Instance::Record(m) => format!("record:{}", m.len()),
                Instance::Other(k) => k.to_string(),
            })
            .collect()
    }

    #[test]
    fn both_shapes_and_non_records() {
        assert_eq!(
            kinds(parse(
                br#"{"x":[1,2],"instances":[{"a":1,"b":[1,{"c":2}]},3,[4]]}"#,
                10
            )),
            ["record:2", "a number", "an array"]
        );
        assert_eq!(kinds(parse(br#"[{"a":null}]"#, 1)), ["record:1"]);
        assert_eq!(kinds(parse(b"[]", 1)), Vec::<String>::new());
    }

    #[test]
    fn nested_field_values_keep_their_kind_only() {
        let Instance::Record(m) = parse(br#"[{"a":[1,2,3],"b":{"c":1}}]"#, 1)
            .unwrap()
            .remove(0)
        else {
            panic!("a record");
        };
        assert_eq!(m["a"], Value::Array(vec![]));
        assert_eq!(m["b"], Value::Object(Map::new()));
    }

    #[test]
    fn one_instance_over_the_limit_is_refused_before_the_rest_is_read() {
        // The element after the limit is malformed: the refusal comes first, proving
        // parsing stopped there.
        let e = parse(b"[{},{},{},!!!", 2).err().unwrap();
        assert!(matches!(e, ApiError::BatchTooLarge { limit: 2 }), "{e:?}");
        assert!(parse(b"[{},{}]", 2).is_ok());
    }

    #[test]
    fn refusals_are_named() {
        let missing = parse(br#"{"rows":[]}"#, 2).err().unwrap();
        assert!(
            matches!(&missing, ApiError::Invalid(p) if p[0].field == "instances" && p[0].kind == "missing")
        );
        let not_array = parse(br#"{"instances":{"a":1}}"#, 2).err().unwrap();
        assert!(
            matches!(&not_array, ApiError::Invalid(p) if p[0].reason == "expected an array, found an object")
        );
        let scalar = parse(b"42", 2).err().unwrap();
        assert!(matches!(&scalar, ApiError::Invalid(p) if p[0].field == "body"));
        assert!(matches!(parse(b"[{}", 2), Err(ApiError::MalformedJson(_))));
        assert!(matches!(
            parse(b"[{}] x", 2),
            Err(ApiError::MalformedJson(_))
        ));
    }
}
