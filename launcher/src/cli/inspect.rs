//! `thaw inspect [--json] IMAGE`: the header, the signer and every manifest field.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Value};
use thaw::image::{ImageFile, Provenance};

use super::TrustArgs;
use crate::exit::{Code, Failure, Result};
use crate::privilege::Context;

/// Show an image's header, signer and manifest. The signature is checked first.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    trust: TrustArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Decode without checking the signature (debugging only; nothing shown is trustworthy).
    #[arg(long)]
    no_verify: bool,
    image: PathBuf,
}

pub fn run(args: Args, ctx: &Context) -> Result {
    let file = ImageFile::open(&args.image)?;
    let image = if args.no_verify {
        errln!(
            "thaw: WARNING: --no-verify: the signature was NOT checked; nothing shown here is verified"
        );
        file.decode_unverified()?
    } else {
        file.verify(&args.trust.load(ctx)?)?
    };
    let signature = match image.provenance() {
        Provenance::Verified { signer, key_file } => json!({
            "verified": true,
            "signer": signer.to_string(),
            "trusted_key": key_file,
        }),
        Provenance::Unverified { claimed_signer } => json!({
            "verified": false,
            "claimed_signer": claimed_signer.map(|s| s.to_string()),
        }),
    };
    // Rendered fallibly: json! would panic on a value JSON cannot hold.
    let value = |v: std::result::Result<Value, serde_json::Error>| {
        v.map_err(|e| Failure::new(Code::Corrupt, format!("cannot render the manifest: {e}")))
    };
    let header = value(serde_json::to_value(image.header()))?;
    let manifest = value(serde_json::to_value(image.manifest()))?;
    let doc = json!({
        "image": args.image,
        "content_sha256": image.content_digest().to_string(),
        "header": header,
        "signature": signature,
        "payload_chunks": "not checked here; `thaw verify` checks every chunk",
        "manifest": manifest,
    });
    if args.json {
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Failure::new(Code::Internal, format!("cannot render JSON: {e}")))?;
        outln!("{text}")?;
    } else {
        let mut out = String::new();
        render(&mut out, &doc, 0);
        out!("{out}")?;
    }
    Ok(())
}

/// Lists longer than this are summarised in text output (`--json` shows them whole).
const MAX_LIST: usize = 16;

/// Renders a JSON value as indented `key: value` text.
fn render(out: &mut String, v: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{pad}{k}:");
                        render(out, v, indent + 1);
                    }
                    Value::Array(a) if !a.is_empty() && !is_scalar_list(a) => {
                        let _ = writeln!(out, "{pad}{k}: ({} entries)", a.len());
                        render(out, v, indent + 1);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{k}: {}", scalar(v));
                    }
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate().take(MAX_LIST) {
                let _ = writeln!(out, "{pad}- [{i}]");
                render(out, v, indent + 1);
            }
            if a.len() > MAX_LIST {
                let _ = writeln!(out, "{pad}… {} more (see --json)", a.len() - MAX_LIST);
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

fn is_scalar_list(a: &[Value]) -> bool {
    a.iter().all(|v| !v.is_object() && !v.is_array())
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() > MAX_LIST => {
            let head: Vec<String> = a.iter().take(4).map(scalar).collect();
            format!("[{}, … {} in all (see --json)]", head.join(", "), a.len())
        }
        Value::Array(a) => format!("[{}]", a.iter().map(scalar).collect::<Vec<_>>().join(", ")),
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Number(n) => match n.as_u64() {
            Some(x) if x > 0xffff => format!("{x} ({x:#x})"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}
