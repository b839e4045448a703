//! The interior ministry's own information system, as far as the demo
//! needs one: it reads the marriages its adapter writes into its inbox
//! table and, where a spouse took a new surname, registers that surname in
//! its address registration — a new version written to its outbox table,
//! which its adapter publishes like any other record.
//!
//! This is agency code, not bus code: it only touches the agency's own
//! database (inbox in, outbox out), exactly what a real system would do.

use std::time::Duration;

use anyhow::{Context, Result};
use govbus_proto::records::{AddressRegistration, MarriageCertificate};
use govbus_store::Database;
use prost::Message;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const CREATE_PROGRESS: &str = "CREATE TABLE IF NOT EXISTS interior_inbox_progress (\
     id INTEGER PRIMARY KEY CHECK (id = 1), last_seq BIGINT NOT NULL)";

/// The surname `subject` carries after the marriage, when it is a new one.
pub fn surname_after(marriage: &MarriageCertificate, subject: &str) -> Option<String> {
    let spouses = [
        (&marriage.spouse_one, &marriage.spouse_one_surname_after),
        (&marriage.spouse_two, &marriage.spouse_two_surname_after),
    ];
    spouses.into_iter().find_map(|(spouse, after)| {
        let spouse = spouse.as_ref()?;
        (spouse.pinfl == subject && !after.is_empty() && after != &spouse.last_name)
            .then(|| after.clone())
    })
}

pub struct InteriorSystem {
    db: Database,
}

impl InteriorSystem {
    pub async fn open(url: &str) -> Result<Self> {
        let db = Database::connect(url).await?;
        sqlx::query(CREATE_PROGRESS).execute(&db.pool).await?;
        Ok(Self { db })
    }

    /// Handles new inbox rows until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let pause = match self.round().await {
                Ok(0) => Duration::from_millis(200),
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    warn!(error = %e, "interior system round failed; will retry");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        self.db.close().await;
    }

    /// One batch of inbox rows; returns how many were read. The surname
    /// updates and the progress commit together.
    async fn round(&self) -> Result<usize> {
        let last: i64 =
            sqlx::query_scalar("SELECT last_seq FROM interior_inbox_progress WHERE id = 1")
                .fetch_optional(&self.db.pool)
                .await?
                .unwrap_or(0);
        let rows = sqlx::query(
            "SELECT seq, subject_id, status, payload FROM govbus_inbox \
             WHERE seq > $1 AND record_type = 'marriage_certificate' ORDER BY seq LIMIT 500",
        )
        .bind(last)
        .fetch_all(&self.db.pool)
        .await?;
        let Some(last_row) = rows.last() else {
            return Ok(0);
        };
        let new_last: i64 = last_row.try_get("seq")?;
        let mut tx = self.db.begin_write().await?;
        let mut renamed = 0;
        for row in &rows {
            let subject: String = row.try_get("subject_id")?;
            let status: String = row.try_get("status")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let marriage = MarriageCertificate::decode(payload.as_slice())
                .context("inbox payload is not a MarriageCertificate")?;
            let Some(surname) = surname_after(&marriage, &subject) else {
                continue;
            };
            if status != "active" {
                continue;
            }
            let current = sqlx::query(
                "SELECT version, payload FROM govbus_outbox \
                 WHERE record_type = 'address_registration' AND subject_id = $1 \
                 ORDER BY version DESC LIMIT 1",
            )
            .bind(subject.as_str())
            .fetch_optional(&mut **tx)
            .await?;
            let Some(current) = current else { continue };
            let version: i64 = current.try_get("version")?;
            let payload: Vec<u8> = current.try_get("payload")?;
            let mut registration = AddressRegistration::decode(payload.as_slice())
                .context("outbox payload is not an AddressRegistration")?;
            let Some(resident) = registration.resident.as_mut() else {
                continue;
            };
            if resident.last_name == surname {
                continue;
            }
            resident.last_name = surname;
            sqlx::query(
                "INSERT INTO govbus_outbox (record_type, subject_id, record_key, version, status, issued_at_unix, payload) \
                 VALUES ('address_registration', $1, 'permanent', $2, 'active', $3, $4)",
            )
            .bind(subject.as_str())
            .bind(version + 1)
            .bind(govbus_core::time::now_micros() / 1_000_000)
            .bind(registration.encode_to_vec())
            .execute(&mut **tx)
            .await?;
            renamed += 1;
        }
        sqlx::query(
            "INSERT INTO interior_inbox_progress (id, last_seq) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET last_seq = excluded.last_seq",
        )
        .bind(new_last)
        .execute(&mut **tx)
        .await?;
        tx.commit().await?;
        if renamed > 0 {
            info!(
                marriages = rows.len(),
                renamed, "interior system registered new surnames from marriages"
            );
        }
        Ok(rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use govbus_proto::records::PersonName;

    fn person(pinfl: &str, last_name: &str) -> Option<PersonName> {
        Some(PersonName {
            pinfl: pinfl.into(),
            last_name: last_name.into(),
            ..Default::default()
        })
    }

    #[test]
    fn only_a_changed_surname_of_the_subject_counts() {
        let marriage = MarriageCertificate {
            spouse_one: person("1", "Karimov"),
            spouse_two: person("2", "Yusupova"),
            spouse_one_surname_after: "Karimov".into(),
            spouse_two_surname_after: "Karimova".into(),
            ..Default::default()
        };
        assert_eq!(surname_after(&marriage, "2"), Some("Karimova".into()));
        assert_eq!(surname_after(&marriage, "1"), None, "unchanged");
        assert_eq!(surname_after(&marriage, "3"), None, "not a spouse");
    }
}
