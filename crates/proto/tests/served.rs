//! The broker's answer types (`served`) are the public ones on the wire.

use govbus_proto::{served, v1};
use prost::Message as _;
use prost_types::{Any, Timestamp};

fn record() -> v1::Record {
    v1::Record {
        record_id: "0191f3a0-0000-7000-8000-000000000001".into(),
        record_type: "birth_certificate".into(),
        subject_id: "31234567890123".into(),
        record_key: "main".into(),
        version: 3,
        status: v1::RecordStatus::Revoked as i32,
        issued_at: Some(Timestamp {
            seconds: 1_600_000_000,
            nanos: 0,
        }),
        valid_until: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        source_agency: "civil-registry".into(),
        source_system: "fhdy".into(),
        payload: Some(Any {
            type_url: "type.googleapis.com/govbus.records.v1.BirthCertificate".into(),
            value: vec![10, 3, 65, 98, 99],
        }),
        content_hash: vec![9; 32],
        signature: Some(v1::RecordSignature {
            signer: "agency/civil-registry/system/fhdy".into(),
            certificate: vec![7; 300].into(),
            signature: vec![1; 64].into(),
            field_salts: [(1, vec![2; 16].into()), (2, vec![3; 16].into())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn provenance() -> v1::Provenance {
    v1::Provenance {
        source_agency: "civil-registry".into(),
        source_system: "fhdy".into(),
        topic: "govbus.records.birth_certificate".into(),
        partition: 4,
        offset: 1234,
        ingested_at: Some(Timestamp {
            seconds: 1_650_000_000,
            nanos: 0,
        }),
    }
}

fn answers() -> (v1::GetEvidenceResponse, served::GetEvidenceResponse) {
    let as_of = Some(Timestamp {
        seconds: 1_650_000_001,
        nanos: 0,
    });
    let public = v1::GetEvidenceResponse {
        request_id: "req-1".into(),
        evidence: vec![
            v1::Evidence {
                record: Some(record()),
                status: v1::EvidenceStatus::Revoked as i32,
                provenance: Some(provenance()),
            },
            v1::Evidence {
                record: Some(v1::Record {
                    record_key: "second".into(),
                    ..record()
                }),
                status: v1::EvidenceStatus::Valid as i32,
                provenance: None,
            },
        ],
        showcase_as_of: as_of,
    };
    let served = served::GetEvidenceResponse {
        request_id: "req-1".into(),
        evidence: public
            .evidence
            .iter()
            .map(|e| served::Evidence {
                record: e.record.as_ref().unwrap().encode_to_vec(),
                status: e.status,
                provenance: e.provenance.clone(),
            })
            .collect(),
        showcase_as_of: as_of,
    };
    (public, served)
}

#[test]
fn a_served_answer_is_the_public_answer_byte_for_byte() {
    let (public, served) = answers();
    assert_eq!(served.encode_to_vec(), public.encode_to_vec());
    assert_eq!(
        v1::GetEvidenceResponse::decode(served.encode_to_vec().as_slice()).unwrap(),
        public
    );
}

#[test]
fn a_public_answer_reads_as_a_served_one() {
    let (public, served) = answers();
    assert_eq!(
        served::GetEvidenceResponse::decode(public.encode_to_vec().as_slice()).unwrap(),
        served
    );
}

#[test]
fn the_head_of_an_envelope_holds_what_an_answer_reads() {
    let envelope = record().encode_to_vec();
    let head = served::RecordHead::decode(envelope.as_slice()).unwrap();
    assert_eq!(
        head,
        served::RecordHead {
            status: v1::RecordStatus::Revoked as i32,
            valid_until: record().valid_until,
            source_agency: "civil-registry".into(),
            source_system: "fhdy".into(),
        }
    );
    // Its outer framing is checked: an envelope cut inside its last field
    // (the signature block, over 300 bytes) does not decode.
    for cut in [1, 10, 100] {
        assert!(
            served::RecordHead::decode(&envelope[..envelope.len() - cut]).is_err(),
            "cut by {cut}"
        );
    }
}
