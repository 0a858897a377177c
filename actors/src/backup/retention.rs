//! Retention: which backups to delete. The newest `keep_last` are kept,
//! and so is the newest verified one whatever its age (it is the one a
//! restore would use).

use super::meta::BackupInfo;

/// The names to delete among `backups` (live ones, any order) to keep the
/// newest `keep_last` and the newest verified one.
pub fn to_delete(backups: &[BackupInfo], keep_last: usize) -> Vec<String> {
    let mut by_age: Vec<&BackupInfo> = backups.iter().collect();
    by_age.sort_by(|a, b| (b.created_at_ms, &b.name).cmp(&(a.created_at_ms, &a.name)));
    let newest_verified = by_age.iter().find(|b| b.is_verified()).map(|b| &b.name);
    by_age
        .iter()
        .skip(keep_last)
        .filter(|b| Some(&b.name) != newest_verified)
        .map(|b| b.name.clone())
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
        assert_eq!(to_delete(&all, 2), ["b3", "b1"]);
        assert_eq!(to_delete(&all, 5), Vec::<String>::new());
        assert_eq!(to_delete(&all[2..], 1), ["b4", "b3"]);
    }
}
