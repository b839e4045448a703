//! Appending to the audit trail: the hash chain grows by one multi-row
//! INSERT per group of entries, on a connection the writer keeps.

use crate::{
    Database, StoreError,
    audit::{APPEND_ROWS_PER_STATEMENT, AuditEntry, ENTRY_COLUMNS, entry_hash},
};

/// Appends to the trail on a connection of its own: the audit writer
/// commits hundreds of times a second, and through the pool each commit
/// was followed by the pool's ping of the connection it took back.
pub struct Appender {
    db: Database,
    connection: Option<sqlx::AnyConnection>,
}

impl Appender {
    pub(crate) fn new(db: Database) -> Self {
        Self {
            db,
            connection: None,
        }
    }

    /// Appends entries after (`seq`, `hash`) in one transaction; returns the
    /// new head. The caller serialises appends to one chain.
    pub async fn append(
        &mut self,
        chain: &str,
        head: (i64, Vec<u8>),
        entries: &[AuditEntry],
    ) -> Result<(i64, Vec<u8>), StoreError> {
        let (mut seq, mut prev) = head;
        let mut statements = Vec::new();
        for chunk in entries.chunks(APPEND_ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_log ({ENTRY_COLUMNS}) VALUES {}",
                crate::database::values_placeholders(self.db.backend, chunk.len(), 15)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                seq += 1;
                let hash = entry_hash(chain, seq, &prev, e);
                query = query
                    .bind(chain)
                    .bind(seq)
                    .bind(e.at_us)
                    .bind(e.caller.as_str())
                    .bind(e.subject_id.as_str())
                    .bind(e.record_type.as_str())
                    .bind(e.purpose.as_str())
                    .bind(e.fields.as_str())
                    .bind(e.decision.as_str())
                    .bind(e.reason.as_str())
                    .bind(e.request_id.as_str())
                    .bind(e.trace_id.as_str())
                    .bind(e.records)
                    .bind(prev.clone())
                    .bind(hash.clone());
                prev = hash;
            }
            statements.push(query);
        }
        let _turn = self.db.write_turn().await;
        let conn = match &mut self.connection {
            Some(conn) => conn,
            None => self.connection.insert(self.db.detached().await?),
        };
        // The usual group of concurrent requests fits one statement, which
        // commits by itself: one round trip, not three (found by the bench).
        let written = if statements.len() == 1 {
            let statement = statements.pop().expect("one statement");
            statement.execute(&mut *conn).await.map(drop)
        } else {
            write_all(conn, statements).await
        };
        if let Err(e) = written {
            // Rolled back (a failed transaction is dropped); the connection
            // may be broken: the next append opens another.
            self.connection = None;
            return Err(e.into());
        }
        Ok((seq, prev))
    }
}

async fn write_all(
    conn: &mut sqlx::AnyConnection,
    statements: Vec<sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>>,
) -> Result<(), sqlx::Error> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await?;
    for statement in statements {
        statement.execute(&mut *tx).await?;
    }
    tx.commit().await
}
