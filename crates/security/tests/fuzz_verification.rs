//! Property test: any mutation of a signed record — envelope bytes flipped,
//! fields edited — is either rejected by verification or leaves the signed
//! content unchanged; verification never panics.

use govbus_proto::v1::{Record, RecordStatus};
use govbus_security::{Signer, pki::CertificateAuthority, pki::LeafRequest, verify};
use proptest::prelude::*;
use prost::Message;

struct Fixture {
    ca_der: Vec<u8>,
    signed: Record,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ca = CertificateAuthority::generate("fuzz CA").unwrap();
        let issued = ca
            .issue_signing(&LeafRequest::new(
                "agency/civil-registry/system/fhdy".parse().unwrap(),
            ))
            .unwrap();
        let signer = Signer::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
        let record = Record {
            record_id: "0192f000-0000-7000-8000-000000000001".into(),
            record_type: "birth_certificate".into(),
            subject_id: "51505151234567".into(),
            record_key: "I-TN 0412345".into(),
            version: 1,
            status: RecordStatus::Active as i32,
            source_agency: "civil-registry".into(),
            source_system: "fhdy".into(),
            payload: Some(govbus_proto::pack(
                &govbus_proto::records::BirthCertificate {
                    certificate_number: "I-TN 0412345".into(),
                    date_of_birth: "2015-05-15".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        // The middle record of a batch of three, so that its inclusion
        // proof is not empty and is fuzzed too.
        let mut batch: Vec<Record> = (1..=3)
            .map(|version| Record {
                version,
                ..record.clone()
            })
            .collect();
        signer.sign_all(&mut batch).unwrap();
        Fixture {
            ca_der: govbus_security::pem_certificate_der(ca.cert_pem()).unwrap(),
            signed: batch.swap_remove(1),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn flipped_bytes_never_verify_as_something_else(position in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let f = fixture();
        let mut bytes = f.signed.encode_to_vec();
        let i = position.index(bytes.len());
        bytes[i] ^= mask;
        if let Ok(record) = Record::decode(bytes.as_slice())
            && verify(&record, &f.ca_der).is_ok()
        {
            // Only an edit outside the signed content may survive, and then
            // the signed content must be identical.
            prop_assert_eq!(
                govbus_core::signing_input(&record).unwrap(),
                govbus_core::signing_input(&f.signed).unwrap()
            );
        }
    }
}
