//! Restoring by reference from an OCI registry (Debian's `docker-registry`, started here on
//! 127.0.0.1) against restoring the same image from its file, in one run: time from starting
//! `thaw run` to the restored process's first output byte (its answer), for a 64 MiB heap and
//! for the CPython + pandas example, with the image already in the launcher's cache (by tag and
//! by digest) and on a machine that has nothing (empty cache: everything the process needs is
//! fetched during the restore, in the order of the working set that came with the image). Then
//! a rebuild of the pandas image pushed after it: the bytes it uploads (pages shared with the
//! first), and its first start from an empty cache against its file.
//! Skipped, and said so, where `docker-registry` (or pandas) is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

fn thaw_bin() -> PathBuf {
    let thaw = Path::new(env!("CARGO_BIN_EXE_bench-app")).with_file_name("thaw");
    assert!(
        thaw.exists(),
        "{} is missing: run `cargo build --release -p thaw-launcher` first (scripts/bench does)",
        thaw.display()
    );
    thaw
}

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A registry storing under `dir`, on a free loopback port: (it, its address).
fn start_registry(dir: &Path) -> Option<(Registry, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("registry").display()
        ),
    )
    .ok()?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("registry.log")).ok()?)
        .spawn()
        .ok()?;
    let reg = Registry(child);
    // Ready once it accepts connections.
    for _ in 0..1000 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Some((reg, addr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// One restore of `image` (a file or a reference) with the cache `cache`, until the restored
/// process's first byte of output.
fn restore_once(thaw: &Path, image: &str, trust: &Path, cache: &Path, args: &[&str]) -> Duration {
    let mut c = thaw_benches::command(thaw);
    c.env("THAW_CACHE_DIR", cache)
        .args(["run", "--trust"])
        .arg(trust)
        .arg(image)
        .arg("--")
        .args(args);
    thaw_benches::until_first_byte(c)
}

/// `thaw push IMAGE REFERENCE` with `cache` (whose working set for the image goes with it): the
/// manifest digest, and the bytes uploaded of the artifact's.
fn push(thaw: &Path, image: &Path, reference: &str, cache: &Path) -> (String, u64, u64) {
    let o = thaw_benches::command(thaw)
        .env("THAW_CACHE_DIR", cache)
        .arg("push")
        .arg(image)
        .arg(reference)
        .output()
        .unwrap();
    assert!(o.status.success(), "thaw push failed");
    // "REF: pushed sha256:HEX: N blobs, SENT of TOTAL bytes uploaded ...".
    let out = String::from_utf8_lossy(&o.stdout);
    let words: Vec<&str> = out.split_whitespace().collect();
    let digest = (words.iter())
        .find_map(|w| {
            w.strip_prefix("sha256:")
                .map(|h| h.trim_end_matches(':').to_string())
        })
        .expect("the manifest digest");
    let of = words.iter().position(|w| *w == "of").expect("X of Y bytes");
    let number = |w: &str| w.parse::<u64>().expect("a byte count");
    (digest, number(words[of - 1]), number(words[of + 1]))
}

fn private_dir(path: PathBuf) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path
}

/// The variants for one image: from its file, by tag and by digest with the image cached, and
/// by tag on a machine with nothing cached.
#[allow(clippy::too_many_arguments)]
fn variants(
    c: &mut Criterion,
    name: &str,
    thaw: &Path,
    dir: &Path,
    addr: &str,
    image: &Path,
    trust: &Path,
    args: &[&str],
) {
    let file = image.to_str().unwrap().to_string();
    let reference = format!("{addr}/bench/{name}:v1");
    let home = private_dir(dir.join(format!("cache-{name}-file")));
    // The image's first restores record its working set, which the push takes along.
    for _ in 0..3 {
        restore_once(thaw, &file, trust, &home, args);
    }
    let (digest, _, _) = push(thaw, image, &reference, &home);
    let pinned = format!("{addr}/bench/{name}@sha256:{digest}");
    let mut g = c.benchmark_group(format!("registry_{name}"));
    g.sample_size(10);
    g.bench_function("file", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| restore_once(thaw, &file, trust, &home, args))
                .sum()
        })
    });
    let warm = private_dir(dir.join(format!("cache-{name}-warm")));
    g.bench_function("reference_image_in_cache", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| restore_once(thaw, &reference, trust, &warm, args))
                .sum()
        })
    });
    g.bench_function("reference_by_digest_in_cache", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| restore_once(thaw, &pinned, trust, &warm, args))
                .sum()
        })
    });
    let empty = dir.join(format!("cache-{name}-empty"));
    bench_empty_cache(&mut g, thaw, &reference, trust, &empty, args);
    g.finish();
}

