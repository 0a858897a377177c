//! Progress bars of the verbs that read whole files (`backup`, `verify`,
//! `restore`), fed by the library's progress callback
//! (`resilite_actors::backup::Progress`).
//!
//! A bar is drawn on stderr for a job of at least [`PROGRESS_MIN_BYTES`],
//! and only when stderr is a terminal: indicatif's default draw target
//! (`ProgressDrawTarget::stderr`, used by `ProgressBar::new`) is hidden
//! when stderr is not a terminal or `TERM` is unset or `dumb`, so piped or
//! redirected output and logs never hold a bar. It is cleared when done.

use std::cell::OnceCell;

use indicatif::{ProgressBar, ProgressStyle};

/// Smallest job (bytes read from files) that gets a bar: below it the work
/// is over before a bar would be worth reading.
pub const PROGRESS_MIN_BYTES: u64 = 16 << 20;

/// How a bar looks.
const TEMPLATE: &str = "{msg:>11} [{wide_bar}] {bytes}/{total_bytes} eta {eta}";

/// A bar made on the first report of a large enough job.
pub(super) struct Bar {
    what: &'static str,
    bar: OnceCell<Option<ProgressBar>>,
}

impl Bar {
    /// A bar labelled `what` (e.g. `backup`, `verify`).
    pub(super) fn new(what: &'static str) -> Bar {
        Bar {
            what,
            bar: OnceCell::new(),
        }
    }

    /// The library's report: `done` of `total` bytes.
    pub(super) fn report(&self, done: u64, total: u64) {
        let bar = self.bar.get_or_init(|| {
            (total >= PROGRESS_MIN_BYTES).then(|| {
                let style = ProgressStyle::with_template(TEMPLATE)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                ProgressBar::new(total)
                    .with_style(style)
                    .with_message(self.what)
            })
        });
        if let Some(bar) = bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(Some(bar)) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}
