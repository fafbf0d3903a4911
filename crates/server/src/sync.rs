//! A lock that outlives a panicking holder: the maps it guards (caches, pending logins,
//! rate buckets, the audit writer's queue) stay usable, as every entry is valid on its own.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
