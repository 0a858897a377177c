//! What the benches share: the environment variables that set
//! resilite's operation log and audit level for a run.

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

/// Set the operation log and the audit level in `config` from the
/// environment, where given.
pub fn apply_env(config: &mut Config) {
    if let Some(on) = op_log() {
        config.backup.op_log = on;
    }
    if let Some(level) = audit_level() {
        config.audit.level = level;
    }
}
