//! A record's fields as exclusions compare them, taken from its serde form in
//! one walk: the record is serialised once on the data path, by the outputs,
//! and not a second time into a JSON tree for the exclusions.
//!
//! serde offers no walker that hands out leaves by dotted path without
//! building a tree (`serde_json::to_value` builds one, every field of every
//! object allocated); this one keeps only the wanted fields' texts. It sees
//! what a JSON tree would hold, the same way: a leaf's text is its JSON text
//! (strings as they are, numbers and bools as JSON writes them), arrays are
//! flattened, objects inside arrays and nulls hold no text.

use serde::ser::{self, Serialize};

use super::fields;

/// The texts of the fields `wanted` marks (by [`fields::index`]) in `record`,
/// by field: `None` where the record has no text for it.
pub fn texts_of(record: &impl Serialize, wanted: &[bool]) -> Vec<Option<Vec<String>>> {
    let mut walker = Walker {
        path: String::new(),
        slot: None,
        in_array: false,
        wanted,
        out: std::iter::repeat_with(|| None).take(wanted.len()).collect(),
    };
    // Only a map key that is no string can fail (and our records have none);
    // what the walk had taken by then stands.
    let _ = record.serialize(&mut walker);
    walker.out
}

struct Walker<'w> {
    /// The dotted path of the value being walked.
    path: String,
    /// The wanted field at `path`, if it is one.
    slot: Option<usize>,
    /// Inside an array: objects hold nothing (a dotted path never runs
    /// through an array).
    in_array: bool,
    wanted: &'w [bool],
    out: Vec<Option<Vec<String>>>,
}

#[derive(Debug)]
struct NotAStringKey;

impl std::fmt::Display for NotAStringKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map key that is not a string")
    }
}

impl std::error::Error for NotAStringKey {}

impl ser::Error for NotAStringKey {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Self
    }
}

type Result<T = ()> = std::result::Result<T, NotAStringKey>;

#[expect(
    clippy::unnecessary_wraps,
    reason = "`leaf` answers for the serializer methods that end with it"
)]
impl Walker<'_> {
    /// A value's text, made only when its field is wanted.
    fn leaf(&mut self, text: impl FnOnce() -> String) -> Result {
        if let Some(slot) = self.slot
            && let Some(texts) = self.out.get_mut(slot)
        {
            texts.get_or_insert_with(Vec::new).push(text());
        }
        Ok(()) // a Serializer method's answer, for the callers' tails
    }

    /// Walks `value` as the member `key` of the object at the current path.
    fn member(&mut self, key: &str, value: &(impl Serialize + ?Sized)) -> Result {
        if self.in_array {
            return Ok(());
        }
        let (len, slot) = (self.path.len(), self.slot);
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
        self.slot = fields::index(&self.path).filter(|&i| self.wanted.get(i) == Some(&true));
        let walked = value.serialize(&mut *self);
        self.path.truncate(len);
        self.slot = slot;
        walked
    }

    fn element(&mut self, value: &(impl Serialize + ?Sized)) -> Result {
        let in_array = std::mem::replace(&mut self.in_array, true);
        let walked = value.serialize(&mut *self);
        self.in_array = in_array;
        walked
    }
}

macro_rules! leaf_as_json {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method(self, v: $ty) -> Result {
            self.leaf(|| v.to_string())
        }
    )*};
}

