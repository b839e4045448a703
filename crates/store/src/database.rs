//! Connecting to the configured database and bringing its schema up to date.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    AnyPool, Executor as _,
    any::{AnyConnectOptions, AnyPoolOptions},
};

use crate::checkpointer::checkpoint_in_background;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database url {0:?} must start with sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("stored envelope does not decode: {0}")]
    Corrupt(#[from] prost::DecodeError),
    #[error("the showcase reader has stopped")]
    ReaderStopped,
    /// A checkpoint that was to make every commit durable could not
    /// complete (another process's checkpoint, readers that outlasted
    /// `busy_timeout`); nothing is lost, it may be tried again.
    #[error(
        "the write-ahead log is not synced yet ({checkpointed} of {log} frames copied; \
         blocked by a writer, a reader or another checkpoint: {blocked})"
    )]
    NotSynced {
        blocked: bool,
        log: i64,
        checkpointed: i64,
    },
    /// One failure of a statement that answered several callers.
    #[error("{0}")]
    Shared(std::sync::Arc<StoreError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The OpenTelemetry `db.system.name` of the backend.
    pub fn system_name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgresql",
        }
    }

    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.to_string()))
        }
    }
}

/// The VALUES list of a multi-row INSERT of `rows` rows of `columns`
/// parameters each: `($1, $2, …), …` on PostgreSQL, `(?, ?, …), …` on
/// SQLite, where sqlx looks every parameter's name up in a list as long as
/// the statement's named parameters (quadratic: 7 % of ingest CPU at 6,000
/// parameters), and anonymous ones have none. One statement for many rows
/// instead of one per row: each statement is a round trip to the database.
pub(crate) fn values_placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => sql.push_str(&format!("${}", row * columns + column + 1)),
            }
        }
        sql.push(')');
    }
    sql
}

/// A transaction from [`Database::begin_write`]; the turn to write is given
/// up when it commits or is dropped (rolled back).
pub struct WriteTransaction {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTransaction {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl std::ops::Deref for WriteTransaction {
    type Target = sqlx::Transaction<'static, sqlx::Any>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// The file of a SQLite URL; `None` for a database in memory.
fn sqlite_file(url: &str) -> Option<&std::path::Path> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    let in_memory = path.is_empty() || path == ":memory:" || url.contains("mode=memory");
    (!in_memory).then(|| std::path::Path::new(path))
}

/// SQLite creates the file but not its folder.
fn create_parent_dir(url: &str) -> Result<(), StoreError> {
    let Some(path) = sqlite_file(url) else {
        return Ok(());
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Io {
            path: parent.display().to_string(),
            source: e,
        })?;
    }
    Ok(())
}

/// The name of the thread that runs the ingest writer's SQLite statements
/// (sqlx runs each connection on a thread of its own), so that `top -H`,
/// `perf` and `/proc/<pid>/task/*/comm` tell the one serial stage of the
/// ingest from the readers' and the audit trail's `sqlx-sqlite-worker-<n>`
/// threads. At most 15 bytes: Linux keeps no more of a thread's name.
pub(crate) const SQLITE_WRITER_THREAD: &str = "showcase-writer";

/// Every SQLite connection's settings, in this order. WAL lets queries run
/// while the consumer writes; synchronous=FULL because Kafka offsets advance
/// only after a commit, so a commit must survive power loss. Checkpoints
/// run in the background (`checkpointer.rs`) and keep up with the WAL's
/// end, but under a steady writer SQLite never starts the WAL from its top
/// again until one commit crosses the auto-checkpoint bound and
/// checkpoints itself — copying what arrived since the last background
/// round and syncing the database file, which every answer waiting on that
/// audit group commit waits for too (9–20 ms before the background synced
/// its own copies). At 10,000 frames that came every ~0.45 s at half load
/// and made the p99; at 100,000 (a WAL of up to 400 MB at 4 KiB pages,
/// 800 MB for a showcase of 8 KiB pages) it comes a tenth as often
/// (docs/PROFILING.md). Page look-ups stay cheap:
/// a reader searches only the frames after the last checkpoint.
const SQLITE_PRAGMAS: [(&str, &str); 5] = [
    ("journal_mode", "WAL"),
    ("synchronous", "FULL"),
    ("busy_timeout", "10000"),
    ("wal_autocheckpoint", "100000"),
    ("foreign_keys", "ON"),
];

/// A pool on one of the supported backends.
#[derive(Debug, Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
    /// PostgreSQL only: the native driver, for what sqlx's `Any` cannot
    /// bind (arrays). Lazy: it connects at its first statement.
    native_postgres: Option<sqlx::PgPool>,
    /// SQLite only: the native driver, for the ingest writer's prepared
    /// batches (`Any` copies every bound value once more). Lazy too.
    native_sqlite: Option<sqlx::SqlitePool>,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Held by each checkpoint this process runs: SQLite refuses a second
    /// one while one is under way (busy, without waiting).
    checkpoints: Arc<tokio::sync::Mutex<()>>,
    /// Dropped with the last clone: stops the background checkpoints.
    _checkpointer: tokio::sync::mpsc::Sender<()>,
}

