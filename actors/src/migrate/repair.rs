//! Repair: a person accepts that applied migrations changed (or were
//! removed) in the source. Each gets a `repair` row in the history with
//! the new checksum (`None` for a removed one) and the one it replaces;
//! the `apply` row keeps the checksum it was applied with. Nothing else
//! changes: the schema is not touched.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::history::{self, HistoryAction, NewEntry};
use super::source::Migrations;
use super::status::{MigrationState, Standing};
use crate::error::Result;

/// One applied migration a repair accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    /// Its version.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// The checksum recorded until now.
    pub recorded: Option<String>,
    /// The checksum accepted: its up script's in the source now (`None`:
    /// it is no longer in the source).
    pub accepted: Option<String>,
}

/// The applied migrations whose up script changed or left `source`: what
/// [`repair`] would record. Reads only.
pub fn repairs(conn: &Connection, source: &Migrations) -> Result<Vec<Repair>> {
    let standing = Standing::read(conn)?;
    Ok(needed(&standing, source))
}

fn needed(standing: &Standing, source: &Migrations) -> Vec<Repair> {
    standing
        .status(Some(source))
        .migrations
        .into_iter()
        .filter(|m| matches!(m.state, MigrationState::Changed | MigrationState::Missing))
        .map(|m| Repair {
            version: m.version,
            name: m.name,
            recorded: m.checksum,
            accepted: m.source_checksum,
        })
        .collect()
}

/// Record a `repair` row for each applied migration whose up script
/// changed or left `source`, in one transaction (`BEGIN IMMEDIATE`; the
/// list is read again inside it). What was recorded.
pub fn repair(conn: &Connection, source: &Migrations) -> Result<Vec<Repair>> {
    crate::journal::immediate(conn, || {
        let repairs = needed(&Standing::read(conn)?, source);
        for r in &repairs {
            history::insert(
                conn,
                &NewEntry {
                    version: r.version,
                    name: &r.name,
                    action: HistoryAction::Repair,
                    success: true,
                    checksum: r.accepted.as_deref(),
                    previous_checksum: r.recorded.as_deref(),
                    ..NewEntry::default()
                },
            )?;
        }
        Ok(repairs)
    })
}
