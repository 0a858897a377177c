//! What this process uses, read from Linux's `/proc/self`:
//!
//! - `/proc/self/stat`: fields 14 and 15 (`utime`, `stime`) are the CPU
//!   time spent in user and kernel mode, in clock ticks
//!   (`sysconf(_SC_CLK_TCK)`, usually 100 a second). The second field (the
//!   command name) is in parentheses and may hold spaces or parentheses,
//!   so the fields are counted from the last `)`.
//! - `/proc/self/statm`: the second field is the resident set, in pages
//!   (`sysconf(_SC_PAGE_SIZE)`).
//! - `/proc/self/fd`: one entry per open file descriptor (the directory
//!   listing itself holds one while it is read, which is not counted).
//!
//! Where there is no `/proc` (macOS, the BSDs) every figure is `None`.

use std::path::Path;

use nix::unistd::{sysconf, SysconfVar};

/// The process's figures at one moment; `None` where they cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// CPU time (user + system) since the process started, seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
}

/// Read this process's figures now.
pub fn read() -> ProcessFigures {
    let proc_dir = Path::new("/proc/self");
    ProcessFigures {
        rss_bytes: std::fs::read_to_string(proc_dir.join("statm"))
            .ok()
            .and_then(|text| rss_pages(&text))
            .zip(sysconf_value(SysconfVar::PAGE_SIZE))
            .map(|(pages, size)| pages * size),
        cpu_seconds: std::fs::read_to_string(proc_dir.join("stat"))
            .ok()
            .and_then(|text| cpu_ticks(&text))
            .zip(sysconf_value(SysconfVar::CLK_TCK))
            .map(|(ticks, per_second)| ticks as f64 / per_second as f64),
        open_fds: std::fs::read_dir(proc_dir.join("fd"))
            .ok()
            .map(|entries| (entries.count() as u64).saturating_sub(1)),
    }
}

/// A positive `sysconf` value.
fn sysconf_value(var: SysconfVar) -> Option<u64> {
    sysconf(var)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
}

/// `utime + stime` (ticks) from the text of `/proc/self/stat`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // After the command name's closing parenthesis come field 3 (state)
    // onwards: utime is field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident pages from the text of `/proc/self/statm`.
fn rss_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU ticks are found after a command name holding spaces and
    /// parentheses; text that is not a stat line gives none.
    #[test]
    fn stat_and_statm_lines_are_parsed() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 5 0 250 75 0 0 20 0 8 0 123 456789 1024";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1"), None);
        assert_eq!(rss_pages("5000 1200 300 10 0 900 0\n"), Some(1200));
        assert_eq!(rss_pages(""), None);
    }

    /// On Linux this process has resident memory, CPU time and open files.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_figures_on_linux() {
        let f = read();
        assert!(f.rss_bytes.is_some_and(|b| b > 1 << 20), "{f:?}");
        assert!(f.cpu_seconds.is_some_and(|s| s >= 0.0), "{f:?}");
        assert!(f.open_fds.is_some_and(|n| n >= 3), "{f:?}");
    }
}
