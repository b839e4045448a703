//! Which of the ingest's commits wait for the disk, and the Kafka offsets
//! that wait for them.
//!
//! A synced commit (`fsync` of SQLite's write-ahead log) was ~2 ms of a
//! batch's ~13 ms turn on the writer, the ingest's slower stage (docs/
//! PROFILING.md). While the consumer is behind, commits are
//! deferred and one synced at least every `SYNC_EVERY`, which makes the
//! ones before it durable too; once it has caught up (a batch that did not
//! fill), the commit is synced at once. A batch's offsets are stored only
//! when every commit up to it is synced: a power loss can undo a deferred
//! commit, and then Kafka hands its records out again.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use govbus_store::Durability;

/// How long commits may go unsynced while the consumer is behind (the
/// next batch's commit after it is synced, so a deferred commit waits at
/// most this and one batch's write). Offsets are stored only once synced,
/// so after a power loss the broker consumes again at most this much more
/// than the auto-commit interval already makes it (`ingest.rs`).
pub(crate) const SYNC_EVERY: Duration = Duration::from_millis(100);

/// Per partition, the offset after the last message handled.
pub(crate) type Positions = BTreeMap<(String, i32), i64>;

/// Offsets of handled batches, held while a commit before them is not
/// synced.
#[derive(Debug, Default)]
pub(crate) struct HeldOffsets {
    positions: Positions,
    /// When the oldest commit not yet synced was made; `None` when every
    /// commit is synced.
    unsynced_since: Option<Instant>,
}

impl HeldOffsets {
    /// How the next batch is to be committed: deferred only while the
    /// consumer is behind (the batch filled up) and the oldest deferred
    /// commit is younger than `SYNC_EVERY`.
    pub(crate) fn commit_for(&self, caught_up: bool, now: Instant) -> Durability {
        let window_open = self
            .unsynced_since
            .is_none_or(|since| now.saturating_duration_since(since) < SYNC_EVERY);
        if caught_up || !window_open {
            Durability::Synced
        } else {
            Durability::Deferred
        }
    }

    /// A batch handled: its positions, and how its records were committed
    /// (`None`: it had none to write). Returns whether the deferred commits
    /// must now be synced on their own (`Showcase::sync`, a checkpoint,
    /// dearer than a synced commit): only when this batch wrote nothing and
    /// the consumer has caught up or the oldest is `SYNC_EVERY` old —
    /// otherwise the next batch's commit will be the synced one.
    pub(crate) fn handled(
        &mut self,
        positions: Positions,
        committed: Option<Durability>,
        caught_up: bool,
        now: Instant,
    ) -> bool {
        self.positions.extend(positions);
        match committed {
            Some(Durability::Synced) => self.unsynced_since = None,
            Some(Durability::Deferred) => {
                self.unsynced_since.get_or_insert(now);
            }
            None => {
                return self.unsynced_since.is_some_and(|since| {
                    caught_up || now.saturating_duration_since(since) >= SYNC_EVERY
                });
            }
        }
        false
    }

    /// Any commit not yet synced.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced_since.is_some()
    }

    /// Every commit so far is durable (`Showcase::sync`).
    pub(crate) fn synced(&mut self) {
        self.unsynced_since = None;
    }

    /// The offsets that may be stored now: all held, once every commit is
    /// synced.
    pub(crate) fn take_storable(&mut self) -> Option<Positions> {
        if self.unsynced_since.is_some() || self.positions.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.positions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, next: i64) -> Positions {
        Positions::from([(("govbus.records.birth".to_string(), partition), next)])
    }

    #[test]
    fn a_batch_that_did_not_fill_is_synced_at_once() {
        let held = HeldOffsets::default();
        assert_eq!(held.commit_for(true, Instant::now()), Durability::Synced);
    }

    #[test]
    fn deferred_offsets_wait_for_a_synced_commit_and_leave_with_it() {
        let start = Instant::now();
        let mut held = HeldOffsets::default();
        assert_eq!(held.commit_for(false, start), Durability::Deferred);
        assert!(!held.handled(at(0, 500), Some(Durability::Deferred), false, start));
        assert_eq!(held.take_storable(), None, "nothing synced yet");

        let later = start + SYNC_EVERY / 2;
        assert_eq!(held.commit_for(false, later), Durability::Deferred);
        // The window passes while this batch is written: the next commit
        // is the synced one, not a checkpoint now.
        let written = start + SYNC_EVERY * 2;
        assert!(!held.handled(at(0, 1000), Some(Durability::Deferred), false, written));
        assert!(!held.handled(at(1, 40), None, false, later));
        assert_eq!(
            held.take_storable(),
            None,
            "a batch with nothing to write waits too"
        );

        // The window is measured from the oldest deferred commit.
        let due = start + SYNC_EVERY;
        assert_eq!(held.commit_for(false, due), Durability::Synced);
        assert!(!held.handled(at(0, 1500), Some(Durability::Synced), false, due));
        let mut expected = at(0, 1500);
        expected.extend(at(1, 40));
        assert_eq!(held.take_storable(), Some(expected));
        assert_eq!(held.take_storable(), None, "taken once");
        assert_eq!(
            held.commit_for(false, due),
            Durability::Deferred,
            "a new window"
        );
    }

    #[test]
    fn deferred_commits_are_synced_alone_once_caught_up_or_too_old() {
        let start = Instant::now();
        let mut held = HeldOffsets::default();
        assert!(
            !held.handled(Positions::new(), None, true, start),
            "nothing to sync"
        );
        assert!(!held.handled(at(0, 500), Some(Durability::Deferred), false, start));
        assert!(held.unsynced());
        assert!(!held.handled(Positions::new(), None, false, start));
        assert!(
            held.handled(Positions::new(), None, true, start),
            "caught up"
        );
        assert!(
            held.handled(Positions::new(), None, false, start + SYNC_EVERY),
            "too old"
        );

        assert!(held.handled(at(0, 510), None, true, start));
        assert_eq!(held.take_storable(), None);
        held.synced();
        assert!(!held.unsynced());
        assert_eq!(held.take_storable(), Some(at(0, 510)));
    }

    #[test]
    fn offsets_of_synced_batches_are_storable_at_once() {
        let mut held = HeldOffsets::default();
        held.handled(at(2, 7), Some(Durability::Synced), false, Instant::now());
        assert_eq!(held.take_storable(), Some(at(2, 7)));
        held.handled(at(2, 9), None, false, Instant::now());
        assert_eq!(
            held.take_storable(),
            Some(at(2, 9)),
            "nothing deferred before it"
        );
    }
}
