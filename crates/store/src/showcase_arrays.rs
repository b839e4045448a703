//! PostgreSQL: a batch of ingested records written as one statement whose
//! parameters are 12 arrays, one per column.
//!
//! As a multi-row VALUES list a batch of 500 records was a statement of
//! 6,000 parameters, sqlx's `Any` copied every value twice (into an
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
    showcase::{COLUMNS, ON_CONFLICT, TABLE},
};

/// The batch in one statement (which PostgreSQL runs as a transaction of
/// its own), with the columns and conflict rule of the SQLite path. Rows
/// are inserted in key order (`ord` keeps it), the order of row locks of
/// every writer (replicas during a rebalance). The array types follow
/// `COLUMNS`.
static APPLY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO {TABLE} ({COLUMNS}) \
         SELECT {COLUMNS} FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], \
           $5::text[], $6::int8[], $7::bytea[], $8::text[], $9::int8[], $10::int8[], \
           $11::int8[], $12::bytea[]) WITH ORDINALITY AS t({COLUMNS}, ord) \
         ORDER BY ord{ON_CONFLICT}"
    )
});

/// The 12 arrays of `all` (in key order).
pub(crate) fn arguments(all: &[&IngestedRecord]) -> Result<PgArguments, BoxDynError> {
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
    args.add(column(all, |i| i.envelope.as_slice()))?;
    Ok(args)
}

/// Writes a batch bound by `arguments`; returns the rows inserted.
pub(crate) async fn apply(pool: &PgPool, args: PgArguments) -> Result<u64, StoreError> {
    let done = sqlx::query_with(sqlx::AssertSqlSafe(APPLY.as_str()), args)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// One column of the batch, as the array bound for it.
fn column<'a, T>(all: &[&'a IngestedRecord], value: impl Fn(&'a IngestedRecord) -> T) -> Vec<T> {
    all.iter().map(|item| value(item)).collect()
}
