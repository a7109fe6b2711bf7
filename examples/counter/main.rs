//! `counter IMAGE [KEY]`: warms up by building a large table (hundreds of milliseconds of real
//! work), checkpoints to IMAGE (signed with KEY if given) and exits. Restored with
//! `thaw run IMAGE -- ARGS...`, it prints its PID, the answer to its arguments (`--verify`: a
//! checksum of the whole warm table; a number N: entry N) and the arguments, then exits 0. `counter - ARGS...` is the cold start: warm up, answer, exit.

use std::collections::HashMap;
use std::time::Instant;

fn warm_up() -> HashMap<u64, u64> {
    // A table of 2^21 entries, each the result of a few thousand rounds of mixing.
    let mut table = HashMap::with_capacity(1 << 21);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..(1u64 << 21) {
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        table.insert(i, x);
    }
    table
}

fn checksum(table: &HashMap<u64, u64>) -> u64 {
    (0..table.len() as u64).fold(0u64, |acc, i| acc.rotate_left(5) ^ table[&i])
}

/// The answer to one request: `--verify` walks the whole table (a checksum of the warm state),
/// anything else looks up one entry, as a service answering a request would.
fn answer(table: &HashMap<u64, u64>, args: &[String]) -> String {
    if args.first().map(String::as_str) == Some("--verify") {
        format!("checksum={:016x}", checksum(table))
    } else {
        let key = args
            .iter()
            .find_map(|a| a.parse::<u64>().ok())
            .unwrap_or(12345);
        format!(
            "table[{key}]={:016x}",
            table.get(&key).copied().unwrap_or(0)
        )
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let Some(image) = argv.next() else {
        eprintln!("usage: counter IMAGE [KEY]");
        std::process::exit(64);
    };
    let key = argv.next();
    let t0 = Instant::now();
    let table = warm_up();
    let warm = t0.elapsed();
    if image == "-" {
        let args: Vec<String> = key.into_iter().chain(argv).collect();
        println!(
            "counter: pid={} {} args={:?}",
            std::process::id(),
            answer(&table, &args),
            args
        );
        return;
    }

    // The interpreter never uses what its parent left open (a shell's or CI runner's pipe):
    // such descriptors are closed after restore rather than failing the checkpoint.
    let mut cp = thaw::Checkpoint::to(&image).unsupported_fds(thaw::FdAction::Drop);
    if let Some(k) = &key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Ok(thaw::Outcome::Saved(info)) => {
            for l in &info.left_out {
                eprintln!("counter: {l}");
            }
            println!(
                "counter: warmed up in {} ms, saved {} ({} bytes, paused {} µs)",
                warm.as_millis(),
                info.path.display(),
                info.size,
                info.pause.as_micros()
            );
        }
        Ok(thaw::Outcome::Restored(r)) => {
            let args: Vec<String> = r
                .args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            println!(
                "counter: pid={} {} args={:?}",
                std::process::id(),
                answer(&table, &args),
                args
            );
        }
        Err(e) => {
            eprintln!("counter: {e}");
            std::process::exit(1);
        }
    }
}
