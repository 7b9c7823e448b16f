//! The change log offsets whose metric values this process has written to an MQTT connection,
//! so that a value written again after a lost PUBACK is counted as a duplicate, exactly
//! (`twinloom_sparkplug_duplicate_records_total`; delivery is at least once, issue #29 item 6).

use std::collections::BTreeMap;

/// A set of change log offsets as disjoint, non-adjacent half-open ranges `start..end`.
///
/// Bounded by what is not yet confirmed: [`Published::forget_below`] drops every offset before
/// the confirmed cursor (those are never read again), so it holds the offsets written since the
/// last PUBACK of a cursor marker — a few ranges (one per stream and session) plus one per hole
/// (a value not written: a dead device's, one buffered when a connection broke).
#[derive(Debug, Default)]
pub(super) struct Published {
    /// `start → end` of each range.
    ranges: BTreeMap<u64, u64>,
}

impl Published {
    /// Whether `offset` was written.
    pub fn contains(&self, offset: u64) -> bool {
        self.ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &end)| offset < end)
    }

    /// Records `offset` as written: `false` when it was already (a duplicate).
    pub fn insert(&mut self, offset: u64) -> bool {
        if self.contains(offset) {
            return false;
        }
        let next = offset + 1;
        let before = self
            .ranges
            .range(..offset)
            .next_back()
            .filter(|(_, end)| **end == offset)
            .map(|(&start, _)| start);
        let after = self.ranges.remove(&next);
        let start = before.unwrap_or(offset);
        self.ranges.insert(start, after.unwrap_or(next));
        true
    }

    /// Forgets every offset below `offset` (the confirmed cursor: never read again).
    pub fn forget_below(&mut self, offset: u64) {
        let mut kept = self.ranges.split_off(&offset);
        if let Some((_, &end)) = self.ranges.iter().next_back()
            && end > offset
        {
            kept.insert(offset, end);
        }
        self.ranges = kept;
    }

    /// How many ranges are held (bounded by the unconfirmed offsets; for tests).
    #[cfg(test)]
    fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_written_twice_are_found_and_ranges_coalesce() {
        let mut set = Published::default();
        for offset in [5, 7, 6, 3, 4, 10] {
            assert!(set.insert(offset), "{offset} is new");
        }
        assert_eq!(set.ranges(), 2, "3..8 and 10..11");
        for offset in [3, 4, 5, 6, 7, 10] {
            assert!(!set.insert(offset), "{offset} again is a duplicate");
        }
        assert!(!set.contains(2) && !set.contains(8) && !set.contains(9));
        set.forget_below(6);
        assert!(!set.contains(5) && set.contains(6) && set.contains(7) && set.contains(10));
        assert_eq!(set.ranges(), 2);
        set.forget_below(11);
        assert_eq!(set.ranges(), 0);
    }
}
