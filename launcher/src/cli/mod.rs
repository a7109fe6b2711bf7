//! Command-line interface: one file per subcommand.

mod bench;
mod inspect;
mod keygen;
mod pull;
mod push;
mod run;
mod serve;
mod sign;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::exit::Result;
use crate::privilege::Context;
use crate::restore;

#[derive(Debug, Parser)]
#[command(
    name = "thaw",
    version,
    about = "Restore warm processes from signed images",
    after_help = "Exit codes: 0 ok, 64 usage, 65 invalid or corrupt image, 66 bad or untrusted signature, \
                  67 refused by policy, 68 restore failed, 69 a benchmarked command failed, 70 internal error, 74 I/O error, \
                  75 speed-up below --min-speedup, 76 the registry answered no (no such image or tag, credentials refused)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Sign(sign::Args),
    Verify(verify::Args),
    Inspect(inspect::Args),
    Run(run::Args),
    Bench(bench::Args),
    Push(push::Args),
    Pull(pull::Args),
    Serve(serve::Args),
}

/// `--trust FILE`, repeatable; shared by the subcommands that check signatures.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// Trust this public key (PEM) in addition to $THAW_TRUST_DIR, ~/.config/thaw/trusted/ and
    /// /etc/thaw/trusted/. Ignored when the launcher runs with elevated privileges.
    #[arg(long = "trust", value_name = "PUB")]
    pub files: Vec<PathBuf>,
}

impl TrustArgs {
    pub fn load(&self, ctx: &Context) -> Result<thaw_signing::TrustStore> {
        Ok(thaw_signing::TrustStore::load(
            &ctx.trust_sources(&self.files),
        )?)
    }
}

pub fn dispatch(cli: Cli, ctx: &Context) -> Result {
    match cli.command {
        Command::Keygen(a) => keygen::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Verify(a) => verify::run(a, ctx),
        Command::Inspect(a) => inspect::run(a, ctx),
        Command::Run(a) => run::run(a, ctx),
        Command::Bench(a) => bench::run(a),
        Command::Push(a) => push::run(a, ctx),
        Command::Pull(a) => pull::run(a, ctx),
        Command::Serve(a) => serve::run(a, ctx),
    }
}

/// The caller's cache: $THAW_CACHE_DIR, else $XDG_CACHE_HOME/thaw, else ~/.cache/thaw (none for a
/// privileged launcher, which reads no environment).
pub(crate) fn cache_dir(ctx: &Context) -> Option<PathBuf> {
    if let Some(d) = ctx.env("THAW_CACHE_DIR") {
        return Some(d.into());
    }
    match ctx.env("XDG_CACHE_HOME") {
        Some(x) => restore::working_set::own_dir(x.as_ref(), &["thaw"]),
        None => restore::working_set::own_dir(ctx.env("HOME")?.as_ref(), &[".cache", "thaw"]),
    }
}
