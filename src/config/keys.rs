//! The known configuration keys, read off [`RawConfig`] itself, and the refusal of any
//! other: `conversion.qualty` is an error that names the nearest known key, never a
//! setting silently dropped.
//!
//! The schema is not a second list to keep in step: a small serde `Deserializer` walks
//! `RawConfig`'s `Deserialize` impl and records every field it asks for (`*` stands for
//! the names of a map such as `resize.presets`).

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor, value::Error as DeError};

use super::RawConfig;

/// Every key path of [`RawConfig`]: tables and leaves (`r2`, `r2.bucket`,
/// `resize.presets.*.width`).
pub fn known() -> BTreeSet<String> {
    let paths = RefCell::new(BTreeSet::new());
    // The probe never fails: it offers every field an empty value of the asked type.
    let _ = RawConfig::deserialize(Probe { path: String::new(), paths: &paths });
    paths.into_inner()
}

/// Whether `path` (dotted, map names as written) is a known key or section.
pub fn is_known(known: &BTreeSet<String>, path: &str) -> bool {
    known.contains(&generalise(known, path))
}

/// `path` with map names replaced by `*` where the schema has a map.
fn generalise(known: &BTreeSet<String>, path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.') {
        let exact = if out.is_empty() { seg.to_owned() } else { format!("{out}.{seg}") };
        let star = if out.is_empty() { "*".to_owned() } else { format!("{out}.*") };
        out = if !known.contains(&exact) && known.contains(&star) { star } else { exact };
    }
    out
}

/// "did you mean `x.y`?", or the keys the section allows.
pub fn suggestion(known: &BTreeSet<String>, path: &str) -> String {
    let (parent, name) = path.rsplit_once('.').unwrap_or(("", path));
    let parent_g = if parent.is_empty() { String::new() } else { generalise(known, parent) };
    let depth = path.split('.').count();
    let siblings: Vec<&str> = known
        .iter()
        .filter(|k| k.split('.').count() == depth)
        .filter_map(|k| k.rsplit_once('.').map_or(Some(("", k.as_str())), Some))
        .filter(|(p, _)| *p == parent_g)
        .map(|(_, n)| n)
        .collect();
    let best = siblings.iter().map(|s| (distance(name, s), *s)).min();
    let full = |s: &str| if parent.is_empty() { s.to_owned() } else { format!("{parent}.{s}") };
    match best {
        Some((d, s)) if d <= 2.max(name.len() / 3) => format!("did you mean `{}`?", full(s)),
        _ => {
            // The right name in the wrong section (`server.quality`)?
            if let Some(elsewhere) = known.iter().find(|k| k.rsplit('.').next() == Some(name) && !k.contains('*')) {
                return format!("did you mean `{elsewhere}`?");
            }
            let mut list: Vec<&str> = siblings;
            list.dedup();
            if list.is_empty() {
                "it is not a section of this file".to_owned()
            } else {
                format!("known here: {}", list.join(", "))
            }
        }
    }
}

/// Levenshtein distance, case-insensitive.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.to_lowercase().chars().collect(), b.to_lowercase().chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Walks a parsed file, returning the first unknown key (dotted path).
pub fn first_unknown(
    known: &BTreeSet<String>,
    prefix: &str,
    table: &config::Map<String, config::Value>,
) -> Option<String> {
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort();
    for k in keys {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if !is_known(known, &path) {
            return Some(path);
        }
        if let config::ValueKind::Table(t) = &table[k].kind
            && let Some(bad) = first_unknown(known, &path, t)
        {
            return Some(bad);
        }
    }
    None
}

/// The schema probe: a `Deserializer` that records the path of every value asked for.
struct Probe<'a> {
    path: String,
    paths: &'a RefCell<BTreeSet<String>>,
}

impl<'a> Probe<'a> {
    fn child(&self, name: &str) -> Probe<'a> {
        let path = if self.path.is_empty() { name.to_owned() } else { format!("{}.{name}", self.path) };
        Probe { path, paths: self.paths }
    }

    fn record(&self) {
        if !self.path.is_empty() {
            self.paths.borrow_mut().insert(self.path.clone());
        }
    }
}

macro_rules! leaf {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            self.record();
            v.$visit($($value)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = DeError;

    leaf! {
        deserialize_any => visit_str(""),
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i8(0), deserialize_i16 => visit_i16(0),
        deserialize_i32 => visit_i32(0), deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u8(0), deserialize_u16 => visit_u16(0),
        deserialize_u32 => visit_u32(0), deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f32(0.0), deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char(' '),
        deserialize_str => visit_str(""), deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(&[]), deserialize_byte_buf => visit_bytes(&[]),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""),
        deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.record();
        v.visit_seq(de::value::SeqDeserializer::<std::iter::Empty<()>, DeError>::new(std::iter::empty()))
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.record();
        v.visit_map(Fields { probe: self, names: vec!["*"], next: 0 })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.record();
        v.visit_map(Fields { probe: self, names: fields.to_vec(), next: 0 })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, _: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.record();
        v.visit_enum(variants.first().copied().unwrap_or_default().into_deserializer())
    }
}

/// The fields of a struct (or the one `*` entry of a map), each valued by a child probe.
struct Fields<'a> {
    probe: Probe<'a>,
    names: Vec<&'static str>,
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.names.get(self.next) {
            Some(name) => seed.deserialize((*name).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DeError> {
        let name = self.names[self.next];
        self.next += 1;
        seed.deserialize(self.probe.child(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_comes_from_the_raw_structs() {
        let k = known();
        for path in [
            "r2",
            "r2.bucket",
            "r2.buckets",
            "conversion.quality",
            "conversion.per_format.*.lossless",
            "resize.presets.*.width",
            "webhook.pending_dir",
            "log.level",
        ] {
            assert!(k.contains(path), "{path} missing from {k:?}");
        }
        assert!(is_known(&k, "resize.presets.thumbnail.height"));
        assert!(!is_known(&k, "conversion.qualty"));
    }

    #[test]
    fn suggestions_name_the_nearest_key() {
        let k = known();
        assert_eq!(suggestion(&k, "conversion.qualty"), "did you mean `conversion.quality`?");
        assert_eq!(suggestion(&k, "resize.presets.small.widht"), "did you mean `resize.presets.small.width`?");
        assert_eq!(suggestion(&k, "server.quality"), "did you mean `conversion.quality`?");
        assert_eq!(suggestion(&k, "webhok"), "did you mean `webhook`?");
        assert!(suggestion(&k, "cron.zzzzzzzz").starts_with("known here: enabled, run_on_start, schedule, timezone"));
    }
}
