//! An embedded interpreter that warms up, checkpoints, and answers after restore.
//!
//! `lua-warm IMAGE [KEY]`: starts Lua 5.4 (mlua, vendored), compiles a generated program of a few
//! megabytes (thousands of functions) and runs its warm-up (building lookup tables and memoising),
//! then checkpoints to IMAGE and exits. Restored with `thaw run IMAGE -- EXPR`, it evaluates the
//! Lua expression EXPR against the warm state, prints the result and exits.
//! `lua-warm - EXPR` is the cold start: the same warm-up, then the answer.

use std::fmt::Write as _;
use std::time::Instant;

/// The program the interpreter warms up with: `n` generated functions plus tables built from them.
fn program(n: usize) -> String {
    let mut src = String::with_capacity(n * 200);
    src.push_str("fns = {}\n");
    for i in 0..n {
        let _ = writeln!(
            src,
            "fns[{i}] = function(x) local a, b = x * {k} + {i}, (x ~ {i}) % 97 \
             if a % 3 == 0 then return a // 3 + b elseif a % 3 == 1 then return (a * 7) % 1000003 - b \
             else return a + b * {k} end end",
            k = i % 13 + 1
        );
    }
    src.push_str(
        r#"
memo = {}
function fib(n) if n < 2 then return n end local m = memo[n] if m then return m end
  local v = fib(n - 1) + fib(n - 2) memo[n] = v return v end
words = {}
for i = 1, 200000 do words[i] = string.format("w%06d:%d", i, fns[i % #fns](i)) end
index = {}
for i, w in ipairs(words) do index[w] = i end
total = 0
for round = 1, 3 do for i = 0, #fns do total = (total + fns[i](round * i)) % 1000000007 end end
function lookup(i) return index[words[i]] end
"#,
    );
    src
}

fn warm_up(lua: &mlua::Lua) -> mlua::Result<()> {
    lua.load(program(20_000)).set_name("warm.lua").exec()
}

fn answer(lua: &mlua::Lua, expr: &str) -> String {
    match lua.load(format!("return {expr}")).eval::<mlua::Value>() {
        Ok(v) => match v.to_string() {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        },
        Err(e) => format!("error: {e}"),
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let Some(image) = argv.next() else {
        eprintln!("usage: lua-warm IMAGE [KEY] | lua-warm - EXPR");
        std::process::exit(64);
    };
    let lua = mlua::Lua::new();
    let t0 = Instant::now();
    if let Err(e) = warm_up(&lua) {
        eprintln!("lua-warm: warm-up failed: {e}");
        std::process::exit(1);
    }
    let warm = t0.elapsed();
    if image == "-" {
        let expr = argv.next().unwrap_or_else(|| "total".into());
        println!(
            "lua: pid {} {expr} = {}",
            std::process::id(),
            answer(&lua, &expr)
        );
        return;
    }
    // Before the snapshot: collect Lua's garbage and give the freed heap pages back to the kernel,
    // so that the image holds live state only.
    if let Err(e) = lua.gc_collect() {
        eprintln!("lua-warm: {e}");
    }
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the kernel.
    unsafe { libc::malloc_trim(0) };
    // The interpreter never uses what its parent left open (a shell's or CI runner's pipe):
    // such descriptors are closed after restore rather than failing the checkpoint.
    let mut cp = thaw::Checkpoint::to(&image).unsupported_fds(thaw::FdAction::Drop);
    if let Some(key) = argv.next() {
        cp = cp.sign_with(key);
    }
    match cp.save() {
        Ok(thaw::Outcome::Saved(info)) => {
            for l in &info.left_out {
                eprintln!("lua-warm: {l}");
            }
            println!(
                "lua-warm: warmed up in {} ms, saved {} ({} MiB, paused {} µs)",
                warm.as_millis(),
                info.path.display(),
                info.size >> 20,
                info.pause.as_micros()
            );
        }
        Ok(thaw::Outcome::Restored(r)) => {
            let expr = r
                .args()
                .first()
                .map_or_else(|| "total".into(), |a| a.to_string_lossy().into_owned());
            println!(
                "lua: pid {} {expr} = {}",
                std::process::id(),
                answer(&lua, &expr)
            );
        }
        Err(e) => {
            eprintln!("lua-warm: {e}");
            std::process::exit(1);
        }
    }
}
