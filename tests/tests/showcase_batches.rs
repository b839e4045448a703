//! One batch holding several versions of one record (a producer retry, an
//! agency correcting itself within milliseconds): the newest is current,
//! every version is in the history once, on SQLite and PostgreSQL alike.

use govbus_store::{ApplyStats, Backend, IngestedRecord};
use govbus_tests::{TestBus, birth_record, open_showcase, pinfl};
use prost::Message;

fn ingested(subject: &str, version: u64, offset: i64) -> IngestedRecord {
    let record = birth_record(subject, version, &format!("Name{version}"));
    IngestedRecord {
        envelope: record.encode_to_vec().into(),
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
    assert_eq!(current[0].record().unwrap().version, 3);
    assert_eq!(current[0].offset, 1, "the first copy of version 3 is kept");
    let key = current[0].record().unwrap().record_key;
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
    assert_eq!(current[0].record().unwrap().version, 3);
    assert_eq!(showcase.count().await.unwrap(), 2);
    assert_eq!(showcase.history_count().await.unwrap(), 4);

    // A version older than the current one but new to the showcase joins
    // the history without becoming current.
    for (version, offset, applied) in [(3, 6, 1), (2, 7, 0)] {
        let stats = showcase
            .apply(&[ingested(&b, version, offset)])
            .await
            .unwrap();
        assert_eq!(
            stats,
            ApplyStats {
                applied,
                stale: 1 - applied
            }
        );
    }
    let current = showcase.current("birth_certificate", &b).await.unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].record().unwrap().version, 3);
    assert_eq!(current[0].offset, 6);
    assert_eq!(showcase.count().await.unwrap(), 2);
    assert_eq!(showcase.history_count().await.unwrap(), 6);
}

/// On SQLite a batch longer than one statement's rows (500) goes in several
/// statements of one transaction; on PostgreSQL any batch is one statement
/// of arrays for both tables. Either way all of it is applied, and applying
/// it again changes nothing.
#[tokio::test]
async fn batches_longer_than_one_statement_apply_whole() {
    let bus = TestBus::start();
    let showcase = open_showcase(&bus, "showcase.db").await;
    let long: Vec<IngestedRecord> = (0..1201)
        .map(|n| ingested(&pinfl(n), 1, n as i64))
        .collect();
    let short: Vec<IngestedRecord> = (1201..1301)
        .map(|n| ingested(&pinfl(n), 1, n as i64))
        .collect();
    for batch in [&long, &short] {
        let n = batch.len() as u64;
        let stats = showcase.apply(batch).await.expect("batch applies");
        assert_eq!(
            stats,
            ApplyStats {
                applied: n,
                stale: 0
            }
        );
        let again = showcase.apply(batch).await.expect("repeat applies");
        assert_eq!(
            again,
            ApplyStats {
                applied: 0,
                stale: n
            }
        );
    }
    assert_eq!(showcase.count().await.unwrap(), 1301);
    assert_eq!(showcase.history_count().await.unwrap(), 1301);
    let last = showcase
        .current("birth_certificate", &pinfl(1200))
        .await
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].offset, 1200);
}

