//! Waiting for SIGINT/SIGTERM: blocked in every thread, taken with `sigwait` by main.
// UNSAFETY: sigset manipulation and sigwait are raw libc calls on local, initialised
// sigset_t values.
#![expect(unsafe_code)]

fn set() -> libc::sigset_t {
    let mut s = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset only sets bits in it.
    unsafe {
        libc::sigemptyset(s.as_mut_ptr());
        libc::sigaddset(s.as_mut_ptr(), libc::SIGINT);
        libc::sigaddset(s.as_mut_ptr(), libc::SIGTERM);
        s.assume_init()
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts afterwards.
pub fn block() {
    let s = set();
    // SAFETY: `s` is a valid, initialised set; the old mask is not wanted.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut());
    }
}

/// Waits for SIGINT or SIGTERM and returns its name.
pub fn wait() -> &'static str {
    let s = set();
    let mut sig: libc::c_int = 0;
    // SAFETY: `s` is initialised and `sig` is a valid out-pointer.
    unsafe {
        libc::sigwait(&s, &mut sig);
    }
    if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}
