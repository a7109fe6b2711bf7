//! The C ABI (`libthaw.so`, declared in `include/thaw.h`): checkpoint from C, C++, JNI or ctypes.
//!
//! Every function is safe to call with any argument the header allows; errors are reported as a
//! negative return value and a message from [`thaw_last_error`] (thread-local, valid until the
//! next `thaw_` call on the same thread).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

/// `thaw_checkpoint` flag: the first life exits 0 once the image is written.
pub const THAW_EXIT_AFTER_SAVE: c_uint = 1;
/// `thaw_checkpoint` flag: checkpoint even though the process has children (they are left out).
pub const THAW_LEAVE_CHILDREN_OUT: c_uint = 2;

/// Return values of `thaw_checkpoint`.
pub const THAW_SAVED: c_int = 0;
pub const THAW_RESTORED: c_int = 1;
pub const THAW_ERR_INVALID: c_int = -1;
pub const THAW_ERR_UNSUPPORTED: c_int = -2;
pub const THAW_ERR_IO: c_int = -3;
pub const THAW_ERR_FAILED: c_int = -4;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// The descriptor policy set by `thaw_set_fd_policy`, applied to every later checkpoint.
static FD_POLICY: Mutex<Option<crate::FdPolicy>> = Mutex::new(None);

/// What the launcher passed, as C strings that live until the next restore.
static RESTORED: Mutex<(Vec<CString>, Vec<CString>)> = Mutex::new((Vec::new(), Vec::new()));

fn set_error(code: c_int, msg: impl std::fmt::Display) -> c_int {
    let text = CString::new(msg.to_string().replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
    code
}

fn c_string(bytes: &[u8]) -> CString {
    CString::new(
        bytes
            .iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect::<Vec<u8>>(),
    )
    .unwrap_or_default()
}

/// Reads an optional C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
unsafe fn arg<'a>(p: *const c_char) -> Option<&'a CStr> {
    // SAFETY: guaranteed by the caller (see above); the borrow ends with the call.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
}

/// Checkpoints the calling process to `image_path`, signed with `key_path` (may be NULL).
/// Returns 0 in the first life (image written), 1 in the second life (restored), < 0 on error.
///
/// # Safety
/// `image_path` must be a NUL-terminated string; `key_path` NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn thaw_checkpoint(
    image_path: *const c_char,
    key_path: *const c_char,
    flags: c_uint,
) -> c_int {
    // SAFETY: forwarded from this function's contract.
    let (Some(path), key) = (unsafe { arg(image_path) }, unsafe { arg(key_path) }) else {
        return set_error(THAW_ERR_INVALID, "image_path is NULL");
    };
    let path = std::ffi::OsStr::from_bytes(path.to_bytes());
    let mut cp = crate::Checkpoint::to(path)
        .exit_after_save(flags & THAW_EXIT_AFTER_SAVE != 0)
        .leave_children_out(flags & THAW_LEAVE_CHILDREN_OUT != 0);
    if let Some(key) = key {
        cp = cp.sign_with(std::ffi::OsStr::from_bytes(key.to_bytes()));
    }
    if let Some(p) = FD_POLICY.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        cp = cp.fd_policy(p);
    }
    match cp.save() {
        Ok(crate::Outcome::Saved(_)) => {
            set_error(0, "");
            THAW_SAVED
        }
        Ok(crate::Outcome::Restored(r)) => {
            let args = r.args().iter().map(|a| c_string(a.as_bytes())).collect();
            let env = r
                .env()
                .iter()
                .map(|(k, v)| {
                    let mut kv = k.as_bytes().to_vec();
                    kv.push(b'=');
                    kv.extend_from_slice(v.as_bytes());
                    c_string(&kv)
                })
                .collect();
            *RESTORED.lock().unwrap_or_else(|p| p.into_inner()) = (args, env);
            set_error(0, "");
            THAW_RESTORED
        }
        Err(e) => {
            let code = match &e {
                crate::CheckpointError::Unsupported(_) => THAW_ERR_UNSUPPORTED,
                crate::CheckpointError::Io { .. } | crate::CheckpointError::Image(_) => THAW_ERR_IO,
                crate::CheckpointError::Policy(_) => THAW_ERR_INVALID,
                _ => THAW_ERR_FAILED,
            };
            set_error(code, e)
        }
    }
}

