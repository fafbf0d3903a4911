//! Process start and end without std's runtime set-up (`#![no_main]`).
//!
//! Most runs of credkeeper are short (`get` reusing its file, the credential helper, probes
//! asking `--version`), so start-up is most of what they cost. Before `main`, std's runtime
//! asks glibc for the main thread's stack bounds, which reads and parses all of
//! `/proc/self/maps` — only to word a stack-overflow message. Everything else that set-up
//! does and a user can see is done here, the same way.

use std::ffi::{c_char, c_int};
use std::io::Write;

// SAFETY: the C runtime calls this exactly once as the process's `main`; it is the only
// symbol of that name (`#![no_main]` keeps std's out), and its signature is C's.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    standard_streams_open();
    ignore_sigpipe();
    // A panic may not unwind into C: caught here, it ends the run as std's runtime does
    // (its message is already printed by the panic hook), with status 101.
    let code = std::panic::catch_unwind(crate::run).unwrap_or(101);
    // std's runtime flushes standard output at exit; C's exit() does not know Rust's buffer.
    let _ = std::io::stdout().flush();
    c_int::from(code)
}

/// Descriptors 0–2 open: a closed one would be the next file credkeeper opens (a token
/// file), and a message meant for standard output would land in it.
fn standard_streams_open() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: a constant NUL-terminated path; the lowest free descriptor is `fd`,
            // as every lower one is open.
            let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if null != fd {
                // Neither /dev/null nor a descriptor: nothing safe is left to do.
                std::process::abort();
            }
        }
    }
}

/// Writing to a closed pipe or socket returns EPIPE instead of killing the process, as under
/// std's runtime (a daemon must not die when a client goes away).
fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
