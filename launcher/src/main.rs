//! `thaw`: verify a signed image and restore the process; make and check keys and images.

// Every message goes through `say`: println! and eprintln! panic on a stream that cannot be
// written (see say.rs).
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod say;
mod bench;
mod cli;
mod exit;
mod privilege;
mod registry;
mod restore;
mod serve;
mod sys;

use clap::Parser;

fn main() {
    // `thaw serve`'s nursery of namespaces, run by the server itself (not a command).
    let mut argv = std::env::args_os().skip(1);
    if argv.next().as_deref() == Some(std::ffi::OsStr::new(sys::NURSERY_ARG)) {
        // Only `thaw serve` starts it, and an elevated launcher does not serve: never with
        // privileges the caller lacks.
        if sys::at_secure() {
            errln!("thaw: {} is not for an elevated launcher", sys::NURSERY_ARG);
            std::process::exit(exit::Code::Usage as i32);
        }
        sys::nursery_main(&argv.next().unwrap_or_default().to_string_lossy());
    }
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => exit::Code::Usage as i32,
                _ => exit::Code::Usage as i32,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let ctx = privilege::Context::detect();
    if ctx.elevated {
        privilege::lower();
    }
    match cli::dispatch(args, &ctx) {
        Ok(()) => {}
        Err(failure) => {
            errln!("thaw: {}", failure.message);
            std::process::exit(failure.code as i32);
        }
    }
}
