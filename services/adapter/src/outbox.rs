//! The database connector: publishes the rows an agency writes to an outbox
//! table in its own database, for systems that cannot call gRPC.
//!
//! The outbox table (name configurable) has the columns
//! `id` (strictly increasing integer), `record_type`, `subject_id`,
//! `record_key`, `version`, `status` ('active' or 'revoked'),
//! `issued_at_unix` (seconds) and `payload` (the protobuf encoding of the
//! record type's message).
//!
//! Progress is the last outbox id handled, kept per connector in
//! `govbus_outbox_progress` in the same database and advanced only after
//! Kafka acknowledged every row up to it, so a restart never skips a row. A
//! crash between the acknowledgement and the progress update re-sends at most
//! one round; record ids are derived from (connector, outbox id), so the
//! re-sent records are identical and the broker stores them once. Rows that
//! cannot be published (bad subject, unknown type …) are recorded with the
//! reason in `govbus_outbox_rejected` and skipped, so one bad row does not
//! stop the agency's stream.

use std::{sync::Arc, time::Duration};

use govbus_core::time::now_micros;
use govbus_proto::v1::{PublishOutcome, Record, RecordStatus};
use govbus_store::{Database, StoreError};
use prost_types::{Any, Timestamp};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{OutboxConfig, publisher::Publisher};

/// The outbox table as an agency creates it in its own database; the
/// connector needs exactly these columns (extra columns are ignored).
pub fn outbox_table_ddl(table: &str, backend: govbus_store::Backend) -> String {
    let (id, blob) = match backend {
        govbus_store::Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
        govbus_store::Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (id {id}, record_type TEXT NOT NULL, \
         subject_id TEXT NOT NULL, record_key TEXT NOT NULL, version BIGINT NOT NULL, \
         status TEXT NOT NULL, issued_at_unix BIGINT NOT NULL, payload {blob} NOT NULL)"
    )
}

const CREATE_PROGRESS: &str = "CREATE TABLE IF NOT EXISTS govbus_outbox_progress (\
     connector TEXT PRIMARY KEY, last_id BIGINT NOT NULL, updated_at_us BIGINT NOT NULL)";
const CREATE_REJECTED: &str = "CREATE TABLE IF NOT EXISTS govbus_outbox_rejected (\
     connector TEXT NOT NULL, outbox_id BIGINT NOT NULL, reason TEXT NOT NULL, \
     rejected_at_us BIGINT NOT NULL, PRIMARY KEY (connector, outbox_id))";

#[derive(Debug)]
pub struct OutboxConnector {
    db: Database,
    select_sql: String,
    connector: String,
    publisher: Arc<Publisher>,
    batch_size: i64,
    poll_interval: Duration,
}

/// One row of the outbox, as read.
struct OutboxRow {
    id: i64,
    record: Result<Record, String>,
}

impl OutboxConnector {
    /// Connects to the agency database and creates the connector's own tables.
    pub async fn open(
        config: &OutboxConfig,
        connector: String,
        publisher: Arc<Publisher>,
    ) -> Result<Self, StoreError> {
        let db = Database::connect(&config.database_url).await?;
        sqlx::query(CREATE_PROGRESS).execute(&db.pool).await?;
        sqlx::query(CREATE_REJECTED).execute(&db.pool).await?;
        let select_sql = format!(
            "SELECT id, record_type, subject_id, record_key, version, status, issued_at_unix, payload \
             FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
            config.table
        );
        Ok(Self {
            db,
            select_sql,
            connector,
            publisher,
            batch_size: config.batch_size,
            poll_interval: config.poll_interval(),
        })
    }

