//! One batch holding several versions of one record (a producer retry, an
//! agency correcting itself within milliseconds): the newest is current,
//! every version is in the history once, on SQLite and PostgreSQL alike.

use govbus_store::{ApplyStats, IngestedRecord};
use govbus_tests::{TestBus, birth_record, open_showcase, pinfl};
use prost::Message;

fn ingested(subject: &str, version: u64, offset: i64) -> IngestedRecord {
    let record = birth_record(subject, version, &format!("Name{version}"));
    IngestedRecord {
        envelope: record.encode_to_vec(),
        record,
        topic: "govbus.records.birth_certificate".into(),
        partition: 0,
        offset,
        ingested_at_us: 1,
    }
}

#[tokio::test]
async fn a_batch_with_many_versions_of_one_record_keeps_the_newest() {
    let bus = TestBus::start();
    let showcase = open_showcase(&bus, "showcase.db").await;
    let (a, b) = (pinfl(1), pinfl(2));
    let batch = vec![
        ingested(&a, 1, 0),
        ingested(&a, 3, 1),
        ingested(&b, 1, 2),
        ingested(&a, 2, 3),
        ingested(&a, 3, 4),
    ];
    let stats = showcase.apply(&batch).await.expect("batch applies");
    assert_eq!(
        stats,
        ApplyStats {
            applied: 2,
            stale: 3
        }
    );
    let current = showcase.current("birth_certificate", &a).await.unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].record.version, 3);
    assert_eq!(current[0].offset, 1, "the first copy of version 3 is kept");
    let key = current[0].record.record_key.clone();
    assert_eq!(
        showcase
            .history_len("birth_certificate", &a, &key)
            .await
            .unwrap(),
        3
    );

    // An older batch afterwards changes nothing current.
    let stats = showcase.apply(&[ingested(&a, 2, 5)]).await.unwrap();
    assert_eq!(
        stats,
        ApplyStats {
            applied: 0,
            stale: 1
        }
    );
    let current = showcase.current("birth_certificate", &a).await.unwrap();
    assert_eq!(current[0].record.version, 3);
    assert_eq!(showcase.count().await.unwrap(), 2);
    assert_eq!(showcase.history_count().await.unwrap(), 4);
}
