//! Databases of a test's own: a SQLite file in a temporary folder, or a
//! database on the PostgreSQL server that `TEST_POSTGRES_URL` names (the
//! PostgreSQL pass of `make test`, which CI always runs). Without the
//! variable the PostgreSQL variants of the store's tests return at once
//! (the SQLite variants always run).

use crate::Database;

/// A SQLite database `file` in a new temporary folder, removed when the
/// folder is dropped: (folder, url).
pub(crate) fn temp_sqlite(file: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = format!("sqlite://{}", dir.path().join(file).display());
    (dir, url)
}

pub(crate) struct TempPostgres {
    server: Database,
    name: String,
    pub(crate) url: String,
}

impl TempPostgres {
    /// A new, empty database; `None` when no server is configured.
    pub(crate) async fn create(label: &str) -> Option<Self> {
        let admin = std::env::var("TEST_POSTGRES_URL").ok()?;
        if admin.is_empty() {
            return None;
        }
        let name = format!(
            "govbus_{label}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let server = Database::connect(&admin).await.expect("postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&server.pool)
            .await
            .expect("create database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(Self { server, name, url })
    }

    pub(crate) async fn drop(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.server.pool)
        .await
        .expect("drop database");
    }
}