/// SQLite's own default page size, for databases of small rows (the audit
/// trail, consents, the adapter's outbox and inbox).
pub(crate) const SQLITE_DEFAULT_PAGE_SIZE: u32 = 4096;

impl Database {
    /// Connects, creating a SQLite file of `SQLITE_DEFAULT_PAGE_SIZE` pages
    /// if it does not exist yet.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_page_size(url, SQLITE_DEFAULT_PAGE_SIZE).await
    }

    /// Connects; a SQLite file created now gets pages of `page_size` bytes
    /// (a power of two, 512 to 65,536). SQLite fixes the page size when it
    /// first writes the file, and in WAL mode never changes it after: an
    /// existing database keeps its own, whatever is asked here.
    /// PostgreSQL ignores it.
    pub(crate) async fn connect_with_page_size(
        url: &str,
        page_size: u32,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        if backend == Backend::Sqlite {
            create_parent_dir(&url)?;
        }
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // One writer at a time either way; readers share the WAL.
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            // A query that cannot get a connection fails fast (UNAVAILABLE to
            // callers) rather than queueing behind a dead database.
            .acquire_timeout(Duration::from_secs(3))
            // No ping before every use: it cost a round trip per query (a
            // thread hand-off on SQLite, a network trip on PostgreSQL). A
            // dead connection fails its statement instead, which callers
            // see as UNAVAILABLE, and the pool replaces it.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // First: `journal_mode = WAL` writes the file's header.
                        let pragma = format!("PRAGMA page_size = {page_size}");
                        conn.execute(sqlx::AssertSqlSafe(pragma)).await?;
                        for (name, value) in SQLITE_PRAGMAS {
                            let pragma = format!("PRAGMA {name} = {value}");
                            conn.execute(sqlx::AssertSqlSafe(pragma)).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let native_postgres = match backend {
            // Only the ingest writer uses it, one statement at a time.
            Backend::Postgres => Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(3))
                    .test_before_acquire(false)
                    .connect_lazy(&url)?,
            ),
            Backend::Sqlite => None,
        };
        let native_sqlite = match backend {
            // Only the ingest writer uses it, one text at a time, so one
            // connection: its page cache stays valid from one batch to the
            // next. With two, the pool handed them out in turn, and each
            // batch found its connection's cache stale (the other had
            // written since) and read its pages again: 10 % more `pread`s,
            // and in quick bench runs 57 against 50 µs of CPU per ingested
            // record (docs/PROFILING.md).
            Backend::Sqlite => Some(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(3))
                    .test_before_acquire(false)
                    .connect_lazy_with(
                        SQLITE_PRAGMAS.iter().fold(
                            // sqlx sends `page_size` before `journal_mode`.
                            sqlx::sqlite::SqliteConnectOptions::from_str(&url)?
                                .pragma("page_size", page_size.to_string())
                                .thread_name(|_| SQLITE_WRITER_THREAD.to_string()),
                            |options, (name, value)| options.pragma(*name, *value),
                        ),
                    ),
            ),
            Backend::Postgres => None,
        };
        let (checkpointer, stop) = tokio::sync::mpsc::channel(1);
        let checkpoints = Arc::<tokio::sync::Mutex<()>>::default();
        if backend == Backend::Sqlite {
            tokio::spawn(checkpoint_in_background(
                pool.clone(),
                checkpoints.clone(),
                sqlite_file(&url).map(Into::into),
                stop,
            ));
        }
        Ok(Self {
            pool,
            backend,
            native_postgres,
            native_sqlite,
            writer: Default::default(),
            checkpoints,
            _checkpointer: checkpointer,
        })
    }

    /// The native PostgreSQL pool of this database; `None` on SQLite.
    pub(crate) fn native_postgres(&self) -> Option<&sqlx::PgPool> {
        self.native_postgres.as_ref()
    }

    /// Closes every pool of this database (the native ones too), waiting
    /// for connections in use to be given back.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(pool) = &self.native_postgres {
            pool.close().await;
        }
        if let Some(pool) = &self.native_sqlite {
            pool.close().await;
        }
    }

    /// SQLite: copies the whole write-ahead log into the database file,
    /// on the ingest writer's connection, and so makes every commit before
    /// it durable, those made with `synchronous=NORMAL` too: SQLite syncs
    /// the log before it copies any of it, and the database file after.
    /// Nothing to do on PostgreSQL.
    pub(crate) async fn checkpoint_all(&self) -> Result<(), StoreError> {
        let Some(pool) = &self.native_sqlite else {
            return Ok(());
        };
        let _round = self.checkpoints.lock().await;
        // FULL waits (busy_timeout) for the writer and for readers of
        // older snapshots; busy = 1 when it could not copy everything, or
        // another process was checkpointing.
        let (busy, log, checkpointed): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(FULL)")
                .fetch_one(pool)
                .await?;
        if busy != 0 || checkpointed != log {
            return Err(StoreError::NotSynced {
                blocked: busy != 0,
                log,
                checkpointed,
            });
        }
        Ok(())
    }

    /// The native SQLite pool of this database; `None` on PostgreSQL.
    pub(crate) fn native_sqlite(&self) -> Option<&sqlx::SqlitePool> {
        self.native_sqlite.as_ref()
    }

    /// Begins a transaction that writes. On SQLite it first waits for this
    /// process's turn and holds it until the commit: SQLite lets one writer
    /// in at a time and makes the others sleep and retry (busy_timeout) in
    /// steps up to 100 ms; with the audit writer, the audit publisher and
    /// ingest all writing, that showed as 200 ms latency tails in the
    /// benchmark. Queued here, a writer starts as soon as the previous one
    /// commits. PostgreSQL writers run in parallel: no turn.
    ///
    /// On SQLite the transaction takes the write lock at its start (`BEGIN
    /// IMMEDIATE`): the turn only orders this `Database`'s writers, and
    /// another pool or process on the same file (an agency system beside
    /// its adapter's inbox and outbox) may write too. A deferred
    /// transaction that reads before it writes then fails at its first
    /// write with "database is locked" — SQLite cannot wait there, the
    /// snapshot it read is stale — where an immediate one waits for the
    /// other writer (busy_timeout) before it reads anything.
    pub async fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let turn = self.write_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTransaction { tx, _turn: turn })
    }

    /// A connection of this database kept out of the pool, for a task that
    /// uses one all the time (coalesced reads, the audit writer): the pool
    /// pings every connection it takes back (a hand-off to SQLite's thread,
    /// a round trip on PostgreSQL) and a kept connection keeps its page
    /// cache. Its holder drops it after an error; the pool opens a
    /// replacement for the next caller.
    pub async fn detached(&self) -> Result<sqlx::AnyConnection, StoreError> {
        Ok(self.pool.acquire().await?.detach())
    }

    /// This process's turn to write (SQLite only; see `begin_write`).
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writer.clone().lock_owned().await),
            Backend::Postgres => None,
        }
    }

    /// Applies the migrations of `sqlite` or `postgres` flavour, whichever
    /// matches the backend.
    pub async fn migrate(
        &self,
        sqlite: &sqlx::migrate::Migrator,
        postgres: &sqlx::migrate::Migrator,
    ) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlite.run(&self.pool).await?,
            Backend::Postgres => postgres.run(&self.pool).await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::*;

    /// The settings a connection reports, by `SQLITE_PRAGMAS`' names (a
    /// macro: the two pools' connections are of different types).
    macro_rules! settings {
        ($conn:expr) => {{
            let mut values = Vec::new();
            for (name, _) in SQLITE_PRAGMAS {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
                    .fetch_one(&mut *$conn)
                    .await
                    .expect("pragma");
                let value = row
                    .try_get::<String, _>(0)
                    .or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))
                    .expect("pragma value");
                values.push(value.to_lowercase());
            }
            values
        }};
    }

    /// The ingest writer's native connections are as durable as the rest:
    /// WAL, synchronous=FULL (2), and the same waits and checkpoints.
    #[tokio::test]
    async fn both_sqlite_pools_run_with_the_same_settings() {
        let (_dir, url) = crate::test_databases::temp_sqlite("settings.db");
        let db = Database::connect(&url).await.expect("connect");
        let expected = ["wal", "2", "10000", "100000", "1"]
            .map(String::from)
            .to_vec();
        let mut any = db.pool.acquire().await.expect("any connection");
        assert_eq!(settings!(any), expected);
        let native = db.native_sqlite().expect("native pool on SQLite");
        let mut native = native.acquire().await.expect("native connection");
        assert_eq!(settings!(native), expected);
    }

    /// An operator looking at the process's threads finds the ingest
    /// writer's by name. (Other tests of this binary may hold writers of
    /// their own meanwhile, so the check is that one is there, not how many:
    /// nothing else names a thread so.)
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_ingest_writer_runs_on_a_thread_named_for_it() {
        let (_dir, url) = crate::test_databases::temp_sqlite("named.db");
        let db = Database::connect(&url).await.expect("connect");
        let native = db.native_sqlite().expect("native pool on SQLite");
        let _held = native.acquire().await.expect("native connection");
        let named = std::fs::read_dir("/proc/self/task")
            .expect("threads")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .any(|name| name.trim_end() == SQLITE_WRITER_THREAD);
        assert!(named, "no thread named {SQLITE_WRITER_THREAD}");
    }

    /// The bundled SQLite is built as `.cargo/config.toml` asks: without
    /// memory statistics, whose mutex every SQLite allocation would take.
    #[tokio::test]
    async fn sqlite_is_built_without_memory_statistics() {
        let (_dir, url) = crate::test_databases::temp_sqlite("options.db");
        let db = Database::connect(&url).await.expect("connect");
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&db.pool)
            .await
            .expect("compile options");
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    async fn page_size(db: &Database) -> i64 {
        sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&db.pool)
            .await
            .expect("page size")
    }

    /// A new showcase gets pages that hold its envelopes, the audit trail's
    /// own database SQLite's default; a file made before keeps its pages
    /// when opened as a showcase, and opens whole.
    #[tokio::test]
    async fn a_page_size_applies_to_new_files_only() {
        let (_dir, showcase_url) = crate::test_databases::temp_sqlite("showcase.db");
        let showcase = crate::Showcase::open(&showcase_url)
            .await
            .expect("showcase");
        let showcase_pages = i64::from(crate::showcase::SHOWCASE_PAGE_SIZE);
        assert_eq!(page_size(showcase.database()).await, showcase_pages);
        let native: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(showcase.database().native_sqlite().expect("native pool"))
            .await
            .expect("native page size");
        assert_eq!(native, showcase_pages);

        let (_dir, audit_url) = crate::test_databases::temp_sqlite("audit.db");
        crate::AuditLog::open(&audit_url).await.expect("audit");
        let audit = Database::connect(&audit_url).await.expect("audit again");
        assert_eq!(page_size(&audit).await, i64::from(SQLITE_DEFAULT_PAGE_SIZE));

        let (_dir, old_url) = crate::test_databases::temp_sqlite("old.db");
        let old = Database::connect(&old_url).await.expect("old file");
        sqlx::query("CREATE TABLE earlier (x INTEGER)")
            .execute(&old.pool)
            .await
            .expect("a first write");
        old.close().await;
        let reopened = crate::Showcase::open(&old_url).await.expect("reopened");
        assert_eq!(
            page_size(reopened.database()).await,
            i64::from(SQLITE_DEFAULT_PAGE_SIZE)
        );
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&reopened.database().pool)
            .await
            .expect("integrity check");
        assert_eq!(check, "ok");
    }

    /// A write transaction that reads first, while another pool on the same
    /// file writes: the other writer waits for it, and neither fails.
    #[tokio::test]
    async fn a_write_that_reads_first_survives_a_writer_from_another_pool() {
        let (_dir, url) = crate::test_databases::temp_sqlite("two-pools.db");
        let ours = Database::connect(&url).await.expect("connect");
        let theirs = Database::connect(&url).await.expect("connect again");
        sqlx::query("CREATE TABLE notes (by TEXT NOT NULL)")
            .execute(&ours.pool)
            .await
            .expect("table");
        let mut tx = ours.begin_write().await.expect("begin");
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut **tx)
            .await
            .expect("read");
        assert_eq!(seen, 0);
        let other = tokio::spawn(async move {
            sqlx::query("INSERT INTO notes (by) VALUES ('theirs')")
                .execute(&theirs.pool)
                .await
        });
        // Long enough for the other write to commit, if nothing holds it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("INSERT INTO notes (by) VALUES ('ours')")
            .execute(&mut **tx)
            .await
            .expect("our write after our read");
        tx.commit().await.expect("commit");
        other.await.expect("task").expect("their write, after ours");
        let by: Vec<String> = sqlx::query_scalar("SELECT by FROM notes ORDER BY rowid")
            .fetch_all(&ours.pool)
            .await
            .expect("notes");
        assert_eq!(by, ["ours", "theirs"]);
    }

    /// A sync asked for while this process's background checkpoint copies
    /// a large log waits for it and completes: SQLite itself would refuse
    /// it as busy at once, without waiting (checked: with the turn taken
    /// out of `checkpoint_all` this fails).
    #[tokio::test]
    async fn a_sync_waits_for_the_background_checkpoint_under_way() {
        use crate::{Durability, Showcase, showcase_batch::tests::batch};

        let (_dir, url) = crate::test_databases::temp_sqlite("showcase.db");
        let showcase = Showcase::open(&url).await.expect("showcase");
        let db = showcase.database().clone();
        // Whatever the background copied so far is left to it; then ~30 MB
        // of log it has not seen.
        let turn = db.checkpoints.clone().lock_owned().await;
        for from in (0..20_000).step_by(500) {
            showcase
                .apply_prepared(
                    &showcase.prepare(&batch(from, from + 500)),
                    Durability::Deferred,
                )
                .await
                .expect("batch applies");
        }
        let pool = db.pool.clone();
        let round = tokio::spawn(async move {
            let _turn = turn;
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
                .expect("background round");
        });
        // Let the round reach SQLite (its copy takes far longer): without
        // the turn, the sync would then meet SQLite's checkpoint lock.
        tokio::time::sleep(Duration::from_millis(10)).await;
        showcase
            .sync()
            .await
            .expect("the sync waits, then completes");
        round.await.expect("round");
    }
}
