//! SQLite's write-ahead log copied back into the database file in the
//! background, beside the writers rather than inside one of their commits,
//! a little at a time.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use sqlx::AnyPool;

/// The pause after a round that copied something: the next one copies,
/// and its sync flushes, about this long's worth of commits.
const BUSY_ROUND: Duration = Duration::from_millis(10);
/// The pause after a round that found nothing new in the log.
const IDLE_ROUND: Duration = Duration::from_millis(200);

/// Copies the WAL back into the database file in rounds, and syncs what
/// each round copied. SQLite's own auto-checkpoint runs in whichever commit
/// crosses the threshold, and every request waiting on that commit (the
/// audit group commit) waited for the checkpoint too: p99 at half load
/// 10–17 ms with it, 6–7 ms without (docs/PROFILING.md). Ends when the
/// last clone of its `Database` is gone.
///
/// The sync is ours because SQLite's is not enough here: a checkpoint syncs
/// the database file only when it has copied the log up to its end as it
/// stands when the copy is done, which under a steady writer no round does
/// (commits land while it copies). The pages it copied stayed dirty in the
/// kernel — 2 MB a second of the audit trail at half load — until the one
/// commit that crosses `wal_autocheckpoint` and starts the log again synced
/// them all while every answer waited: 15–20 ms, and any commit syncing
/// its log meanwhile waited as long. Synced every 200 ms, each round's
/// flush held up the commit beside it for 2–4 ms; every 10 ms, it is a few
/// hundred kilobytes at most (docs/PROFILING.md).
pub(crate) async fn checkpoint_in_background(
    pool: AnyPool,
    checkpoints: Arc<tokio::sync::Mutex<()>>,
    file: Option<PathBuf>,
    mut stop: tokio::sync::mpsc::Receiver<()>,
) {
    let mut copied_before = 0;
    let mut pause = IDLE_ROUND;
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        if pool.is_closed() {
            return;
        }
        let round = checkpoints.lock().await;
        let reported = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await;
        drop(round);
        let copied = match reported {
            Ok((_busy, _log, copied)) => copied,
            Err(e) => {
                tracing::warn!(error = %e, "wal checkpoint failed");
                pause = IDLE_ROUND;
                continue;
            }
        };
        let wrote = copied_anything(copied_before, copied);
        copied_before = copied;
        pause = if wrote { BUSY_ROUND } else { IDLE_ROUND };
        if wrote
            && let Some(path) = &file
            && let Err(e) = sync_file(path).await
        {
            tracing::warn!(error = %e, path = %path.display(), "database file sync failed");
            // Tried again, but not a hundred times a second.
            pause = IDLE_ROUND;
        }
    }
}

/// Whether a round that reports `copied` frames (SQLite's `nBackfill`)
/// wrote into the database file, the round before having reported
/// `copied_before`: a log started again since reports fewer, a log
/// already copied to its end the same.
fn copied_anything(copied_before: i64, copied: i64) -> bool {
    copied > 0 && copied != copied_before
}

/// Makes what has been written into the database file at `path` durable
/// (`fdatasync`), on the blocking pool — the file's first opening too
/// (SQLite creates it at its first connection).
async fn sync_file(path: &Path) -> std::io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || kept_open(&path)?.sync_data())
        .await
        .map_err(std::io::Error::other)?
}

/// One handle per database file for the rest of the process, never
/// closed: closing any descriptor of a file drops every POSIX lock this
/// process holds on it, SQLite's included (the shared lock each WAL
/// connection keeps, by which another process's last connection knows it
/// must not delete the log) — SQLite's own VFS keeps such descriptors
/// open for the same reason. One descriptor per file ever synced.
fn kept_open(path: &Path) -> std::io::Result<Arc<std::fs::File>> {
    static OPEN: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<PathBuf, Arc<std::fs::File>>>,
    > = std::sync::OnceLock::new();
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = open.get(path) {
        return Ok(handle.clone());
    }
    let handle = Arc::new(open_for_sync(path)?);
    open.insert(path.to_path_buf(), handle.clone());
    Ok(handle)
}

/// Writable: some systems refuse to sync a file opened to read only.
fn open_for_sync(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_wrote_when_it_reports_other_copied_frames() {
        // Idle, copies, nothing new, more, the log started again (fewer),
        // idle after it, copies after it.
        let reports = [0, 120, 120, 300, 0, 0, 40];
        let wrote: Vec<bool> = std::iter::once(0)
            .chain(reports)
            .zip(reports)
            .map(|(before, now)| copied_anything(before, now))
            .collect();
        assert_eq!(wrote, [false, true, false, true, false, false, true]);
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_tried_again_at_the_next_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("showcase.db");
        let err = sync_file(&path).await.expect_err("no such file");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        std::fs::write(&path, b"pages").expect("write");
        sync_file(&path).await.expect("synced once the file exists");
        sync_file(&path)
            .await
            .expect("and again on the kept handle");
        // Every `Database` on the same file shares the one handle.
        let (first, again) = (
            kept_open(&path).expect("open"),
            kept_open(&path).expect("open"),
        );
        assert!(Arc::ptr_eq(&first, &again));
    }
}
