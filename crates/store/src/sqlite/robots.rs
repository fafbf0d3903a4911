//! Robots' secret hashes in SQLite.

use super::*;

impl RobotSecrets for SqliteStore {
    fn robot_secret_hash(&self, robot: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT phc FROM robot_secret WHERE robot = ?1",
                params![robot],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn set_robot_secret_hash(&self, robot: &str, phc: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO robot_secret (robot, phc, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (robot) DO UPDATE SET phc = excluded.phc, updated_at = excluded.updated_at",
                params![robot, phc, Timestamp::now().unix()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
