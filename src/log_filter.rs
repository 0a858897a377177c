//! The log filter of the process, when it can be changed while running:
//! `resilite run` installs a reloadable filter (tracing-subscriber's
//! `reload` layer) unless `RESILITE_LOG` or `RUST_LOG` sets it, and a
//! config reload applies `[log] level` through it. An application that
//! embeds the runtime keeps its own subscriber: nothing is installed and
//! `[log] level` has no effect there.

use std::sync::OnceLock;

/// Sets the filter from a directive string; `Err` says why it is invalid.
type SetFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Make `set` the way to change the process's log filter (once).
pub(crate) fn install(set: SetFilter) {
    let _ = FILTER.set(set);
}

/// Change the log filter to `level`: `None` when this process has no
/// reloadable filter (an embedding application's, or one fixed by
/// `RESILITE_LOG`).
pub(crate) fn set(level: &str) -> Option<Result<(), String>> {
    FILTER.get().map(|f| f(level))
}
