//! credkeeper-tasks: scheduled tasks with authentication built in.
//!
//! What it is for: a task is a command with a schedule and the credentials it declares.
//! [`definition`] reads task files — credkeeper's own YAML, and rucio-task-manager's Helm
//! values and task files as they are, [`helm`] doing with its values what its chart does;
//! [`template`] fills `{{ VAR }}` strictly (an undefined
//! name is an error naming it and the task); [`schedule`] says when a task is due (cron,
//! macros, `@every`, time zones); [`run`] prepares a run's credentials in a private
//! directory, runs the command with a timeout and retries, keeps the bearer token fresh
//! while it runs, and removes everything when it ends; [`scheduler`] starts runs when due;
//! [`daemon`] is `tasks serve` and `tasks run` as processes (reloads, signals, the run
//! history, the metrics file), [`history`] its batched writer of finished runs.
//!
//! What it is not: where tokens come from. A run asks a
//! [`TokenSource`](credkeeper_refresher::source::TokenSource) (the caller
//! wires the broker or an issuer; a values cronjob may name one of rucio-task-manager's
//! own routes, [`upstream`]) and writes what it gets.

pub mod daemon;
pub mod definition;
pub mod helm;
pub mod history;
pub mod metrics;
pub mod oidc_agent;
pub mod rucio;
pub mod run;
pub mod schedule;
pub mod scheduler;
pub mod template;
pub mod upstream;

pub use definition::{Task, TaskError};
