//! Robots' secret hashes in PostgreSQL.

use super::*;

impl RobotSecrets for PostgresStore {
    fn robot_secret_hash(&self, robot: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .query_opt("SELECT phc FROM robot_secret WHERE robot = $1", &[&robot])?
            .map(|r| r.get(0)))
    }

    fn set_robot_secret_hash(&self, robot: &str, phc: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO robot_secret (robot, phc, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (robot) DO UPDATE SET phc = excluded.phc, updated_at = excluded.updated_at",
            &[&robot, &phc, &Timestamp::now().unix()],
        )?;
        Ok(())
    }
}