/// Sets the descriptor policy of every later `thaw_checkpoint` ("pipe=drop,251=null", see
/// `thaw::fd_policy`); it overrides `THAW_FD_POLICY` key by key. NULL or "" clears it.
/// Returns 0, or THAW_ERR_INVALID for a malformed policy (the previous one stays).
///
/// # Safety
/// `spec` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn thaw_set_fd_policy(spec: *const c_char) -> c_int {
    // SAFETY: forwarded from this function's contract.
    let spec = unsafe { arg(spec) };
    let parsed = match spec.map(|s| s.to_str()) {
        None => Ok(None),
        Some(Err(_)) => Err("the descriptor policy is not UTF-8".to_owned()),
        Some(Ok(s)) => crate::FdPolicy::parse(s).map(Some),
    };
    match parsed {
        Ok(p) => {
            *FD_POLICY.lock().unwrap_or_else(|p| p.into_inner()) = p;
            set_error(0, "")
        }
        Err(e) => set_error(THAW_ERR_INVALID, e),
    }
}

/// The message of the last failed `thaw_` call on this thread ("" if none).
#[no_mangle]
pub extern "C" fn thaw_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Which list of [`RESTORED`]: the arguments (0) or the environment (1).
fn restored_count(list: usize) -> c_int {
    let r = RESTORED.lock().unwrap_or_else(|p| p.into_inner());
    [&r.0, &r.1][list].len() as c_int
}

fn restored_item(list: usize, index: c_int) -> *const c_char {
    let r = RESTORED.lock().unwrap_or_else(|p| p.into_inner());
    // The CStrings live in a static until the next restore, so the pointer outlives the lock.
    usize::try_from(index)
        .ok()
        .and_then(|i| [&r.0, &r.1][list].get(i))
        .map_or(std::ptr::null(), |s| s.as_ptr())
}

/// How many times this process was restored (0 in a first life): right in every thread from
/// the restored process's first instruction on, before `thaw_checkpoint` returns.
#[no_mangle]
pub extern "C" fn thaw_restores() -> c_int {
    c_int::try_from(crate::restores()).unwrap_or(c_int::MAX)
}

/// Number of arguments given after `--` to `thaw run` (0 before any restore).
#[no_mangle]
pub extern "C" fn thaw_restored_argc() -> c_int {
    restored_count(0)
}

/// Argument `index` (0-based), or NULL if out of range.
#[no_mangle]
pub extern "C" fn thaw_restored_arg(index: c_int) -> *const c_char {
    restored_item(0, index)
}

/// Number of `KEY=VALUE` entries of the `thaw run` caller's environment.
#[no_mangle]
pub extern "C" fn thaw_restored_envc() -> c_int {
    restored_count(1)
}

/// Environment entry `index` as `KEY=VALUE`, or NULL if out of range.
#[no_mangle]
pub extern "C" fn thaw_restored_env(index: c_int) -> *const c_char {
    restored_item(1, index)
}

/// A C callback with its context pointer; the pointer is the caller's to keep valid.
struct Callback(extern "C" fn(*mut c_void) -> c_int, usize);

impl Callback {
    fn call(&self) -> Result<(), String> {
        match (self.0)(self.1 as *mut c_void) {
            0 => Ok(()),
            n => Err(format!("C hook returned {n}")),
        }
    }
}

type Hook = Option<extern "C" fn(*mut c_void) -> c_int>;

fn register(f: Hook, ctx: *mut c_void, add: fn(Callback)) -> c_int {
    let Some(f) = f else {
        return set_error(THAW_ERR_INVALID, "callback is NULL");
    };
    add(Callback(f, ctx as usize));
    0
}

/// Registers `f(ctx)` to run before every snapshot; a non-zero return aborts the checkpoint.
#[no_mangle]
pub extern "C" fn thaw_on_checkpoint(f: Hook, ctx: *mut c_void) -> c_int {
    register(f, ctx, |cb| crate::on_checkpoint(move || cb.call()))
}

/// Registers `f(ctx)` to run first thing after a restore (reseed, reopen).
#[no_mangle]
pub extern "C" fn thaw_on_restore(f: Hook, ctx: *mut c_void) -> c_int {
    register(f, ctx, |cb| crate::on_restore(move || cb.call()))
}

/// Holds signals from outside for the first life until the matching `thaw_release_signals`: a
/// language SDK calls it before running its own before-checkpoint hooks (see [`crate::hold`]).
#[no_mangle]
pub extern "C" fn thaw_hold_signals() {
    crate::hold::begin();
}

/// Ends `thaw_hold_signals`: in the first life, what came meanwhile goes to the program's
/// handlers now; a restored process never sees it.
#[no_mangle]
pub extern "C" fn thaw_release_signals() {
    crate::hold::end();
}

/// Registers `f(ctx)` to run in a first life that exits after saving, just before it exits
/// (its result is ignored): see [`crate::on_exit_after_save`].
#[no_mangle]
pub extern "C" fn thaw_on_exit_after_save(f: Hook, ctx: *mut c_void) -> c_int {
    let Some(f) = f else {
        return set_error(THAW_ERR_INVALID, "callback is NULL");
    };
    let cb = Callback(f, ctx as usize);
    crate::on_exit_after_save(move || {
        // (Not through `call`: its error would allocate.)
        (cb.0)(cb.1 as *mut c_void);
    });
    0
}

