//! Deserialisers that read YAML scalars as Go's yaml.v3 does for apko's string and `uint32`
//! fields: a number fills a string field with the text as written (`run-as: 10000`), and a
//! mode reads `0o755` and `0755` as octal.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A string field that also accepts numbers and booleans, keeping their text.
pub(crate) struct ScalarString(pub(crate) String);

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Asking for a string lets the YAML reader hand over the scalar's source text, so
        // `10000` stays `10000` and `0755` keeps its leading zero.
        d.deserialize_string(ScalarVisitor).map(ScalarString)
    }
}

pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Option::<ScalarString>::deserialize(d).map(|o| o.map(|s| s.0).unwrap_or_default())
}

pub(crate) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<ScalarString>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.0)
        .collect())
}

pub(crate) fn string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    Ok(
        Option::<std::collections::BTreeMap<String, ScalarString>>::deserialize(d)?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    )
}

/// A list key whose value is empty (`packages:` followed only by comments) is an empty list.
pub(crate) fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Parse a file mode as yaml.v3 reads a `uint32`: `0o`/`0O` or a leading `0` is octal,
/// `0x` hex, anything else decimal.
pub fn parse_mode(s: &str) -> Option<u32> {
    let s = s.trim().replace('_', "");
    if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        return u32::from_str_radix(o, 8).ok();
    }
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).ok();
    }
    if s.len() > 1 && s.starts_with('0') {
        return u32::from_str_radix(&s[1..], 8).ok();
    }
    s.parse().ok()
}

pub(crate) fn opt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<ScalarString>::deserialize(d)? {
        None => Ok(None),
        Some(ScalarString(s)) => parse_mode(&s)
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("`{s}` is not a file mode (e.g. 0o755)"))),
    }
}

/// A `uint32` field that also reads quoted numbers, as some configs write `uid: "65532"`.
pub(crate) fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<ScalarString>::deserialize(d)? {
        None => Ok(None),
        Some(ScalarString(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("`{s}` is not an unsigned 32-bit number"))),
    }
}

pub(crate) fn u32_field<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    opt_u32(d).map(Option::unwrap_or_default)
}
