//! A showcase written before migration 0006 (envelopes in both tables)
//! reads the same after it: every current record keeps its envelope, now
//! taken from the history, and the content digest does not change.

use crate::{Backend, Database, Showcase};

/// Columns of both showcase tables before migration 0006.
const OLD_COLUMNS: &str = "record_type, subject_id, record_key, version, record_id, status, \
     content_hash, envelope, kafka_topic, kafka_partition, kafka_offset, ingested_at_us";

async fn upgrade_keeps_every_current_record(url: &str) {
    let db = Database::connect(url).await.expect("database");
    let (migrations, before) = match db.backend {
        Backend::Sqlite => (&crate::showcase::SQLITE_MIGRATIONS, 5),
        Backend::Postgres => (&crate::showcase::POSTGRES_MIGRATIONS, 4),
    };
    migrations
        .run_to(before, &db.pool)
        .await
        .expect("old schema");
    // Two versions of one record and one record of another subject, as the
    // old ingest wrote them: every version in the history, the newest also
    // in the current table, each with its envelope.
    let rows = [
        ("51505151234567", 1, b"envelope v1".as_slice(), false),
        ("51505151234567", 2, b"envelope v2", true),
        ("31001900000001", 1, b"another envelope", true),
    ];
    for (subject, version, envelope, current) in rows {
        let tables: &[&str] = if current {
            &["showcase_history", "showcase_records"]
        } else {
            &["showcase_history"]
        };
        for table in tables {
            let sql = format!(
                "INSERT INTO {table} ({OLD_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind("birth_certificate")
                .bind(subject)
                .bind("key")
                .bind(version as i64)
                .bind(format!("id-{version}"))
                .bind(1i64)
                .bind(vec![version as u8; 32])
                .bind(envelope)
                .bind("govbus.records.birth_certificate")
                .bind(0i64)
                .bind(version as i64)
                .bind(1_700_000_000_000_000i64)
                .execute(&db.pool)
                .await
                .expect("old row");
        }
    }
    db.close().await;

    let showcase = Showcase::open(url).await.expect("migrated");
    let reads = showcase.database().pool.clone();
    let current: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT r.subject_id, h.envelope FROM showcase_records AS r \
         JOIN showcase_history AS h ON h.record_type = r.record_type \
          AND h.subject_id = r.subject_id AND h.record_key = r.record_key \
          AND h.version = r.version ORDER BY r.subject_id",
    )
    .fetch_all(&reads)
    .await
    .expect("current records");
    assert_eq!(
        current,
        vec![
            ("31001900000001".to_string(), b"another envelope".to_vec()),
            ("51505151234567".to_string(), b"envelope v2".to_vec()),
        ]
    );
    let digest = showcase.digest().await.expect("digest");
    assert_eq!((digest.current_records, digest.history_records), (2, 3));
    assert_eq!(showcase.count().await.expect("count"), 2);
    assert_eq!(showcase.history_count().await.expect("history"), 3);
}

#[tokio::test]
async fn a_sqlite_showcase_upgrades_without_losing_envelopes() {
    let (_dir, url) = crate::test_databases::temp_sqlite("showcase.db");
    upgrade_keeps_every_current_record(&url).await;
}

#[tokio::test]
async fn a_postgres_showcase_upgrades_without_losing_envelopes() {
    let Some(database) = crate::test_databases::TempPostgres::create("upgrade").await else {
        return;
    };
    upgrade_keeps_every_current_record(&database.url).await;
    database.drop().await;
}
