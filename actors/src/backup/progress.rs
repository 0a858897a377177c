//! Progress of long backup work (a copy, a verification, a restore's
//! staging), reported to an optional callback as bytes done of bytes in
//! all. This crate draws nothing: the CLI turns the reports into a
//! progress bar.
//!
//! A job is several passes over files (copy, hash, compress...); the
//! callback sees them as one count. The total is known before the work
//! starts and corrected once a pass's real size is known, so it can move
//! (a database that grows during an online copy); `done` never exceeds it.
//! The work that reads no file bytes (`integrity_check`, row counts) is
//! not counted: the count stands still meanwhile.

use std::cell::Cell;
use std::io::Read;

/// A progress callback: `(done, total)` in bytes, called from the thread
/// doing the work as it advances (often: keep it cheap).
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// Counts the bytes of a job's passes and reports them.
pub(crate) struct Meter<'a> {
    report: Option<Progress<'a>>,
    /// Bytes of the passes already finished.
    base: Cell<u64>,
    total: Cell<u64>,
}

impl<'a> Meter<'a> {
    /// A job of `total` bytes reported to `report`.
    pub(crate) fn new(report: Option<Progress<'a>>, total: u64) -> Meter<'a> {
        Meter {
            report,
            base: Cell::new(0),
            total: Cell::new(total),
        }
    }

    /// A meter nobody reads.
    pub(crate) fn none() -> Meter<'static> {
        Meter::new(None, 0)
    }

    /// Bytes of the passes finished so far.
    pub(crate) fn done(&self) -> u64 {
        self.base.get()
    }

    /// The job is `total` bytes after all (the rest was estimated).
    pub(crate) fn set_total(&self, total: u64) {
        self.total.set(total);
    }

    /// `n` bytes into the current pass.
    pub(crate) fn at(&self, n: u64) {
        if let Some(report) = self.report {
            let done = self.base.get() + n;
            let total = self.total.get().max(done);
            self.total.set(total);
            report(done, total);
        }
    }

    /// The current pass is over, after `n` bytes.
    pub(crate) fn pass_done(&self, n: u64) {
        self.base.set(self.base.get() + n);
        self.at(0);
    }

    /// A reader whose bytes count for the current pass.
    pub(crate) fn reader<R: Read>(&self, inner: R) -> Metered<'_, 'a, R> {
        Metered {
            inner,
            meter: self,
            read: 0,
        }
    }
}

/// A reader that reports the bytes read through a [`Meter`].
pub(crate) struct Metered<'m, 'a, R> {
    inner: R,
    meter: &'m Meter<'a>,
    read: u64,
}

impl<R: Read> Read for Metered<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.meter.at(self.read);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn meter_counts_passes_as_one_job() {
        let seen = RefCell::new(Vec::new());
        let report = |done, total| seen.borrow_mut().push((done, total));
        let meter = Meter::new(Some(&report), 10);
        let mut r = meter.reader(&b"abcd"[..]);
        assert_eq!(std::io::copy(&mut r, &mut std::io::sink()).unwrap(), 4);
        meter.pass_done(4);
        meter.at(3);
        meter.pass_done(6);
        // A pass longer than estimated moves the total, never past it.
        meter.at(5);
        let seen = seen.into_inner();
        assert_eq!(seen.first(), Some(&(4, 10)));
        assert!(seen.contains(&(7, 10)) && seen.contains(&(10, 10)));
        assert_eq!(seen.last(), Some(&(15, 15)));
        assert!(seen.iter().all(|(d, t)| d <= t));
    }
}
