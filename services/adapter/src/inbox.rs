//! The inbox: for agency systems that cannot hold a stream, the adapter
//! writes the records of their subscription into a table of the agency's
//! own database.
//!
//! The inbox is an ordinary subscription (same grants, same minimisation,
//! same durable cursor) whose subscriber is this writer: each batch of
//! deliveries is inserted in one transaction and acknowledged only after it
//! committed, so a crash anywhere re-delivers, never skips. Redelivered rows
//! meet the table's unique (record_id, version) and are ignored: the same
//! record twice gives one row. Rows are inserted in delivery order, which is
//! publication order per subject; `seq` shows that order to the agency.

use std::{sync::Arc, time::Duration};

use govbus_core::time::now_micros;
use govbus_proto::v1::{Delivery, RecordStatus, SubscribeRequest};
use govbus_store::{Backend, Database, StoreError};
use prost::Message;
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    InboxConfig,
    subscription::{DeliveryReceiver, Subscriptions},
};

/// The inbox table. `payload` holds the record type's message with only the
/// granted fields; `envelope` the whole signed (minimised) record, which the
/// agency can verify against the bus CA.
pub fn inbox_table_ddl(table: &str, backend: Backend) -> String {
    let (seq, blob) = match backend {
        Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
        Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (seq {seq}, record_id TEXT NOT NULL, \
         version BIGINT NOT NULL, record_type TEXT NOT NULL, subject_id TEXT NOT NULL, \
         record_key TEXT NOT NULL, status TEXT NOT NULL, issued_at_unix BIGINT NOT NULL, \
         source TEXT NOT NULL, payload {blob} NOT NULL, envelope {blob} NOT NULL, \
         received_at_us BIGINT NOT NULL, UNIQUE (record_id, version))"
    )
}

pub struct InboxWriter {
    db: Database,
    insert_sql: String,
    config: InboxConfig,
    hub: Arc<Subscriptions>,
}

impl std::fmt::Debug for InboxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxWriter")
            .field("table", &self.config.table)
            .finish_non_exhaustive()
    }
}

impl InboxWriter {
    /// Connects to the agency database and creates the inbox table.
    pub async fn open(config: &InboxConfig, hub: Arc<Subscriptions>) -> Result<Self, StoreError> {
        let db = Database::connect(&config.database_url).await?;
        sqlx::query(AssertSqlSafe(inbox_table_ddl(&config.table, db.backend)))
            .execute(&db.pool)
            .await?;
        let insert_sql = format!(
            "INSERT INTO {} (record_id, version, record_type, subject_id, record_key, status, \
             issued_at_unix, source, payload, envelope, received_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (record_id, version) DO NOTHING",
            config.table
        );
        Ok(Self {
            db,
            insert_sql,
            config: config.clone(),
            hub,
        })
    }

    /// Subscribes, writes and acknowledges until `shutdown`; reopens the
    /// subscription whenever its stream ends.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(
            table = self.config.table,
            subscription = self.config.subscription,
            "inbox started"
        );
        let mut pause = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let request = SubscribeRequest {
                subscription: self.config.subscription.clone(),
                record_types: self.config.record_types.clone(),
                filter: None,
            };
            match self.hub.open(request, "inbox").await {
                Ok(deliveries) => {
                    pause = Duration::from_millis(200);
                    self.drain(deliveries, &shutdown).await;
                }
                Err(e) => {
                    warn!(subscription = self.config.subscription, error = %e, "inbox cannot subscribe; will retry");
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        self.db.close().await;
        info!(table = self.config.table, "inbox stopped");
    }

    /// Writes batches until the stream ends or `shutdown`.
    async fn drain(&self, mut deliveries: DeliveryReceiver, shutdown: &CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = deliveries.recv() => item,
            };
            let mut batch = Vec::new();
            let mut ended = None;
            match first {
                None => return,
                Some(Err(status)) => ended = Some(status),
                Some(Ok(delivery)) => batch.push(delivery),
            }
            while ended.is_none() && batch.len() < self.config.batch_size {
                match deliveries.try_recv() {
                    Ok(Ok(delivery)) => batch.push(delivery),
                    Ok(Err(status)) => ended = Some(status),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                if !self.write_until_stored(&batch, shutdown).await {
                    return;
                }
                let cursors: Vec<String> = batch.iter().map(|d| d.cursor.clone()).collect();
                if let Err(e) = self
                    .hub
                    .acknowledge(&self.config.subscription, &cursors)
                    .await
                {
                    // Stored but not acknowledged: delivered again, ignored.
                    warn!(subscription = self.config.subscription, error = %e, "inbox acknowledgement failed");
                }
            }
            if let Some(status) = ended {
                if !shutdown.is_cancelled() {
                    warn!(subscription = self.config.subscription, code = ?status.code(), message = status.message(), "inbox stream ended");
                }
                return;
            }
        }
    }

    /// Retries a failing database until the batch is stored; `false` when
    /// `shutdown` came first (the batch is then delivered again next time).
    async fn write_until_stored(&self, batch: &[Delivery], shutdown: &CancellationToken) -> bool {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.write(batch).await {
                Ok(inserted) => {
                    metrics::counter!("govbus_inbox_rows_total", "table" => self.config.table.clone())
                        .increment(inserted);
                    info!(
                        table = self.config.table,
                        delivered = batch.len(),
                        inserted,
                        "inbox batch stored"
                    );
                    return true;
                }
                Err(e) => {
                    warn!(table = self.config.table, error = %e, "inbox write failed; will retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// One transaction for the batch; returns the rows actually inserted.
    async fn write(&self, batch: &[Delivery]) -> Result<u64, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let mut inserted = 0;
        let received_at = now_micros();
        for delivery in batch {
            let Some(record) = &delivery.record else {
                continue;
            };
            let status = match RecordStatus::try_from(record.status) {
                Ok(RecordStatus::Revoked) => "revoked",
                _ => "active",
            };
            let issued_at = record.issued_at.as_ref().map_or(0, |t| t.seconds);
            let payload = record
                .payload
                .as_ref()
                .map(|p| p.value.as_slice())
                .unwrap_or_default();
            let done = sqlx::query(AssertSqlSafe(self.insert_sql.clone()))
                .bind(record.record_id.as_str())
                .bind(record.version as i64)
                .bind(record.record_type.as_str())
                .bind(record.subject_id.as_str())
                .bind(record.record_key.as_str())
                .bind(status)
                .bind(issued_at)
                .bind(format!(
                    "agency/{}/system/{}",
                    record.source_agency, record.source_system
                ))
                .bind(payload)
                .bind(record.encode_to_vec())
                .bind(received_at)
                .execute(&mut **tx)
                .await?;
            inserted += done.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }
}