impl<'a, 'w> ser::Serializer for &'a mut Walker<'w> {
    type Ok = ();
    type Error = NotAStringKey;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Map<'a, 'w>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    leaf_as_json!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
    );

    fn serialize_f32(self, v: f32) -> Result {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result {
        // JSON's text of the number (and null, so no text, for NaN and infinities).
        match serde_json::Number::from_f64(v) {
            Some(n) => self.leaf(|| n.to_string()),
            None => Ok(()),
        }
    }

    fn serialize_str(self, v: &str) -> Result {
        self.leaf(|| v.to_owned())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result {
        // serde_json writes bytes as an array of numbers.
        v.iter().try_for_each(|b| self.element(b))
    }

    fn serialize_none(self) -> Result {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result {
        v.serialize(self)
    }

    fn serialize_unit(self) -> Result {
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result {
        v.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result {
        self.member(variant, v)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self> {
        // `{"Variant": [..]}`: a path through the variant's name, then an array;
        // no exclusion field is one.
        Ok(self)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Map<'a, 'w>> {
        Ok(Map {
            walker: self,
            key: None,
        })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self> {
        Ok(self)
    }
}

/// Arrays, and tuples (JSON writes them as arrays): each element at the
/// array's own path.
macro_rules! elements {
    ($($trait:ident::$method:ident),* $(,)?) => {$(
        impl ser::$trait for &mut Walker<'_> {
            type Ok = ();
            type Error = NotAStringKey;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result {
                self.element(v)
            }
            fn end(self) -> Result {
                Ok(())
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
);

impl ser::SerializeTupleVariant for &mut Walker<'_> {
    type Ok = ();
    type Error = NotAStringKey;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &T) -> Result {
        Ok(())
    }
    fn end(self) -> Result {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walker<'_> {
    type Ok = ();
    type Error = NotAStringKey;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result {
        self.member(key, v)
    }
    fn end(self) -> Result {
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walker<'_> {
    type Ok = ();
    type Error = NotAStringKey;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, _: &T) -> Result {
        Ok(())
    }
    fn end(self) -> Result {
        Ok(())
    }
}

/// An object with keys known only as it is walked (a `serde_json::Value`'s).
struct Map<'a, 'w> {
    walker: &'a mut Walker<'w>,
    key: Option<String>,
}

impl ser::SerializeMap for Map<'_, '_> {
    type Ok = ();
    type Error = NotAStringKey;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        // Keys are rare (a `serde_json::Value`'s objects, in tests and
        // fuzzing): serde_json's own serialiser says what text a key has.
        match key.serialize(serde_json::value::Serializer) {
            Ok(serde_json::Value::String(key)) => {
                self.key = Some(key);
                Ok(())
            }
            _ => Err(NotAStringKey),
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result {
        match self.key.take() {
            Some(key) => self.walker.member(&key, v),
            None => Err(NotAStringKey),
        }
    }

    fn end(self) -> Result {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// What a JSON tree of the record holds at `field`, as exclusions read
    /// it: the reference the walk must equal.
    fn from_tree(record: &Value, field: &str) -> Option<Vec<String>> {
        fn collect(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::String(s) => out.push(s.clone()),
                Value::Number(_) | Value::Bool(_) => out.push(value.to_string()),
                Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
                Value::Null | Value::Object(_) => {}
            }
        }
        let value = field
            .split('.')
            .try_fold(record, |v, key| v.as_object()?.get(key))?;
        let mut texts = Vec::new();
        collect(value, &mut texts);
        Some(texts).filter(|t| !t.is_empty())
    }

    fn all() -> Vec<bool> {
        vec![true; fields::FIELDS.len()]
    }

    #[test]
    fn every_field_of_every_sample_as_its_json_tree_holds_it() {
        for rec in crate::record::samples::samples() {
            let tree = serde_json::to_value(&rec).unwrap();
            let walked = texts_of(&rec, &all());
            for (field, texts) in fields::FIELDS.iter().zip(walked) {
                assert_eq!(texts, from_tree(&tree, field), "{field} of {tree}");
            }
        }
    }

    #[test]
    fn arrays_flatten_objects_in_arrays_and_nulls_hold_nothing() {
        let rec = json!({
            "process": {"args": ["a", ["b", 3]], "pid": null},
            "rule": {"strings": [{"identifier": "$s1"}]},
            "file": {"size": 1.5, "deleted": true},
        });
        let walked = texts_of(&rec, &all());
        for (field, texts) in fields::FIELDS.iter().zip(walked) {
            assert_eq!(texts, from_tree(&rec, field), "{field}");
        }
    }

    #[test]
    fn only_wanted_fields_are_kept() {
        let rec = json!({"process": {"name": "a", "user": "b"}});
        let mut wanted = vec![false; fields::FIELDS.len()];
        let name = fields::index("process.name").unwrap();
        wanted[name] = true;
        let walked = texts_of(&rec, &wanted);
        let kept: Vec<usize> = (0..walked.len()).filter(|&i| walked[i].is_some()).collect();
        assert_eq!(kept, [name]);
    }
}
