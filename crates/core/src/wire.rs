//! Payloads at the protobuf wire level: split into top-level fields and
//! project onto a subset of them, byte for byte.
//!
//! Minimised evidence and record signatures both work on the payload's own
//! bytes rather than on a re-encoding, so a field keeps exactly the bytes the
//! agency signed, whatever library decodes it later.

use std::collections::BTreeMap;

use prost::encoding::{WireType, decode_key, decode_varint};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated or malformed protobuf at byte {0}")]
    Malformed(usize),
    #[error("field {0} uses protobuf groups, which govbus does not carry")]
    Group(u32),
}

/// One tag-value record: its field number and byte range in the payload.
fn records(payload: &[u8]) -> Result<Vec<(u32, std::ops::Range<usize>)>, WireError> {
    let mut out = Vec::new();
    let mut buf = payload;
    while !buf.is_empty() {
        let start = payload.len() - buf.len();
        let bad = || WireError::Malformed(start);
        let (number, wire_type) = decode_key(&mut buf).map_err(|_| bad())?;
        let skip = match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|_| bad())?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                usize::try_from(decode_varint(&mut buf).map_err(|_| bad())?).map_err(|_| bad())?
            }
            WireType::StartGroup | WireType::EndGroup => return Err(WireError::Group(number)),
        };
        if buf.len() < skip {
            return Err(bad());
        }
        buf = &buf[skip..];
        out.push((number, start..payload.len() - buf.len()));
    }
    Ok(out)
}

/// The payload's tag-value records as (field number, byte range), ordered
/// by field number and, within a field, as they appear: each field's wire
/// bytes without copying them (`chunk_by` on the number groups a field).
pub fn field_records(payload: &[u8]) -> Result<Vec<(u32, std::ops::Range<usize>)>, WireError> {
    let mut out = records(payload)?;
    // Stable: a field's records keep their order.
    out.sort_by_key(|(number, _)| *number);
    Ok(out)
}

/// Each top-level field's wire bytes: all its tag-value records, in order.
pub fn split_fields(payload: &[u8]) -> Result<BTreeMap<u32, Vec<u8>>, WireError> {
    let mut fields: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for (number, range) in records(payload)? {
        fields
            .entry(number)
            .or_default()
            .extend_from_slice(&payload[range]);
    }
    Ok(fields)
}

/// The payload with only the records of the fields in `keep`, in their
/// original order and with their original bytes.
pub fn project(payload: &[u8], keep: &[u32]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(payload.len());
    for (number, range) in records(payload)? {
        if keep.contains(&number) {
            out.extend_from_slice(&payload[range]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use govbus_proto::records::{BirthCertificate, PersonName};
    use prost::Message;

    use super::*;

    fn sample() -> BirthCertificate {
        BirthCertificate {
            certificate_number: "I-TN 1".into(),
            child: Some(PersonName {
                first_name: "Aziz".into(),
                ..Default::default()
            }),
            sex: 1,
            date_of_birth: "2015-05-15".into(),
            ..Default::default()
        }
    }

    #[test]
    fn projection_keeps_exact_field_bytes() {
        let bytes = sample().encode_to_vec();
        let fields = split_fields(&bytes).unwrap();
        assert_eq!(fields.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
        let projected = project(&bytes, &[3, 4]).unwrap();
        let got = BirthCertificate::decode(projected.as_slice()).unwrap();
        assert_eq!(got.sex, 1);
        assert_eq!(got.date_of_birth, "2015-05-15");
        assert!(got.child.is_none());
        let again = split_fields(&projected).unwrap();
        assert_eq!(again[&3], fields[&3]);
        assert_eq!(again[&4], fields[&4]);
    }

    #[test]
    fn field_records_group_a_field_in_payload_order() {
        // Field 2 twice, field 1 between: a repeated or merged field.
        let payload = [0x12, 0x01, b'a', 0x08, 0x07, 0x12, 0x01, b'b'];
        let records = field_records(&payload).unwrap();
        assert_eq!(records, [(1, 3..5), (2, 0..3), (2, 5..8)]);
        let fields = split_fields(&payload).unwrap();
        for group in records.chunk_by(|a, b| a.0 == b.0) {
            let bytes: Vec<u8> = group
                .iter()
                .flat_map(|(_, range)| payload[range.clone()].iter().copied())
                .collect();
            assert_eq!(bytes, fields[&group[0].0]);
        }
        assert_eq!(field_records(&[0x0b]), Err(WireError::Group(1)));
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(
            split_fields(&[0x0a, 0x05, b'a']),
            Err(WireError::Malformed(0))
        );
        assert!(split_fields(&[0xff]).is_err());
        assert_eq!(split_fields(&[0x0b]), Err(WireError::Group(1)));
        assert!(split_fields(&[]).unwrap().is_empty());
    }
}
