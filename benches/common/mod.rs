//! What the benches share: the environment variables that set
//! resilite's operation log, audit level and health interval for a run.

use resilite::{AuditLevel, Config};

/// `RESILITE_BACKUP_OP_LOG=true` or `=false`: resilite with or without
/// the operation log; `None` (unset): as configured by default.
pub fn op_log() -> Option<bool> {
    match std::env::var("RESILITE_BACKUP_OP_LOG").ok()?.as_str() {
        "true" => Some(true),
        "false" => Some(false),
        other => panic!("RESILITE_BACKUP_OP_LOG={other}: true or false"),
    }
}

/// `RESILITE_AUDIT_LEVEL=off|failures|all`: the operation audit's level;
/// `None` (unset): as configured by default.
pub fn audit_level() -> Option<AuditLevel> {
    let text = std::env::var("RESILITE_AUDIT_LEVEL").ok()?;
    Some(match text.as_str() {
        "off" => AuditLevel::Off,
        "failures" => AuditLevel::Failures,
        "all" => AuditLevel::All,
        other => panic!("RESILITE_AUDIT_LEVEL={other}: off, failures or all"),
    })
}

/// `RESILITE_HEALTH_INTERVAL=1s` (any humantime duration): how often the
/// health actor checks, to see what its checks and maintenance cost the
/// writes; `None` (unset): as configured by default.
pub fn health_interval() -> Option<std::time::Duration> {
    let text = std::env::var("RESILITE_HEALTH_INTERVAL").ok()?;
    Some(humantime::parse_duration(&text).unwrap_or_else(|e| {
        panic!("RESILITE_HEALTH_INTERVAL={text}: {e}; give a duration such as 1s or 500ms")
    }))
}

/// Set the operation log, the audit level and the health interval in
/// `config` from the environment, where given.
pub fn apply_env(config: &mut Config) {
    if let Some(on) = op_log() {
        config.backup.op_log = on;
    }
    if let Some(level) = audit_level() {
        config.audit.level = level;
    }
    if let Some(interval) = health_interval() {
        config.health.interval = interval;
    }
}
