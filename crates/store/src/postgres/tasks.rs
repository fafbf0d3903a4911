//! Task history (runs, their sealed output, claims of due runs so that one replica
//! starts each) and task secrets.

use super::*;

impl TaskHistory for PostgresStore {
    fn record_runs(&self, runs: &[TaskRun], keep: usize) -> Result<(), StoreError> {
        let sealed = runs
            .iter()
            .map(|run| sealed::seal_run_output(&self.keys, &run.task, &run.output))
            .collect::<Result<Vec<_>, _>>()?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.pool.run(async |c| {
            let tx = c.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO task_run (task, started, ended, status, attempts, reason, key_id, output)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            for (run, sealed) in runs.iter().zip(&sealed) {
                let status = run.status.map(i64::from);
                let attempts = i64::from(run.attempts);
                let (started, ended) = (run.started.unix(), run.ended.unix());
                tx.execute(
                    &insert,
                    &[
                        &run.task,
                        &started,
                        &ended,
                        &status,
                        &attempts,
                        &run.reason,
                        &sealed.key_id,
                        &sealed.bytes,
                    ],
                )
                .await?;
            }
            let trim = tx
                .prepare(
                    "DELETE FROM task_run WHERE task = $1 AND id NOT IN
                       (SELECT id FROM task_run WHERE task = $1 ORDER BY started DESC, id DESC LIMIT $2)",
                )
                .await?;
            for task in tasks_of(runs) {
                tx.execute(&trim, &[&task, &keep]).await?;
            }
            tx.commit().await
        })
    }

    fn runs(&self, task: &str, limit: usize) -> Result<Vec<TaskRun>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            "SELECT started, ended, status, attempts, reason, key_id, output FROM task_run
             WHERE task = $1 ORDER BY started DESC, id DESC LIMIT $2",
            &[&task, &limit],
        )?
        .iter()
        .map(|r| {
            Ok(TaskRun {
                task: task.to_string(),
                started: Timestamp::from_unix(r.get(0)),
                ended: Timestamp::from_unix(r.get(1)),
                status: r
                    .get::<_, Option<i64>>(2)
                    .map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
                attempts: u32::try_from(r.get::<_, i64>(3)).unwrap_or(u32::MAX),
                reason: r.get(4),
                output: sealed::open_run_output(
                    &self.keys,
                    task,
                    r.get::<_, &str>(5),
                    r.get::<_, &[u8]>(6),
                )?,
            })
        })
        .collect()
    }

    fn last_started(&self, task: &str) -> Result<Option<Timestamp>, StoreError> {
        let row = self.query_opt(
            "SELECT MAX(started) FROM task_run WHERE task = $1",
            &[&task],
        )?;
        Ok(row
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(Timestamp::from_unix))
    }

    fn claim_runs(&self, runs: &[(&str, Timestamp)]) -> Result<Vec<bool>, StoreError> {
        let now = Timestamp::now().unix();
        let runs: Vec<(&str, i64)> = runs.iter().map(|(t, due)| (*t, due.unix())).collect();
        self.pool.run(async |c| {
            let tx = c.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO task_claim (task, due, claimed_at) VALUES ($1, $2, $3)
                         ON CONFLICT (task, due) DO NOTHING",
                )
                .await?;
            let mut claimed = Vec::with_capacity(runs.len());
            for (task, due) in &runs {
                claimed.push(tx.execute(&insert, &[task, due, &now]).await? == 1);
            }
            tx.execute(
                "DELETE FROM task_claim WHERE claimed_at < $1",
                &[&(now - TASK_CLAIM_KEEP_SECS)],
            )
            .await?;
            tx.commit().await?;
            Ok(claimed)
        })
    }
}

impl TaskSecrets for PostgresStore {
    fn put_task_secret(&self, name: &str, value: &Secret) -> Result<(), StoreError> {
        let sealed = sealed::seal_task_secret(&self.keys, name, value)?;
        self.execute(
            "INSERT INTO task_secret (name, key_id, sealed, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id,
               sealed = excluded.sealed, updated_at = excluded.updated_at",
            &[
                &name,
                &sealed.key_id,
                &sealed.bytes,
                &Timestamp::now().unix(),
            ],
        )?;
        Ok(())
    }

    fn task_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        let row = self
            .query_opt(
                "SELECT key_id, sealed FROM task_secret WHERE name = $1",
                &[&name],
            )?
            .map(|r| (r.get(0), r.get(1)));
        sealed::open_task_secret(&self.keys, name, row)
    }

    fn delete_task_secret(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.execute("DELETE FROM task_secret WHERE name = $1", &[&name])? > 0)
    }

    fn task_secret_names(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        Ok(self
            .query(
                "SELECT name, updated_at FROM task_secret ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), Timestamp::from_unix(r.get(1))))
            .collect())
    }
}
