//! Records signed in one batch share their signature's parts (signer,
//! certificate, signature, Merkle root), which the showcase stores once per
//! batch: every record still comes back as it was consumed and verifies
//! against the bus CA, on SQLite and PostgreSQL alike.

use govbus_proto::v1::Record;
use govbus_security::{Signer, verify};
use govbus_store::{IngestedRecord, Showcase};
use govbus_tests::*;
use prost::Message;

/// Births of citizens `subjects`, signed together as one batch.
fn signed_together(signer: &Signer, subjects: std::ops::Range<u32>) -> Vec<Record> {
    let mut records: Vec<Record> = subjects
        .map(|n| {
            let mut record = birth_record(&pinfl(n), 1, &format!("Name{n}"));
            record.record_id = uuid::Uuid::now_v7().to_string();
            record.source_agency = signer.identity().agency().into();
            record.source_system = signer.identity().system().into();
            record
        })
        .collect();
    signer.sign_all(&mut records).unwrap();
    records
}

fn ingested(records: &[Record], first_offset: i64) -> Vec<IngestedRecord> {
    (first_offset..)
        .zip(records)
        .map(|(offset, record)| IngestedRecord {
            envelope: record.encode_to_vec().into(),
            record: record.clone(),
            topic: "govbus.records.birth_certificate".into(),
            partition: 0,
            offset,
            ingested_at_us: 1,
        })
        .collect()
}

async fn scalar(showcase: &Showcase, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&showcase.database().pool)
        .await
        .unwrap()
}

/// The record `showcase` answers for `record`'s subject, checked against
/// the record as consumed and the CA.
async fn assert_answers(showcase: &Showcase, record: &Record, ca: &[u8]) -> Vec<u8> {
    let current = showcase
        .current("birth_certificate", &record.subject_id)
        .await
        .unwrap();
    assert_eq!(current.len(), 1);
    let answered = current[0].record().unwrap();
    assert_eq!(&answered, record, "decodes to the record as consumed");
    verify(&answered, ca).expect("verifies against the bus CA");
    current[0].envelope.clone()
}

#[tokio::test]
async fn a_signed_batch_stores_its_signature_once_and_every_record_verifies() {
    let bus = TestBus::start();
    let showcase = open_showcase(&bus, "showcase.db").await;
    let signer = bus.signer(FHDY);
    let records = signed_together(&signer, 0..40);
    let consumed = ingested(&records, 0);

    // The adapter's batch arrives in two consumer batches, the second one
    // twice (a redelivery after a crash).
    showcase.apply(&consumed[..25]).await.unwrap();
    showcase.apply(&consumed[25..]).await.unwrap();
    let again = showcase.apply(&consumed[25..]).await.unwrap();
    assert_eq!((again.applied, again.stale), (0, 15));

    assert_eq!(
        scalar(&showcase, "SELECT COUNT(*) FROM showcase_batch_signatures").await,
        1
    );
    assert_eq!(
        scalar(
            &showcase,
            "SELECT COUNT(*) FROM showcase_history WHERE signature_digest IS NULL"
        )
        .await,
        0
    );
    let stored: i64 = scalar(
        &showcase,
        "SELECT CAST(SUM(LENGTH(envelope)) AS BIGINT) FROM showcase_history",
    )
    .await;
    let whole: usize = consumed.iter().map(|r| r.envelope.len()).sum();
    assert!(
        (stored as usize) < whole * 6 / 10,
        "stored {stored} of {whole} envelope bytes"
    );

    let ca = bus.ca_der();
    for record in &records {
        assert_answers(&showcase, record, &ca).await;
    }
}

#[tokio::test]
async fn envelopes_signed_alone_are_stored_whole_beside_split_ones() {
    let bus = TestBus::start();
    let showcase = open_showcase(&bus, "showcase.db").await;
    let signer = bus.signer(FHDY);
    let alone = signed_together(&signer, 100..101);
    let (first, second) = (
        signed_together(&signer, 0..3),
        signed_together(&signer, 3..6),
    );
    let mut batch = ingested(&first, 0);
    batch.extend(ingested(&alone, 3));
    batch.extend(ingested(&second, 4));
    showcase.apply(&batch).await.unwrap();

    assert_eq!(
        scalar(&showcase, "SELECT COUNT(*) FROM showcase_batch_signatures").await,
        2,
        "one per signed batch; a batch of one shares nothing"
    );
    let ca = bus.ca_der();
    let answered = assert_answers(&showcase, &alone[0], &ca).await;
    assert_eq!(answered, alone[0].encode_to_vec(), "the bytes as consumed");
    for record in first.iter().chain(&second) {
        assert_answers(&showcase, record, &ca).await;
    }
}

/// Two showcases holding the same records agree on their digest whether
/// the records' envelopes were split or stored whole (as before migration
/// 0008): the digest is of the envelopes as consumed.
#[tokio::test]
async fn the_showcase_digest_is_of_the_envelopes_as_consumed() {
    let bus = TestBus::start();
    let (split, whole) = (
        open_showcase(&bus, "split.db").await,
        open_showcase(&bus, "whole.db").await,
    );
    let records = signed_together(&bus.signer(FHDY), 0..5);
    let consumed = ingested(&records, 0);
    split.apply(&consumed).await.unwrap();
    whole.apply(&consumed).await.unwrap();
    // Put `whole` back as an older build would have written it.
    let pool = &whole.database().pool;
    for item in &consumed {
        sqlx::query(
            "UPDATE showcase_history SET envelope = $1, signature_digest = NULL \
             WHERE subject_id = $2",
        )
        .bind(item.envelope.to_vec())
        .bind(item.record.subject_id.clone())
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM showcase_batch_signatures")
        .execute(pool)
        .await
        .unwrap();

    assert_eq!(split.digest().await.unwrap(), whole.digest().await.unwrap());
    let ca = bus.ca_der();
    for record in &records {
        assert_answers(&whole, record, &ca).await;
    }
}