/// A batch the database refuses part-way (here a trigger refuses one
/// history row, after the current table took the batch's upserts) leaves
/// nothing of itself, and the connection it ran on is clean for the next
/// batch: on SQLite the batch is one text from BEGIN to COMMIT, so a failure
/// inside it must be rolled back by hand.
#[tokio::test]
async fn a_batch_refused_part_way_leaves_nothing_and_the_next_applies() {
    let bus = TestBus::start();
    let showcase = open_showcase(&bus, "showcase.db").await;
    let db = showcase.database();
    let first: Vec<IngestedRecord> = (0..3u32)
        .map(|n| ingested(&pinfl(n), 1, i64::from(n)))
        .collect();
    showcase.apply(&first).await.expect("first batch applies");

    let poison = pinfl(99);
    let refuse: &[&str] = match db.backend {
        Backend::Sqlite => &["CREATE TRIGGER refuse BEFORE INSERT ON showcase_history \
             WHEN NEW.subject_id = '{poison}' BEGIN SELECT RAISE(ABORT, 'refused'); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
               IF NEW.subject_id = '{poison}' THEN RAISE EXCEPTION 'refused'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse BEFORE INSERT ON showcase_history \
             FOR EACH ROW EXECUTE FUNCTION refuse()",
        ],
    };
    for statement in refuse {
        let statement = statement.replace("{poison}", &poison);
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let second = vec![ingested(&pinfl(0), 2, 10), ingested(&poison, 1, 11)];
    // Every pooled connection gets the chance to be left in a bad state.
    for _ in 0..10 {
        showcase
            .apply(&second)
            .await
            .expect_err("the trigger refuses");
    }
    let current = showcase
        .current("birth_certificate", &pinfl(0))
        .await
        .unwrap();
    assert_eq!(
        current[0].record().unwrap().version,
        1,
        "nothing of the refused batch"
    );
    assert!(
        showcase
            .current("birth_certificate", &poison)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(showcase.count().await.unwrap(), 3);
    assert_eq!(showcase.history_count().await.unwrap(), 3);

    let allow = match db.backend {
        Backend::Sqlite => "DROP TRIGGER refuse",
        Backend::Postgres => "DROP TRIGGER refuse ON showcase_history",
    };
    sqlx::query(allow).execute(&db.pool).await.unwrap();
    for _ in 0..10 {
        showcase
            .apply(&second)
            .await
            .expect("the batch applies once allowed");
    }
    let current = showcase
        .current("birth_certificate", &pinfl(0))
        .await
        .unwrap();
    assert_eq!(current[0].record().unwrap().version, 2);
    assert_eq!(showcase.count().await.unwrap(), 4);
    assert_eq!(showcase.history_count().await.unwrap(), 5);
}

/// Concurrent reads share statements (crates/store/src/current_reads.rs):
/// each caller still gets exactly its own subject's records of its own
/// type, in record-key order, and nothing when there are none.
#[tokio::test]
async fn concurrent_reads_each_get_their_own_records() {
    let bus = TestBus::start();
    let showcase = open_showcase(&bus, "showcase.db").await;
    let mut batch = Vec::new();
    for n in 0..40u32 {
        // Citizen n has n % 4 birth records, keys in reverse order of offset.
        for k in 0..n % 4 {
            let mut item = ingested(&pinfl(n), 1, i64::from(n * 10 + 3 - k));
            item.record.record_key = format!("key-{k}");
            item.envelope = item.record.encode_to_vec().into();
            batch.push(item);
        }
    }
    // Another type for citizen 5 must not show among their births.
    let mut marriage = ingested(&pinfl(5), 1, 999);
    marriage.record.record_type = "marriage_certificate".into();
    marriage.envelope = marriage.record.encode_to_vec().into();
    batch.push(marriage);
    showcase.apply(&batch).await.expect("batch applies");

    let lookups = (0..40u32).map(|n| {
        let showcase = showcase.clone();
        async move {
            let births = showcase.current("birth_certificate", &pinfl(n)).await;
            (n, births.expect("read answers"))
        }
    });
    // Among them, a key no database can hold: not found, and no harm to
    // the lookups that share its statement.
    let nul = showcase.current("birth_certificate", "1234\u{0}");
    let (answers, nul) = tokio::join!(futures::future::join_all(lookups), nul);
    assert!(nul.expect("a NUL key is just not found").is_empty());
    for (n, births) in answers {
        let records: Vec<_> = births.iter().map(|s| s.record().unwrap()).collect();
        let keys: Vec<&str> = records.iter().map(|r| r.record_key.as_str()).collect();
        let expected: Vec<String> = (0..n % 4).map(|k| format!("key-{k}")).collect();
        assert_eq!(keys, expected, "citizen {n}");
        for record in &records {
            assert_eq!(record.subject_id, pinfl(n));
            assert_eq!(record.record_type, "birth_certificate");
        }
    }
    let marriages = showcase
        .current("marriage_certificate", &pinfl(5))
        .await
        .unwrap();
    assert_eq!(marriages.len(), 1);
    assert_eq!(marriages[0].offset, 999);
    // Keys travel as JSON: quotes and backslashes are data, not syntax.
    let odd = showcase
        .current("birth_certificate", "a\"], [\"b\\")
        .await
        .expect("an odd key is just not found");
    assert!(odd.is_empty());
}

/// A write abandoned by its caller (shutdown, a dropped task) from at once
/// to after it finished leaves all of its batch or none, and the writer's
/// connection, the only one on SQLite, serves the next batch at once: a
/// text abandoned between its BEGIN and COMMIT must not leave its
/// transaction open on the connection (without `close_on_drop` in
/// crates/store/src/showcase_batch.rs this test fails).
#[tokio::test]
async fn a_write_abandoned_at_any_point_leaves_its_batch_whole_or_absent() {
    const RECORDS: i64 = 1_500;
    let bus = TestBus::start();
    let showcase = open_showcase(&bus, "showcase.db").await;
    let db = showcase.database();
    let mut abandoned = 0;
    for (round, micros) in [0u64, 20, 100, 400, 1_500, 5_000, 20_000, 80_000]
        .into_iter()
        .enumerate()
    {
        // Offsets tell each round's batch apart: round r holds r·10⁴ + i.
        let first = round as i64 * 10_000;
        let batch: Vec<IngestedRecord> = (0..RECORDS)
            .map(|i| ingested(&pinfl((first + i) as u32), 1, first + i))
            .collect();
        let write = showcase.apply(&batch);
        match tokio::time::timeout(std::time::Duration::from_micros(micros), write).await {
            Ok(applied) => {
                applied.expect("a write left to finish applies");
            }
            Err(_) => abandoned += 1,
        }
        let after = vec![ingested(&pinfl(900_000 + round as u32), 1, first + 9_999)];
        showcase
            .apply(&after)
            .await
            .expect("the next batch applies after an abandoned one");
        let stored = history_in(db, first, RECORDS).await;
        assert!(
            stored == 0 || stored == RECORDS,
            "round {round} (abandoned after {micros} µs): {stored} of {RECORDS} rows"
        );
    }
    assert!(
        abandoned > 0,
        "no write was abandoned: the test proves nothing"
    );
    // An abandoned write may still commit after its round was counted (a
    // server finishes a statement its client dropped): whole, then.
    for round in 0..8 {
        let stored = history_in(db, round * 10_000, RECORDS).await;
        assert!(
            stored == 0 || stored == RECORDS,
            "round {round} at the end: {stored} of {RECORDS} rows"
        );
    }
}

/// History rows whose offsets are `first..first + len`.
async fn history_in(db: &govbus_store::Database, first: i64, len: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM showcase_history WHERE kafka_offset >= $1 AND kafka_offset < $2",
    )
    .bind(first)
    .bind(first + len)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}
