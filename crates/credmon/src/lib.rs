//! credkeeper-credmon: an HTCondor credential monitor, file-compatible with
//! scitokens-credmon, without its failure modes.
//!
//! What it is for: keeping an HTCondor CredD directory (`SEC_CREDENTIAL_DIRECTORY_OAUTH`)
//! fresh — `<user>/<provider>[_<handle>].top/.use/.meta` in the upstream shapes, refreshed
//! with the same request and thresholds ([`pass`]), local tokens signed with the same
//! claims by `credkeeper-issuer`, the `pid` / `CREDMON_COMPLETE` contract ([`daemon`]),
//! configuration from HTCondor's knob names ([`condor_config`], [`settings`]), and a
//! status file for `credkeeper credmon status` ([`status`]).
//!
//! What it is not: the CredD. It never deletes users' credentials (the CredD sweeps
//! `<user>.mark`); it only removes key files older than 12 hours, as upstream does.

pub mod condor_config;
pub mod daemon;
pub mod error;
pub mod pass;
pub mod settings;
pub mod status;

pub use pass::{Credmon, PassReport};
pub use settings::Settings;
