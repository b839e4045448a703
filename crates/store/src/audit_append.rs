//! Appending to the audit trail: the hash chain grows by one multi-row
//! INSERT per group of entries, on a connection the writer keeps.

use crate::{
    Database, StoreError,
    audit::{APPEND_ROWS_PER_STATEMENT, AuditEntry, ChainedEntry, ENTRY_COLUMNS, entry_hash},
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

    /// Appends entries after `head` (seq, hash) in one transaction and
    /// returns them as chained, the new head last. The caller serialises
    /// appends to one chain.
    pub async fn append(
        &mut self,
        chain: &str,
        head: (i64, Vec<u8>),
        entries: Vec<AuditEntry>,
    ) -> Result<Vec<ChainedEntry>, StoreError> {
        let (mut seq, mut prev) = head;
        let chained: Vec<ChainedEntry> = entries
            .into_iter()
            .map(|entry| {
                seq += 1;
                let entry_hash = entry_hash(chain, seq, &prev, &entry);
                let prev_hash = std::mem::replace(&mut prev, entry_hash.clone());
                ChainedEntry {
                    chain: chain.to_string(),
                    seq,
                    entry,
                    prev_hash,
                    entry_hash,
                }
            })
            .collect();
        let mut statements = Vec::new();
        for chunk in chained.chunks(APPEND_ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_log ({ENTRY_COLUMNS}) VALUES {}",
                crate::database::values_placeholders(self.db.backend, chunk.len(), 15)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for c in chunk {
                let e = &c.entry;
                query = query
                    .bind(chain)
                    .bind(c.seq)
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
                    .bind(c.prev_hash.as_slice())
                    .bind(c.entry_hash.as_slice());
            }
            statements.push(query);
        }
        let _turn = self.db.write_turn().await;
        let conn = match &mut self.connection {
            Some(conn) => conn,
            None => self.connection.insert(self.db.detached().await?),
        };
        if let Err(e) = write_all(conn, statements).await {
            // Rolled back (a failed transaction is dropped); the connection
            // may be broken: the next append opens another.
            self.connection = None;
            return Err(e.into());
        }
        Ok(chained)
    }
}

async fn write_all(
    conn: &mut sqlx::AnyConnection,
    mut statements: Vec<sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>>,
) -> Result<(), sqlx::Error> {
    use sqlx::Connection as _;
    // The usual group of concurrent requests fits one statement, which
    // commits by itself: one round trip, not three (found by the bench).
    if statements.len() == 1 {
        let statement = statements.pop().expect("one statement");
        return statement.execute(&mut *conn).await.map(drop);
    }
    let mut tx = conn.begin().await?;
    for statement in statements {
        statement.execute(&mut *tx).await?;
    }
    tx.commit().await
}
