//! Backups of the application database: taken online, verified, kept by
//! retention, catalogued in the journal.

mod config;

pub use config::{
    BackupConfig, DEFAULT_INTERVAL, DEFAULT_KEEP_LAST, DEFAULT_STEP_PAGES, DEFAULT_STEP_PAUSE,
    DEFAULT_VERIFY_EVERY,
};
