//! The run's command as a process: started in its own process group with the prepared
//! environment, its output captured with a cap, stopped as a group on timeout or when the
//! run is dropped.

use super::*;

/// A pipe, both ends close-on-exec: (reading end, writing end).
pub(super) fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors, owned by nothing else.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; each is wrapped once.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Start the prepared run's command and see it to its end.
pub(super) async fn execute(
    task: &Task,
    rendered: &Rendered,
    prepared: Prepared,
    options: &RunOptions,
) -> Outcome {
    let now = Timestamp::now();
    let failed = |reason: String| Outcome {
        status: None,
        attempts: 0,
        started: now,
        ended: Timestamp::now(),
        reason: Some(reason),
        output: String::new(),
    };
    let (program, args): (&str, Vec<&str>) = if task.shell {
        ("/bin/sh", vec!["-c", rendered.command[0].as_str()])
    } else {
        (
            rendered.command[0].as_str(),
            rendered.command[1..].iter().map(String::as_str).collect(),
        )
    };
    // Standard output and error into one pipe, as `2>&1`: the output in the order it was
    // written, and one descriptor per running task held here instead of two (a start copies
    // every descriptor the scheduler holds into the new process, which closes them at exec:
    // 1,000 tasks due at once had up to 2,100 open).
    let (output, writer, writer2) = match pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w))) {
        Ok(p) => p,
        Err(e) => return failed(format!("cannot make a pipe for `{program}`: {e}")),
    };
    let mut command = tokio::process::Command::new(program);
    // The declared environment only (see `prepare`).
    command
        .env_clear()
        .args(&args)
        .envs(&prepared.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        // Its own process group: a timeout stops everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(w) = &task.workdir {
        command.current_dir(w);
    }
    let spawned = command.spawn();
    // The command keeps the pipe's writing ends: closed now, the output ends when the
    // task's processes close theirs.
    drop(command);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start `{program}`: {e}")),
    };
    let pid = child.id();
    // A run dropped midway (Replace, a stop) takes its whole process group with it.
    let mut group = GroupGuard(pid);
    // The output into one buffer as it comes, keeping the last `cap` bytes.
    let cap = options.output_cap;
    let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
    let output = tokio::net::unix::pipe::Receiver::from_owned_fd(output)
        .map_err(|e| tracing::warn!(task = task.name, "the output cannot be read: {e}"))
        .ok();
    let readers: Vec<_> = output
        .into_iter()
        .map(|mut stream| {
            let buffer = buffer.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 8192];
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    let mut b = buffer.lock().unwrap_or_else(|p| p.into_inner());
                    b.extend_from_slice(&chunk[..n]);
                    if b.len() > cap * 2 {
                        let excess = b.len() - cap;
                        b.drain(..excess);
                    }
                }
            })
        })
        .collect();
    let waited = match task.timeout_secs {
        Some(t) => tokio::time::timeout(std::time::Duration::from_secs(t as u64), child.wait())
            .await
            .ok(),
        None => Some(child.wait().await),
    };
    let (status, reason) = match waited {
        Some(Ok(s)) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(0), _) => (Some(0), None),
                (Some(c), _) => (Some(c), Some(format!("exit status {c}"))),
                (None, Some(sig)) => (None, Some(format!("killed by signal {sig}"))),
                _ => (None, Some("ended without a status".into())),
            }
        }
        Some(Err(e)) => (None, Some(format!("waiting for the command: {e}"))),
        None => {
            stop_group(pid, options.grace_secs, &mut child).await;
            (
                None,
                Some(format!(
                    "timed out after {} s; the process group was stopped",
                    task.timeout_secs.unwrap_or(0)
                )),
            )
        }
    };
    group.disarm();
    for r in &prepared.refreshers {
        r.abort();
    }
    for r in readers {
        let _ = r.await;
    }
    let mut bytes = std::mem::take(&mut *buffer.lock().unwrap_or_else(|p| p.into_inner()));
    if bytes.len() > cap {
        bytes.drain(..bytes.len() - cap);
    }
    let output = prepared
        .secrets
        .redact(String::from_utf8_lossy(&bytes).into_owned());
    // The run's private directory goes with it.
    drop(prepared);
    Outcome {
        status,
        attempts: 0,
        started: now,
        ended: Timestamp::now(),
        reason,
        output,
    }
}

/// Kills the run's process group when dropped while armed.
pub(super) struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: killpg on the process group created for this run's child.
            unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
        }
    }
}

/// SIGTERM to the group, then SIGKILL after the grace period.
pub(super) async fn stop_group(pid: Option<u32>, grace: u64, child: &mut tokio::process::Child) {
    let Some(pid) = pid else { return };
    // SAFETY: killpg on the process group we created for this child (process_group(0)).
    unsafe { libc::killpg(pid as i32, libc::SIGTERM) };
    if tokio::time::timeout(std::time::Duration::from_secs(grace), child.wait())
        .await
        .is_err()
    {
        // SAFETY: as above.
        unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
        let _ = child.wait().await;
    }
}
