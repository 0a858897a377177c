//! Backups, answered by the BackupActor.

use resilite_actors::backup::BackupMsg;
use resilite_actors::slot;
use resilite_actors::{BackupInfo, Error, Result, Verification};

use super::Runtime;

impl Runtime {
    /// Take a backup of the database now, labelled `label` (1 to 64
    /// letters, digits, `-`, `_`), verify it and apply retention. The new
    /// backup; an error if it could not be written or failed verification.
    pub async fn backup(&self, label: &str) -> Result<BackupInfo> {
        let backup = slot::running(&mut self.inner.backup.clone()).await?;
        let label = label.to_string();
        ractor::call!(backup, |reply| BackupMsg::Backup { label, reply })
            .map_err(|e| Error::unavailable(format!("the backup actor did not answer: {e}")))?
    }

    /// The backups kept, oldest first, with their last verification.
    pub async fn backups(&self) -> Result<Vec<BackupInfo>> {
        let backup = slot::running(&mut self.inner.backup.clone()).await?;
        ractor::call!(backup, BackupMsg::List)
            .map_err(|e| Error::unavailable(format!("the backup actor did not answer: {e}")))
    }

    /// Verify the backup `name` (as [`backups`](Runtime::backups) lists
    /// it; never a path) now, and record the outcome.
    pub async fn verify_backup(&self, name: &str) -> Result<Verification> {
        let backup = slot::running(&mut self.inner.backup.clone()).await?;
        let name = name.to_string();
        ractor::call!(backup, |reply| BackupMsg::Verify { name, reply })
            .map_err(|e| Error::unavailable(format!("the backup actor did not answer: {e}")))?
    }
}
