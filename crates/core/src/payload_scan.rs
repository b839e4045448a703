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

use prost::encoding::{WireType, decode_key, decode_varint};
use prost_reflect::{Kind, MessageDescriptor};

/// Nesting the walk follows; deeper payloads go to the decode, whose own
/// recursion limit (prost's, 100, above this one) then decides.
const MAX_DEPTH: u32 = 32;

/// Whether `payload` certainly decodes as `message` with every field, at
/// every depth, one that `message` defines. `false` means "not certain",
/// not "invalid".
pub fn conforms(message: &MessageDescriptor, payload: &[u8]) -> bool {
    walk(message, payload, 0).is_some()
}

fn walk(message: &MessageDescriptor, mut bytes: &[u8], depth: u32) -> Option<()> {
    if depth >= MAX_DEPTH {
        return None;
    }
    while !bytes.is_empty() {
        let (number, wire_type) = decode_key(&mut bytes).ok()?;
        let field = message.get_field(number)?;
        let kind = field.kind();
        if wire_type == kind.wire_type() {
            match wire_type {
                WireType::Varint => {
                    decode_varint(&mut bytes).ok()?;
                }
                WireType::SixtyFourBit => bytes = bytes.get(8..)?,
                WireType::ThirtyTwoBit => bytes = bytes.get(4..)?,
                WireType::LengthDelimited => {
                    let value = length_delimited(&mut bytes)?;
                    match &kind {
                        Kind::String => {
                            std::str::from_utf8(value).ok()?;
                        }
                        Kind::Message(nested) if !field.is_group() => {
                            walk(nested, value, depth + 1)?;
                        }
                        Kind::Bytes => {}
                        _ => return None,
                    }
                }
                WireType::StartGroup | WireType::EndGroup => return None,
            }
        } else if wire_type == WireType::LengthDelimited && field.is_list() {
            // A packed list: only of scalars that are not length-delimited.
            packed(kind.wire_type(), length_delimited(&mut bytes)?)?;
        } else {
            return None;
        }
    }
    Some(())
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
