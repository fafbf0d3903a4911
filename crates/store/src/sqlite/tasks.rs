//! Scheduled tasks in SQLite: the run history (with the claims that let one scheduler of
//! a fleet start each due run) and the task secrets, sealed.

use super::*;

impl TaskHistory for SqliteStore {
    fn record_runs(&self, runs: &[TaskRun], keep: usize) -> Result<(), StoreError> {
        let sealed = runs
            .iter()
            .map(|run| sealed::seal_run_output(&self.keys, &run.task, &run.output))
            .collect::<Result<Vec<_>, _>>()?;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO task_run (task, started, ended, status, attempts, reason, key_id, output)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(|e| self.err(e))?;
            for (run, sealed) in runs.iter().zip(&sealed) {
                insert
                    .execute(params![
                        run.task,
                        run.started.unix(),
                        run.ended.unix(),
                        run.status,
                        run.attempts,
                        run.reason,
                        sealed.key_id,
                        sealed.bytes
                    ])
                    .map_err(|e| self.err(e))?;
            }
            let mut trim = tx
                .prepare_cached(
                    "DELETE FROM task_run WHERE task = ?1 AND id NOT IN
                       (SELECT id FROM task_run WHERE task = ?1 ORDER BY started DESC, id DESC LIMIT ?2)",
                )
                .map_err(|e| self.err(e))?;
            for task in tasks_of(runs) {
                trim.execute(params![task, keep as i64])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn runs(&self, task: &str, limit: usize) -> Result<Vec<TaskRun>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT started, ended, status, attempts, reason, key_id, output FROM task_run
                 WHERE task = ?1 ORDER BY started DESC, id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(TaskRun, String, Vec<u8>)> = stmt
            .query_map(params![task, limit as i64], |r| {
                let run = TaskRun {
                    task: task.to_string(),
                    started: Timestamp::from_unix(r.get(0)?),
                    ended: Timestamp::from_unix(r.get(1)?),
                    status: r.get(2)?,
                    attempts: r.get(3)?,
                    reason: r.get(4)?,
                    output: String::new(),
                };
                Ok((run, r.get(5)?, r.get(6)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(mut run, key_id, sealed)| {
                run.output = sealed::open_run_output(&self.keys, task, &key_id, &sealed)?;
                Ok(run)
            })
            .collect()
    }

    fn last_started(&self, task: &str) -> Result<Option<Timestamp>, StoreError> {
        let started: Option<i64> = self
            .conn()
            .query_row(
                "SELECT MAX(started) FROM task_run WHERE task = ?1",
                params![task],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(started.map(Timestamp::from_unix))
    }

    fn claim_runs(&self, runs: &[(&str, Timestamp)]) -> Result<Vec<bool>, StoreError> {
        let now = Timestamp::now().unix();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let claimed = {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO task_claim (task, due, claimed_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (task, due) DO NOTHING",
                )
                .map_err(|e| self.err(e))?;
            runs.iter()
                .map(|(task, due)| {
                    insert
                        .execute(params![task, due.unix(), now])
                        .map(|n| n == 1)
                        .map_err(|e| self.err(e))
                })
                .collect::<Result<Vec<bool>, StoreError>>()?
        };
        tx.execute(
            "DELETE FROM task_claim WHERE claimed_at < ?1",
            params![now - TASK_CLAIM_KEEP_SECS],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(claimed)
    }
}

impl TaskSecrets for SqliteStore {
    fn put_task_secret(&self, name: &str, value: &Secret) -> Result<(), StoreError> {
        let sealed = sealed::seal_task_secret(&self.keys, name, value)?;
        self.conn()
            .execute(
                "INSERT INTO task_secret (name, key_id, sealed, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id,
                   sealed = excluded.sealed, updated_at = excluded.updated_at",
                params![name, sealed.key_id, sealed.bytes, Timestamp::now().unix()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn task_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT key_id, sealed FROM task_secret WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        sealed::open_task_secret(&self.keys, name, row)
    }

    fn delete_task_secret(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM task_secret WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn task_secret_names(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, updated_at FROM task_secret ORDER BY name")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, Timestamp::from_unix(r.get(1)?))))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }
}