/// Reads a NULL-terminated array of C strings (NULL: `None`).
///
/// # Safety
/// `p` is NULL or points to a NULL-terminated array of NUL-terminated strings, all valid
/// during the call.
unsafe fn strings<'a>(p: *const *const c_char) -> Option<Vec<&'a [u8]>> {
    if p.is_null() {
        return None;
    }
    let mut out = Vec::new();
    for i in 0.. {
        // SAFETY: guaranteed by the caller: every element up to the NULL one is readable.
        let s = unsafe { *p.add(i) };
        if s.is_null() {
            break;
        }
        // SAFETY: as above; each element is a NUL-terminated string.
        out.push(unsafe { CStr::from_ptr(s) }.to_bytes());
    }
    Some(out)
}

fn serve_error(e: crate::serve::ServeError) -> c_int {
    use crate::serve::ServeError as E;
    let code = match e {
        E::Unreachable { .. } | E::Io(_) => THAW_ERR_IO,
        _ => THAW_ERR_FAILED,
    };
    set_error(code, e)
}

/// Asks the `thaw serve` at `socket` for an instance; returns a handle (a descriptor), or < 0.
///
/// # Safety
/// `socket` must be a NUL-terminated string; `argv` and `envp` NULL or NULL-terminated arrays of
/// NUL-terminated strings; `stdio` NULL or three descriptors; `pid` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn thaw_serve_start(
    socket: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    stdio: *const c_int,
    pid: *mut c_int,
) -> c_int {
    use std::os::fd::{BorrowedFd, IntoRawFd};
    // SAFETY: forwarded from this function's contract.
    let Some(socket) = (unsafe { arg(socket) }) else {
        return set_error(THAW_ERR_INVALID, "no socket path");
    };
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(socket.to_bytes()));
    // SAFETY: forwarded from this function's contract.
    let (args, env) = unsafe { (strings(argv), strings(envp)) };
    let mut call = crate::serve::Call::new().args(
        args.unwrap_or_default()
            .into_iter()
            .map(std::ffi::OsStr::from_bytes),
    );
    if let Some(env) = env {
        call = call.env_clear();
        for e in env {
            let mut kv = e.splitn(2, |&b| b == b'=');
            let (k, v) = (kv.next().unwrap_or_default(), kv.next().unwrap_or_default());
            call = call.env(
                std::ffi::OsStr::from_bytes(k),
                std::ffi::OsStr::from_bytes(v),
            );
        }
    }
    if !stdio.is_null() {
        // SAFETY: the caller passes three readable ints.
        let fds = unsafe { std::slice::from_raw_parts(stdio, 3) };
        if fds.iter().any(|&fd| fd < 0) {
            return set_error(THAW_ERR_INVALID, "a standard descriptor is negative");
        }
        // SAFETY: the descriptors are the caller's, open during the call (sent, not kept).
        let (i, o, e) = unsafe {
            (
                BorrowedFd::borrow_raw(fds[0]),
                BorrowedFd::borrow_raw(fds[1]),
                BorrowedFd::borrow_raw(fds[2]),
            )
        };
        call = call.stdio(i, o, e);
    }
    match call.start(path) {
        Ok(instance) => {
            if !pid.is_null() {
                // SAFETY: the caller passes a writable int or NULL.
                unsafe { *pid = instance.pid() };
            }
            set_error(0, "");
            instance.into_fd().into_raw_fd()
        }
        Err(e) => serve_error(e),
    }
}

/// Passes signal `sig` on to the instance behind `handle`. 0, or < 0.
#[no_mangle]
pub extern "C" fn thaw_serve_signal(handle: c_int, sig: c_int) -> c_int {
    if handle < 0 {
        return set_error(THAW_ERR_INVALID, "not a handle");
    }
    // SAFETY: a handle is a descriptor the caller owns, open during the call.
    let conn = unsafe { std::os::fd::BorrowedFd::borrow_raw(handle) };
    match crate::serve::send_signal(conn, sig) {
        Ok(()) => set_error(0, ""),
        Err(e) => serve_error(e),
    }
}

/// Waits for the instance behind `handle` to end and closes the handle: its exit status
/// (128+N for signal N), or < 0.
#[no_mangle]
pub extern "C" fn thaw_serve_wait(handle: c_int) -> c_int {
    use std::os::fd::FromRawFd;
    if handle < 0 {
        return set_error(THAW_ERR_INVALID, "not a handle");
    }
    // SAFETY: a handle is a descriptor the caller owns and gives up here.
    let instance =
        crate::serve::Instance::from_fd(unsafe { std::os::fd::OwnedFd::from_raw_fd(handle) }, 0);
    match instance.wait() {
        Ok(status) => {
            set_error(0, "");
            status
        }
        Err(e) => serve_error(e),
    }
}
