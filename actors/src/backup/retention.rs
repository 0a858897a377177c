//! Retention: which backups to delete, with the semantics of restic's and
//! borg's `forget`/`prune`.
//!
//! A backup is kept when any one rule keeps it:
//!
//! - **`keep_last`**: the newest `keep_last` backups, verified or not.
//! - **`keep_daily`, `keep_weekly`, `keep_monthly`** (generations): walking
//!   from the newest backup to the oldest, the newest backup of each UTC
//!   day (ISO week starting Monday, calendar month) is kept, until that
//!   many days (weeks, months) *that have a backup* are covered. As in
//!   restic and borg, a day with no backup does not use up one of the `N`:
//!   `keep_daily = 7` keeps the newest backup of each of the last 7 days on
//!   which a backup was taken, however far back they reach. Only
//!   **verified** backups count for a generation: a failed or unverified
//!   backup neither fills a day nor is kept for one (the newest verified
//!   backup of that day is kept instead).
//! - **the newest verified backup**, whatever its age: it is the one a
//!   restore or a recovery would use.
//!
//! Everything else is deleted. A rule set to 0 keeps nothing by itself.

use super::meta::{civil_from_days, BackupInfo};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// The retention rules (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many backups are kept.
    pub keep_last: usize,
    /// The newest verified backup of each of the last this many UTC days
    /// that have one.
    pub keep_daily: usize,
    /// The newest verified backup of each of the last this many ISO weeks
    /// (Monday to Sunday, UTC) that have one.
    pub keep_weekly: usize,
    /// The newest verified backup of each of the last this many calendar
    /// months (UTC) that have one.
    pub keep_monthly: usize,
}

impl Retention {
    /// Keep the newest `keep_last` backups, no generations.
    pub fn last(keep_last: usize) -> Retention {
        Retention {
            keep_last,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
        }
    }
}

/// What puts a backup, by its `created_at_ms`, into a day, week or month.
type Bucket = fn(i64) -> i64;

/// The UTC day of `at_ms` (days since 1970-01-01).
fn day(at_ms: i64) -> i64 {
    at_ms.div_euclid(DAY_MS)
}

/// The ISO week of `at_ms`, as the day number of its Monday (1970-01-01
/// was a Thursday, so Monday is 3 days before it).
fn week(at_ms: i64) -> i64 {
    let d = day(at_ms);
    d - (d + 3).rem_euclid(7)
}

/// The calendar month of `at_ms`, as `year * 12 + month`.
fn month(at_ms: i64) -> i64 {
    let (y, m, _) = civil_from_days(day(at_ms));
    y * 12 + i64::from(m)
}

