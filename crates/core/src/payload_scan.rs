//! A payload checked against its message type by walking its wire bytes,
//! without decoding it into a `DynamicMessage`.
//!
//! Every record is validated twice, by the adapter that signs it and by the
//! broker that stores it, and building a `DynamicMessage` (a map of fields,
//! every string and nested message allocated) was ~4 % of each side's CPU
//! in an ingest run (docs/PROFILING.md). The walk allocates nothing. It is
//! only ever a shortcut to "valid": whatever it is not certain of — an
//! unknown or mistyped field, bad UTF-8, a group, a truncated value, deep
//! nesting — it leaves to the decode, which gives the verdict and its
//! message. So it must never accept bytes that the decode would refuse
//! (tests/payload_scan.rs holds it to that).
//!
//! The walk follows a [`PayloadShape`], the message type reduced once (per
//! record type, in the catalog) to a sorted table of field numbers and wire
//! types per message: asking prost-reflect for each field's kind on every
//! record cloned and dropped a shared pointer for each nested message and
//! was about half of the walk (docs/PROFILING.md).

use std::collections::HashMap;

use prost::encoding::{WireType, decode_key, decode_varint};
use prost_reflect::{Kind, MessageDescriptor};

/// Nesting the walk follows; deeper payloads go to the decode, whose own
/// recursion limit (prost's, 100, above this one) then decides.
const MAX_DEPTH: u32 = 32;

/// Whether `payload` certainly decodes as `message` with every field, at
/// every depth, one that `message` defines. `false` means "not certain",
/// not "invalid". Reduces `message` first; [`PayloadShape::conforms`] asks
/// the same of a shape reduced once.
pub fn conforms(message: &MessageDescriptor, payload: &[u8]) -> bool {
    PayloadShape::new(message).conforms(payload)
}

/// A message type and every type nested in it, as the walk needs them.
#[derive(Debug, Clone)]
pub struct PayloadShape {
    /// The root first; `Field::Message` points into this.
    messages: Vec<Fields>,
}

/// A message's fields, sorted by number.
#[derive(Debug, Clone, Default)]
struct Fields(Vec<(u32, FieldShape)>);

#[derive(Debug, Clone, Copy)]
struct FieldShape {
    value: Value,
    /// Repeated (maps are not): may come packed.
    list: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Varint,
    Fixed64,
    Fixed32,
    Text,
    Bytes,
    Message(usize),
    /// A group, or what no wire type fits: never certain.
    Uncertain,
}

impl Value {
    fn wire_type(self) -> WireType {
        match self {
            Self::Varint => WireType::Varint,
            Self::Fixed64 => WireType::SixtyFourBit,
            Self::Fixed32 => WireType::ThirtyTwoBit,
            Self::Text | Self::Bytes | Self::Message(_) | Self::Uncertain => {
                WireType::LengthDelimited
            }
        }
    }
}

impl Fields {
    fn get(&self, number: u32) -> Option<FieldShape> {
        self.0
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| self.0[i].1)
    }
}

impl PayloadShape {
    pub fn new(root: &MessageDescriptor) -> Self {
        let mut messages = vec![Fields::default()];
        let mut index = HashMap::from([(root.full_name().to_string(), 0)]);
        let mut todo = vec![root.clone()];
        while let Some(message) = todo.pop() {
            let at = index[message.full_name()];
            let mut fields = Vec::new();
            for field in message.fields() {
                let value = match field.kind() {
                    _ if field.is_group() => Value::Uncertain,
                    Kind::String => Value::Text,
                    Kind::Bytes => Value::Bytes,
                    Kind::Message(nested) => {
                        let next = index.len();
                        Value::Message(*index.entry(nested.full_name().to_string()).or_insert_with(
                            || {
                                messages.push(Fields::default());
                                todo.push(nested.clone());
                                next
                            },
                        ))
                    }
                    kind => match kind.wire_type() {
                        WireType::Varint => Value::Varint,
                        WireType::SixtyFourBit => Value::Fixed64,
                        WireType::ThirtyTwoBit => Value::Fixed32,
                        _ => Value::Uncertain,
                    },
                };
                let list = field.is_list();
                fields.push((field.number(), FieldShape { value, list }));
            }
            fields.sort_by_key(|(number, _)| *number);
            messages[at] = Fields(fields);
        }
        Self { messages }
    }

    /// Whether `payload` certainly decodes as the shape's message (see
    /// [`conforms`]).
    pub fn conforms(&self, payload: &[u8]) -> bool {
        self.walk(0, payload, 0).is_some()
    }

    fn walk(&self, message: usize, mut bytes: &[u8], depth: u32) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let fields = self.messages.get(message)?;
        while !bytes.is_empty() {
            let (number, wire_type) = decode_key(&mut bytes).ok()?;
            let field = fields.get(number)?;
            let expected = field.value.wire_type();
            if wire_type == expected {
                match wire_type {
                    WireType::Varint => {
                        decode_varint(&mut bytes).ok()?;
                    }
                    WireType::SixtyFourBit => bytes = bytes.get(8..)?,
                    WireType::ThirtyTwoBit => bytes = bytes.get(4..)?,
                    WireType::LengthDelimited => {
                        let value = length_delimited(&mut bytes)?;
                        match field.value {
                            Value::Text => {
                                std::str::from_utf8(value).ok()?;
                            }
                            Value::Message(nested) => self.walk(nested, value, depth + 1)?,
                            Value::Bytes => {}
                            _ => return None,
                        }
                    }
                    WireType::StartGroup | WireType::EndGroup => return None,
                }
            } else if wire_type == WireType::LengthDelimited && field.list {
                // A packed list: only of scalars that are not length-delimited.
                packed(expected, length_delimited(&mut bytes)?)?;
            } else {
                return None;
            }
        }
        Some(())
    }
}

/// A length-delimited value: its bytes, and `bytes` moved past them.
fn length_delimited<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(decode_varint(bytes).ok()?).ok()?;
    let value = bytes.get(..len)?;
    *bytes = &bytes[len..];
    Some(value)
}

/// A packed repeated field's values, each of `wire_type`, filling `bytes`.
fn packed(wire_type: WireType, mut bytes: &[u8]) -> Option<()> {
    match wire_type {
        WireType::Varint => {
            while !bytes.is_empty() {
                decode_varint(&mut bytes).ok()?;
            }
            Some(())
        }
        WireType::SixtyFourBit => bytes.len().is_multiple_of(8).then_some(()),
        WireType::ThirtyTwoBit => bytes.len().is_multiple_of(4).then_some(()),
        _ => None,
    }
}
