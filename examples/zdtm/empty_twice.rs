//! An empty datagram seen by one checkpoint is not lost by the next: a peek marks an empty
//! message for good, and a second walk of the queue would pass over it.
//!
//! `PROG IMAGE KEY`: queues "a", an empty message and "b" in a datagram pair, checkpoints to
//! IMAGE.first and goes on, then checkpoints to IMAGE, which must be refused (the queue still
//! holds the empty message the first look marked): prints `refused: ...` and exits 3. Restored
//! from IMAGE.first, it reads the three messages.

#[path = "common.rs"]
mod common;

use std::os::unix::net::UnixDatagram;

fn main() {
    let (image, key, _) = common::argv();
    let (a, b) = UnixDatagram::pair().unwrap();
    for m in [&b"a"[..], b"", b"b"] {
        a.send(m).unwrap();
    }
    let mut first = thaw::Checkpoint::to(format!("{image}.first"));
    if let Some(k) = &key {
        first = first.sign_with(k);
    }
    match first.save() {
        Ok(thaw::Outcome::Saved(_)) => {}
        Ok(thaw::Outcome::Restored(_)) => {
            b.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 8];
            let got: Vec<String> = (0..4)
                .map(|_| match b.recv(&mut buf) {
                    Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                    Err(e) => format!("{:?}", e.raw_os_error()),
                })
                .collect();
            let mut c = common::Checks::default();
            c.check(
                "the first image holds the three messages",
                got == ["a", "", "b", "Some(11)"],
                format!("{got:?}"),
            );
            c.finish();
        }
        Err(e) => {
            println!("FAIL the first checkpoint: {e}");
            std::process::exit(1);
        }
    }
    let mut second = thaw::Checkpoint::to(&image).exit_after_save(true);
    if let Some(k) = &key {
        second = second.sign_with(k);
    }
    match second.save() {
        Err(e) => {
            println!("refused: {e}");
            std::process::exit(3);
        }
        Ok(_) => {
            println!("FAIL the second checkpoint was not refused");
            std::process::exit(1);
        }
    }
}