/// `reference_empty_cache`: restores by reference with nothing on this machine (no image, no
/// working set of its own), the cache at `empty` made afresh each time.
fn bench_empty_cache(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    thaw: &Path,
    reference: &str,
    trust: &Path,
    empty: &Path,
    args: &[&str],
) {
    g.bench_function("reference_empty_cache", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    let _ = std::fs::remove_dir_all(empty);
                    private_dir(empty.to_path_buf());
                    restore_once(thaw, reference, trust, empty, args)
                })
                .sum()
        })
    });
}

fn bench(c: &mut Criterion) {
    let thaw = thaw_bin();
    let dir = tempfile::tempdir().unwrap();
    let Some((_registry, addr)) = start_registry(dir.path()) else {
        eprintln!(
            "registry: docker-registry is not installed (scripts/setup installs it): skipped"
        );
        return;
    };
    let (key, trust) = thaw_benches::keypair(dir.path());
    let image = dir.path().join("64m.thaw");
    let st = thaw_benches::command(env!("CARGO_BIN_EXE_bench-app"))
        .arg("image")
        .arg(&image)
        .arg("64")
        .arg(&key)
        .arg("1")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    variants(c, "heap64m", &thaw, dir.path(), &addr, &image, &trust, &[]);

    // Built as a pipeline builds images it pushes again and again: without address
    // randomisation and with a fixed hash seed (docs/distribution.md), so that a rebuild shares
    // its memory's layout with the build before.
    // (Each build writes `pandas.thaw` in a directory of its own: a path of another length in
    // its argv would move everything the interpreter allocates after it.)
    let build = |name: &str| {
        let image = private_dir(dir.path().join(name)).join("pandas.thaw");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/pandas_warm.py");
        let st = thaw_benches::command("setarch")
            .env("THAW_LIB", thaw.with_file_name("libthaw.so"))
            .env("PYTHONHASHSEED", "0")
            .args(["-R", "/usr/bin/python3"])
            .arg(&script)
            .arg(&image)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        st.is_ok_and(|s| s.success()).then_some(image)
    };
    let Some(pandas) = build("build-1") else {
        eprintln!("registry: the CPython + pandas example did not checkpoint (python3-pandas missing?): skipped");
        return;
    };
    variants(
        c,
        "pandas",
        &thaw,
        dir.path(),
        &addr,
        &pandas,
        &trust,
        &["Oslo"],
    );
    let rebuilt = build("build-2").expect("the pandas example checkpoints again");
    rebuilt_image(c, &thaw, dir.path(), &addr, &rebuilt, &trust, &["Oslo"]);
}

/// A rebuild of the pandas image pushed after the first (which `variants` pushed as
/// `bench/pandas:v1`): the bytes it uploads, and its first start on a machine that has nothing,
/// against its file.
fn rebuilt_image(
    c: &mut Criterion,
    thaw: &Path,
    dir: &Path,
    addr: &str,
    image: &Path,
    trust: &Path,
    args: &[&str],
) {
    let file = image.to_str().unwrap().to_string();
    let home = private_dir(dir.join("cache-rebuilt-file"));
    for _ in 0..3 {
        restore_once(thaw, &file, trust, &home, args);
    }
    let reference = format!("{addr}/bench/pandas:v2");
    let (_, sent, total) = push(thaw, image, &reference, &home);
    eprintln!(
        "registry: the rebuilt pandas image uploaded {sent} of {total} bytes ({:.1} %)",
        sent as f64 * 100.0 / total as f64
    );
    let mut g = c.benchmark_group("registry_pandas_rebuilt");
    g.sample_size(10);
    g.bench_function("file", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| restore_once(thaw, &file, trust, &home, args))
                .sum()
        })
    });
    bench_empty_cache(
        &mut g,
        thaw,
        &reference,
        trust,
        &dir.join("cache-rebuilt-empty"),
        args,
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
