//! PostgreSQL: a batch of ingested records written as one statement whose
//! parameters are arrays, one per column.
//!
//! As a multi-row VALUES list a batch of 500 records was a statement of
//! 11,500 parameters, sqlx's `Any` copied every value twice (into an
//! `AnyValue`, then into the driver's arguments), and each batch length
//! was a statement text of its own to prepare (sqlx keeps 100 per
//! connection). This one text is prepared once. `Any` has no arrays, so
//! it goes through the native driver (`Database::native_postgres`).

use std::sync::LazyLock;

use sqlx::{
    Arguments as _,
    error::BoxDynError,
    postgres::{PgArguments, PgPool},
};

use crate::{
    IngestedRecord, StoreError,
    showcase::Table,
    showcase_batch::{BatchSignature, Row},
};

/// Both tables in one statement (data-modifying CTEs, which PostgreSQL runs
/// as a transaction of its own: one round trip where BEGIN, two INSERTs and
/// COMMIT took four), with the columns and conflict rules of the SQLite
/// path. Row locks are taken current table first, in key order, as by every
/// other writer (replicas during a rebalance): the main query reads
/// `current`, and PostgreSQL runs a data-modifying CTE nobody reads
/// (`history`) after the main query. `rows` come in key order (`ord`
/// keeps it); `newest` marks the version of each record that may become
/// current. The array types follow `Table::History`'s columns. The batch
/// signatures (`signatures`, in digest order) are another CTE nobody reads.
static APPLY: LazyLock<String> = LazyLock::new(|| {
    let (history, current) = (Table::History, Table::Current);
    format!(
        "WITH rows AS (\
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
             $6::int8[], $7::bytea[], $8::text[], $9::int8[], $10::int8[], $11::int8[], \
             $12::bytea[], $13::bytea[], $14::bool[]) \
             WITH ORDINALITY AS t({history_columns}, newest, ord)), \
         signatures AS (INSERT INTO showcase_batch_signatures (digest, signature) \
           SELECT d, b FROM unnest($15::bytea[], $16::bytea[]) WITH ORDINALITY AS s(d, b, ord) \
           ORDER BY ord ON CONFLICT (digest) DO NOTHING), \
         history AS (INSERT INTO {history_table} ({history_columns}) \
           SELECT {history_columns} FROM rows ORDER BY ord{history_conflict}), \
         current AS (INSERT INTO {current_table} ({current_columns}) \
           SELECT {current_columns} FROM rows WHERE newest ORDER BY ord{current_conflict} \
           RETURNING 1) \
         SELECT COUNT(*) FROM current",
        history_table = history.name(),
        history_columns = history.columns(),
        history_conflict = history.conflict(),
        current_table = current.name(),
        current_columns = current.columns(),
        current_conflict = current.conflict(),
    )
});

/// The arrays of `all` (in key order), `is_newest` marking those that may
/// become current, and of the batch's `signatures`.
pub(crate) fn arguments(
    all: &[Row<'_>],
    is_newest: &[bool],
    signatures: &[BatchSignature],
) -> Result<PgArguments, BoxDynError> {
    let mut args = PgArguments::default();
    args.add(column(all, |i| i.record.record_type.as_str()))?;
    args.add(column(all, |i| i.record.subject_id.as_str()))?;
    args.add(column(all, |i| i.record.record_key.as_str()))?;
    args.add(column(all, |i| i.record.version as i64))?;
    args.add(column(all, |i| i.record.record_id.as_str()))?;
    args.add(column(all, |i| i64::from(i.record.status)))?;
    args.add(column(all, |i| i.record.content_hash.as_slice()))?;
    args.add(column(all, |i| i.topic.as_str()))?;
    args.add(column(all, |i| i64::from(i.partition)))?;
    args.add(column(all, |i| i.offset))?;
    args.add(column(all, |i| i.ingested_at_us))?;
    args.add(all.iter().map(|row| &*row.envelope).collect::<Vec<_>>())?;
    args.add(
        all.iter()
            .map(|row| row.signature_digest.as_ref().map(|d| d.as_slice()))
            .collect::<Vec<_>>(),
    )?;
    args.add(is_newest)?;
    args.add(
        signatures
            .iter()
            .map(|(d, _)| d.as_slice())
            .collect::<Vec<_>>(),
    )?;
    args.add(
        signatures
            .iter()
            .map(|(_, s)| s.as_slice())
            .collect::<Vec<_>>(),
    )?;
    Ok(args)
}

/// Writes a batch bound by `arguments`; returns the rows that became
/// current.
pub(crate) async fn apply(pool: &PgPool, args: PgArguments) -> Result<u64, StoreError> {
    let applied: i64 = sqlx::query_scalar_with(sqlx::AssertSqlSafe(APPLY.as_str()), args)
        .fetch_one(pool)
        .await?;
    Ok(applied as u64)
}

/// One column of the batch's records, as the array bound for it.
fn column<'a, T>(all: &[Row<'a>], value: impl Fn(&'a IngestedRecord) -> T) -> Vec<T> {
    all.iter().map(|row| value(row.item)).collect()
}
