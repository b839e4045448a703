//! Consents, kept beside the showcase they gate.

use sqlx::Row;

use crate::{Database, StoreError};

/// What a consent is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentScope {
    pub subject_id: String,
    pub consumer: String,
    pub record_type: String,
    pub purpose: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub scope: ConsentScope,
    pub granted_at_us: i64,
    pub expires_at_us: i64,
    pub revoked_at_us: Option<i64>,
}

/// The state of a consent at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    Live,
    Missing,
    Revoked,
    Expired,
}

#[derive(Debug, Clone)]
pub struct Consents {
    db: Database,
}

const WHERE_SCOPE: &str = "subject_id = $1 AND consumer = $2 AND record_type = $3 AND purpose = $4";

impl Consents {
    /// Consents live in the showcase database (see `Showcase::database`).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Grants (or renews, after a revocation) a consent until `expires_at_us`.
    pub async fn grant(
        &self,
        scope: &ConsentScope,
        now_us: i64,
        expires_at_us: i64,
    ) -> Result<ConsentRecord, StoreError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO consents (subject_id, consumer, record_type, purpose, granted_at_us, expires_at_us, revoked_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL) \
             ON CONFLICT (subject_id, consumer, record_type, purpose) DO UPDATE SET \
               granted_at_us = excluded.granted_at_us, expires_at_us = excluded.expires_at_us, revoked_at_us = NULL",
        )
        .bind(scope.subject_id.as_str())
        .bind(scope.consumer.as_str())
        .bind(scope.record_type.as_str())
        .bind(scope.purpose.as_str())
        .bind(now_us)
        .bind(expires_at_us)
        .execute(&mut **tx)
        .await?;
        tx.commit().await?;
        Ok(ConsentRecord {
            scope: scope.clone(),
            granted_at_us: now_us,
            expires_at_us,
            revoked_at_us: None,
        })
    }

    /// Revokes a live consent; `None` when there was none to revoke.
    pub async fn revoke(
        &self,
        scope: &ConsentScope,
        now_us: i64,
    ) -> Result<Option<ConsentRecord>, StoreError> {
        let sql = format!(
            "UPDATE consents SET revoked_at_us = $5 WHERE {WHERE_SCOPE} AND revoked_at_us IS NULL"
        );
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.subject_id.as_str())
            .bind(scope.consumer.as_str())
            .bind(scope.record_type.as_str())
            .bind(scope.purpose.as_str())
            .bind(now_us)
            .execute(&mut **tx)
            .await?;
        tx.commit().await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get(scope).await
    }

    pub async fn get(&self, scope: &ConsentScope) -> Result<Option<ConsentRecord>, StoreError> {
        let sql = format!(
            "SELECT granted_at_us, expires_at_us, revoked_at_us FROM consents WHERE {WHERE_SCOPE}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.subject_id.as_str())
            .bind(scope.consumer.as_str())
            .bind(scope.record_type.as_str())
            .bind(scope.purpose.as_str())
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|row| {
            Ok(ConsentRecord {
                scope: scope.clone(),
                granted_at_us: row.try_get(0)?,
                expires_at_us: row.try_get(1)?,
                revoked_at_us: row.try_get(2)?,
            })
        })
        .transpose()
    }

    pub async fn state(
        &self,
        scope: &ConsentScope,
        now_us: i64,
    ) -> Result<ConsentState, StoreError> {
        Ok(match self.get(scope).await? {
            None => ConsentState::Missing,
            Some(c) if c.revoked_at_us.is_some() => ConsentState::Revoked,
            Some(c) if c.expires_at_us <= now_us => ConsentState::Expired,
            Some(_) => ConsentState::Live,
        })
    }
}
