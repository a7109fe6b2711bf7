//! After restore: prints `ready <pid>`, then reads one line from stdin and exits with the status
//! it names (a number), or is ended by a signal while waiting.

#[path = "common.rs"]
mod common;

fn main() {
    let _ = common::checkpoint();
    println!("ready {}", std::process::id());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    std::process::exit(line.trim().parse().unwrap_or(0));
}
