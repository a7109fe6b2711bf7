//! Descriptor numbers reused while the checkpoint scans the table (deterministically, through
//! the SDK's test hook THAW_TEST_AFTER_SCAN): once the descriptors are listed, another thread
//! closes two of them and opens another file at one of those numbers at once; once the
//! checkpoint has taken hold of the listed ones, it opens a file at the other number again;
//! once the scan is done, it closes that one again, and the threads stop. The image must hold
//! the process's table as it was when they stopped: the descriptor closed again is not there
//! after restore (it used to come back, a descriptor nobody held: a thread that opens and
//! closes a file in a loop then got another number for it, and the old one stayed open for
//! good), and the one replaced before the checkpoint took hold is the new file, at its offset.
//!
//! `renamed`: a file renamed once the scan has read its name and before the threads stop: the
//! restored descriptor is that file under its new name (the image named it by its old one, and
//! the restore failed: no such file).

#[path = "common.rs"]
mod common;

use std::os::fd::IntoRawFd;

/// Opens `path` at descriptor `at`, free now (a new open file description), `skip` bytes read
/// from it.
fn open_at(path: &str, at: i32, skip: usize) {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; skip];
    f.read_exact(&mut b).unwrap();
    let fd = f.into_raw_fd();
    if fd != at {
        // SAFETY: our own descriptor moved to a number this program owns.
        assert_eq!(unsafe { libc::dup2(fd, at) }, at);
        close(fd);
    }
}

/// Checks `what`: descriptor `fd` is not open.
fn check_closed(c: &mut common::Checks, what: &str, fd: i32) {
    // SAFETY: F_GETFD on a number, open or not.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    c.check(
        what,
        flags == -1,
        format!(
            "fd {fd} is open: {:?}",
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
        ),
    );
}

fn close(fd: i32) {
    // SAFETY: a number this program owns.
    assert_eq!(unsafe { libc::close(fd) }, 0);
}

fn renamed(image: &str) {
    let (old, new) = (format!("{image}.named"), format!("{image}.renamed"));
    std::fs::write(&old, b"named file").unwrap();
    let fd = std::fs::File::open(&old).unwrap().into_raw_fd();
    let (from, to) = (old.clone(), new.clone());
    common::during_first_scan("d", move |_| std::fs::rename(&from, &to).unwrap());
    drop(common::restored());
    let mut c = common::Checks::default();
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
    let text = std::fs::read_to_string(format!("/proc/self/fd/{fd}"));
    c.check(
        "a file renamed while the checkpoint ran comes back under its new name",
        link.as_ref()
            .is_ok_and(|l| l.to_str() == Some(new.as_str()))
            && text.as_ref().is_ok_and(|t| t == "named file"),
        format!("{link:?}: {text:?}"),
    );
    c.finish()
}

/// `event-closed`: an eventfd closed by another thread once the checkpoint has described the
/// descriptors and before it reads the event objects' fdinfo (a Worker's event loop ending
/// while another checkpoints): the checkpoint starts again (it failed with "No such file or
/// directory"), and the eventfd is not there after restore.
fn event_closed() {
    // SAFETY: a new descriptor of ours.
    let efd = unsafe { libc::eventfd(3, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    common::during_first_scan("d", move |_| close(efd));
    drop(common::restored());
    let mut c = common::Checks::default();
    check_closed(
        &mut c,
        "an eventfd closed while the checkpoint ran stays closed",
        efd,
    );
    c.finish()
}

fn main() {
    let (image, _, extra) = common::argv();
    if extra.first().map(String::as_str) == Some("renamed") {
        return renamed(&image);
    }
    if extra.first().map(String::as_str) == Some("event-closed") {
        return event_closed();
    }
    let (first, second) = (format!("{image}.first"), format!("{image}.second"));
    std::fs::write(&first, b"first file").unwrap();
    std::fs::write(&second, b"second file").unwrap();
    let closed = std::fs::File::open(&first).unwrap().into_raw_fd();
    let reopened = std::fs::File::open(&first).unwrap().into_raw_fd();
    let (f, s) = (first.clone(), second.clone());
    common::during_first_scan("lhs", move |point| match point {
        b'l' => {
            close(closed);
            close(reopened);
            open_at(&s, reopened, 7);
        }
        b'h' => open_at(&f, closed, 0),
        b's' => close(closed),
        _ => {}
    });
    drop(common::restored());
    let mut c = common::Checks::default();
    check_closed(
        &mut c,
        "a descriptor closed while the checkpoint scanned stays closed",
        closed,
    );
    let rest = {
        use std::io::Read;
        // SAFETY: the number holds the file opened last; ManuallyDrop keeps it open.
        let mut f = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(reopened)
        });
        let mut rest = String::new();
        f.read_to_string(&mut rest).map(|_| rest)
    };
    c.check(
        "a descriptor replaced before the checkpoint held it is the new file, at its offset",
        rest.as_ref().is_ok_and(|r| r == "file"),
        format!("fd {reopened} reads {rest:?}"),
    );
    c.finish()
}
