//! The entries being replayed now, held by the queue actor alone.
//!
//! They are `retrying` in the counts and in an entry the actor shows, but
//! not marked in the journal (that would be one more write of every row):
//! their rows stay `queued`, which is what they go back to after a crash
//! anyway, and a replay is keyed (SQL) or at least once (payloads).

use std::collections::HashSet;

use super::entry::{Entry, EntryStatus, QueueStats};

/// The ids of the entries in flight.
#[derive(Debug, Default)]
pub(crate) struct InFlight(HashSet<i64>);

impl InFlight {
    /// `ids` are being replayed.
    pub(crate) fn enter(&mut self, ids: impl IntoIterator<Item = i64>) {
        self.0.extend(ids);
    }

    /// `ids` are done: their outcome is in the journal (or given up).
    pub(crate) fn leave(&mut self, ids: &[i64]) {
        for id in ids {
            self.0.remove(id);
        }
    }

    /// The ids, for the next read of due entries to skip.
    pub(crate) fn ids(&self) -> Vec<i64> {
        self.0.iter().copied().collect()
    }

    /// Counts as the journal has them, with the entries in flight moved
    /// from `queued` to `retrying`.
    pub(crate) fn stats(&self, mut journal: QueueStats) -> QueueStats {
        let n = self.0.len() as i64;
        // Never count fewer than zero queued.
        journal.queued = (journal.queued - n).max(0);
        journal.retrying += n;
        journal
    }

    /// An entry as the journal has it, `retrying` while it is in flight.
    pub(crate) fn entry(&self, mut entry: Entry) -> Entry {
        if entry.status == EntryStatus::Queued && self.0.contains(&entry.id) {
            entry.status = EntryStatus::Retrying;
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_entries_count_as_retrying_until_they_leave() {
        let mut set = InFlight::default();
        set.enter([1, 2]);
        let journal = QueueStats {
            queued: 5,
            succeeded: 1,
            ..QueueStats::default()
        };
        assert_eq!(
            set.stats(journal),
            QueueStats {
                queued: 3,
                retrying: 2,
                succeeded: 1,
                dead: 0
            }
        );
        set.leave(&[1]);
        assert_eq!(set.ids(), [2]);
        // Never fewer than zero queued.
        set.enter([3, 4, 5, 6, 7, 8]);
        assert_eq!(set.stats(journal).queued, 0);
    }
}