    /// Publishes new rows until `shutdown`; a round in progress is finished.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(connector = %self.connector, "outbox connector started");
        let mut backoff = self.poll_interval;
        while !shutdown.is_cancelled() {
            let pause = match self.round().await {
                Ok(handled) if handled > 0 => {
                    backoff = self.poll_interval;
                    Duration::ZERO
                }
                Ok(_) => self.poll_interval,
                Err(e) => {
                    warn!(connector = %self.connector, error = %e, "outbox round failed; will retry");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    backoff
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        info!(connector = %self.connector, "outbox connector stopped");
    }

    /// Reads, publishes and records progress for one batch of rows. Returns
    /// how many rows were handled (published or rejected).
    pub async fn round(&self) -> Result<usize, OutboxError> {
        let last_id = self.last_id().await?;
        let rows = self.read_after(last_id).await?;
        if rows.is_empty() {
            return Ok(0);
        }

        let mut prepared = Vec::new();
        let mut prepared_ids = Vec::new();
        let mut rejected = Vec::new();
        // The rows that decode are signed together, as one batch.
        let (decoded, undecodable): (Vec<&OutboxRow>, Vec<&OutboxRow>) =
            rows.iter().partition(|row| row.record.is_ok());
        for row in undecodable {
            if let Err(reason) = &row.record {
                rejected.push((row.id, reason.clone()));
            }
        }
        let records = decoded
            .iter()
            .filter_map(|row| row.record.clone().ok())
            .collect();
        for (row, outcome) in decoded.iter().zip(self.publisher.prepare_all(records)) {
            match outcome {
                Ok(p) => {
                    prepared.push(p);
                    prepared_ids.push(row.id);
                }
                Err(refusal) => rejected.push((row.id, refusal.to_string())),
            }
        }

        let results = self.publisher.send(prepared).await;
        // Progress may pass every row before the first one Kafka refused.
        let first_failed = results
            .iter()
            .position(|r| r.outcome != PublishOutcome::Accepted as i32)
            .map(|i| prepared_ids[i]);
        let done_up_to = match first_failed {
            Some(id) => rows.iter().map(|r| r.id).filter(|&r| r < id).max(),
            None => rows.last().map(|r| r.id),
        };
        let Some(done_up_to) = done_up_to else {
            return Err(OutboxError::Kafka(results[0].error.clone()));
        };
        rejected.retain(|(id, _)| *id <= done_up_to);
        self.save_progress(done_up_to, &rejected).await?;
        for (id, reason) in &rejected {
            warn!(connector = %self.connector, outbox_id = id, reason, "outbox row rejected");
        }
        let handled = rows.iter().filter(|r| r.id <= done_up_to).count();
        info!(connector = %self.connector, handled, last_id = done_up_to, "outbox rows published");
        match first_failed {
            Some(_) => Err(OutboxError::Kafka(
                results
                    .iter()
                    .find(|r| !r.error.is_empty())
                    .map(|r| r.error.clone())
                    .unwrap_or_default(),
            )),
            None => Ok(handled),
        }
    }

    async fn last_id(&self) -> Result<i64, StoreError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_id FROM govbus_outbox_progress WHERE connector = $1")
                .bind(self.connector.as_str())
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(last.unwrap_or(0))
    }

    async fn read_after(&self, last_id: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(self.select_sql.clone()))
            .bind(last_id)
            .bind(self.batch_size)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                Ok(OutboxRow {
                    id,
                    record: self.to_record(id, row),
                })
            })
            .collect()
    }

    fn to_record(&self, id: i64, row: &sqlx::any::AnyRow) -> Result<Record, String> {
        let text = |col: &str| {
            row.try_get::<String, _>(col)
                .map_err(|e| format!("{col}: {e}"))
        };
        let int = |col: &str| {
            row.try_get::<i64, _>(col)
                .map_err(|e| format!("{col}: {e}"))
        };
        let record_type = text("record_type")?;
        let version = int("version")?;
        let issued_at = int("issued_at_unix")?;
        let status = match text("status")?.as_str() {
            "active" => RecordStatus::Active,
            "revoked" => RecordStatus::Revoked,
            other => {
                return Err(format!(
                    "status: must be 'active' or 'revoked', got {other:?}"
                ));
            }
        };
        let payload: Vec<u8> = row
            .try_get("payload")
            .map_err(|e| format!("payload: {e}"))?;
        let type_url = self
            .publisher
            .catalog()
            .get(&record_type)
            .map(|spec| spec.type_url())
            .unwrap_or_default();
        Ok(Record {
            record_id: self.record_id(id, issued_at),
            record_type,
            subject_id: text("subject_id")?,
            record_key: text("record_key")?,
            version: u64::try_from(version).unwrap_or(0),
            status: status as i32,
            issued_at: Some(Timestamp {
                seconds: issued_at,
                nanos: 0,
            }),
            payload: Some(Any {
                type_url,
                value: payload,
            }),
            ..Default::default()
        })
    }

    /// A UUID v7 that is the same every time this row is read.
    fn record_id(&self, outbox_id: i64, issued_at_unix: i64) -> String {
        let digest = Sha256::new()
            .chain_update(self.connector.as_bytes())
            .chain_update(outbox_id.to_be_bytes())
            .finalize();
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest[..10]);
        let millis = u64::try_from(issued_at_unix)
            .unwrap_or(0)
            .saturating_mul(1000);
        uuid::Builder::from_unix_timestamp_millis(millis, &random)
            .into_uuid()
            .to_string()
    }

    async fn save_progress(
        &self,
        last_id: i64,
        rejected: &[(i64, String)],
    ) -> Result<(), StoreError> {
        let now = now_micros();
        let mut tx = self.db.pool.begin().await?;
        for (id, reason) in rejected {
            sqlx::query(
                "INSERT INTO govbus_outbox_rejected (connector, outbox_id, reason, rejected_at_us) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (connector, outbox_id) DO NOTHING",
            )
            .bind(self.connector.as_str())
            .bind(*id)
            .bind(reason.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO govbus_outbox_progress (connector, last_id, updated_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (connector) DO UPDATE SET last_id = excluded.last_id, updated_at_us = excluded.updated_at_us",
        )
        .bind(self.connector.as_str())
        .bind(last_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("kafka refused a record: {0}")]
    Kafka(String),
}

impl From<sqlx::Error> for OutboxError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}