/// The names to delete among `backups` (live ones, any order) under
/// `rules`; the rest is kept. Newest first, by `created_at_ms` then name.
pub fn to_delete(backups: &[BackupInfo], rules: &Retention) -> Vec<String> {
    let mut by_age: Vec<&BackupInfo> = backups.iter().collect();
    by_age.sort_by(|a, b| (b.created_at_ms, &b.name).cmp(&(a.created_at_ms, &a.name)));
    let mut keep = vec![false; by_age.len()];
    for k in keep.iter_mut().take(rules.keep_last) {
        *k = true;
    }
    if let Some(i) = by_age.iter().position(|b| b.is_verified()) {
        keep[i] = true;
    }
    let generations: [(usize, Bucket); 3] = [
        (rules.keep_daily, day),
        (rules.keep_weekly, week),
        (rules.keep_monthly, month),
    ];
    for (count, bucket_of) in generations {
        let mut covered = 0;
        let mut last_bucket = None;
        for (i, b) in by_age.iter().enumerate() {
            if covered == count {
                break;
            }
            if !b.is_verified() {
                continue;
            }
            let bucket = bucket_of(b.created_at_ms);
            if last_bucket != Some(bucket) {
                last_bucket = Some(bucket);
                covered += 1;
                keep[i] = true;
            }
        }
    }
    by_age
        .iter()
        .zip(keep)
        .filter(|(_, kept)| !kept)
        .map(|(b, _)| b.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(at: i64, verified: Option<bool>) -> BackupInfo {
        BackupInfo {
            name: format!("b{at}"),
            label: "manual".into(),
            created_at_ms: at,
            duration_ms: 0,
            size: 0,
            page_count: 0,
            sha256: String::new(),
            sqlite_version: String::new(),
            user_version: 0,
            row_counts: Default::default(),
            restarts: 0,
            verified_at_ms: None,
            verified,
            verify_errors: Vec::new(),
            op_log_seq: None,
            uncompressed_size: None,
        }
    }

    /// `YYYY-MM-DDTHH:MM` (UTC) as ms since the epoch.
    fn at(stamp: &str) -> i64 {
        let n = |r: std::ops::Range<usize>| stamp[r].parse::<i64>().unwrap();
        let (y, m, d, h, min) = (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16));
        // Howard Hinnant's days_from_civil.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        (days * 86_400 + h * 3600 + min * 60) * 1000
    }

    /// A backup named by its UTC time, verified (`ok`) or failed (`bad`).
    fn dated(stamp: &str, ok: bool) -> BackupInfo {
        let mut b = backup(at(stamp), Some(ok));
        b.name = stamp.to_string();
        b
    }

    fn rules(last: usize, daily: usize, weekly: usize, monthly: usize) -> Retention {
        Retention {
            keep_last: last,
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
        }
    }

    #[test]
    fn retention_keeps_newest_and_newest_verified() {
        let all = [
            backup(1, Some(true)),
            backup(2, Some(true)),
            backup(3, Some(false)),
            backup(4, None),
            backup(5, Some(false)),
        ];
        assert_eq!(to_delete(&all, &Retention::last(2)), ["b3", "b1"]);
        assert_eq!(to_delete(&all, &Retention::last(5)), Vec::<String>::new());
        assert_eq!(to_delete(&all[2..], &Retention::last(1)), ["b4", "b3"]);
    }

    #[test]
    fn retention_day_week_month_buckets_are_utc_and_iso() {
        assert_eq!(at("1970-01-01T00:00"), 0);
        // 2024-01-01 is a Monday; 2023-12-31 a Sunday of the week before.
        assert_eq!(week(at("2024-01-01T00:00")), day(at("2024-01-01T00:00")));
        assert_eq!(week(at("2024-01-07T23:59")), day(at("2024-01-01T00:00")));
        assert_ne!(week(at("2023-12-31T23:59")), week(at("2024-01-01T00:00")));
        // ISO week 1 of 2021 starts on Monday 2021-01-04: Jan 1-3 are in
        // the last week of 2020.
        assert_eq!(week(at("2021-01-03T12:00")), week(at("2020-12-28T00:00")));
        assert_eq!(day(at("2024-02-29T23:59")) + 1, day(at("2024-03-01T00:00")));
        assert_eq!(
            month(at("2024-02-29T23:59")) + 1,
            month(at("2024-03-01T00:00"))
        );
        assert_eq!(
            month(at("2023-12-31T23:59")) + 1,
            month(at("2024-01-01T00:00"))
        );
        // Before the epoch too.
        assert_eq!(week(at("1969-12-29T00:00")), week(at("1970-01-04T23:59")));
    }

    /// Each row: the backups (time, verified), the rules (last, daily,
    /// weekly, monthly) and the backups kept.
    #[test]
    fn retention_to_delete_generations_table() {
        type Row = (
            &'static [(&'static str, bool)],
            (usize, usize, usize, usize),
            &'static [&'static str],
        );
        const DAYS: &[(&str, bool)] = &[
            ("2024-03-01T01:00", true),
            ("2024-03-01T13:00", true),
            ("2024-03-02T09:00", true),
            ("2024-03-02T21:00", true),
            ("2024-03-03T10:00", true),
            ("2024-03-05T10:00", true),
        ];
        let table: &[Row] = &[
            // keep_last only.
            (
                DAYS,
                (2, 0, 0, 0),
                &["2024-03-05T10:00", "2024-03-03T10:00"],
            ),
            // Daily: the newest of each of the last 3 days with a backup
            // (03-04 has none and does not count).
            (
                DAYS,
                (1, 3, 0, 0),
                &["2024-03-05T10:00", "2024-03-03T10:00", "2024-03-02T21:00"],
            ),
            // More days than there are: one per day, the newest of each.
            (
                DAYS,
                (0, 30, 0, 0),
                &[
                    "2024-03-05T10:00",
                    "2024-03-03T10:00",
                    "2024-03-02T21:00",
                    "2024-03-01T13:00",
                ],
            ),
            // keep_last and daily overlap: the union is kept.
            (
                DAYS,
                (3, 2, 0, 0),
                &["2024-03-05T10:00", "2024-03-03T10:00", "2024-03-02T21:00"],
            ),
            // Weekly: 2024-03-01..03 (Fri-Sun) is one ISO week, 03-05 the
            // next.
            (
                DAYS,
                (0, 0, 2, 0),
                &["2024-03-05T10:00", "2024-03-03T10:00"],
            ),
            // Monthly across a year end and a leap day.
            (
                &[
                    ("2023-11-30T23:00", true),
                    ("2023-12-01T00:00", true),
                    ("2023-12-31T23:59", true),
                    ("2024-01-01T00:00", true),
                    ("2024-02-29T12:00", true),
                    ("2024-03-01T00:00", true),
                ],
                (0, 0, 0, 4),
                &[
                    "2024-03-01T00:00",
                    "2024-02-29T12:00",
                    "2024-01-01T00:00",
                    "2023-12-31T23:59",
                ],
            ),
            // Only verified backups count: the failed newest of 03-02 is
            // passed over for the verified one before it, and a failed
            // day does not use up a generation.
            (
                &[
                    ("2024-03-01T10:00", true),
                    ("2024-03-02T09:00", true),
                    ("2024-03-02T21:00", false),
                    ("2024-03-03T10:00", false),
                    ("2024-03-04T10:00", true),
                ],
                (0, 3, 0, 0),
                &["2024-03-04T10:00", "2024-03-02T09:00", "2024-03-01T10:00"],
            ),
            // The newest verified backup is kept even with every rule at 0
            // and even when it is old; keep_last counts failed ones too.
            (
                &[
                    ("2024-01-01T00:00", true),
                    ("2024-03-01T00:00", false),
                    ("2024-03-02T00:00", false),
                ],
                (1, 0, 0, 0),
                &["2024-03-02T00:00", "2024-01-01T00:00"],
            ),
            (
                &[("2024-01-01T00:00", true), ("2024-01-02T00:00", true)],
                (0, 0, 0, 0),
                &["2024-01-02T00:00"],
            ),
            // All three generations together: daily 2, weekly 2, monthly 2.
            (
                &[
                    ("2024-01-15T00:00", true),
                    ("2024-01-31T00:00", true),
                    ("2024-02-05T00:00", true),
                    ("2024-02-06T00:00", true),
                    ("2024-02-12T00:00", true),
                    ("2024-02-13T00:00", true),
                    ("2024-02-14T00:00", true),
                ],
                (1, 2, 2, 2),
                &[
                    "2024-02-14T00:00",
                    "2024-02-13T00:00",
                    "2024-02-06T00:00",
                    "2024-01-31T00:00",
                ],
            ),
        ];
        for (i, (backups, (last, daily, weekly, monthly), kept)) in table.iter().enumerate() {
            let all: Vec<BackupInfo> = backups.iter().map(|(s, ok)| dated(s, *ok)).collect();
            let deleted = to_delete(&all, &rules(*last, *daily, *weekly, *monthly));
            let mut expected: Vec<&str> = backups
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| !kept.contains(s))
                .collect();
            expected.reverse();
            assert_eq!(deleted, expected, "row {i}");
        }
    }
}
