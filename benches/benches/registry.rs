//! Restoring by reference from an OCI registry (Debian's `docker-registry`, started here on
//! 127.0.0.1) against restoring the same image from its file, in one run: time from starting
//! `thaw run` to the restored process's first output byte, for a 64 MiB heap, with the image
//! already in the launcher's cache and with an empty cache (everything the process needs
//! fetched during the restore). Skipped, and said so, where `docker-registry` is missing.

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
fn restore_once(thaw: &Path, image: &str, trust: &Path, cache: &Path) -> Duration {
    let mut c = thaw_benches::command(thaw);
    c.env("THAW_CACHE_DIR", cache)
        .args(["run", "--trust"])
        .arg(trust)
        .arg(image);
    thaw_benches::until_first_byte(c)
}

fn private_dir(path: PathBuf) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path
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
    let reference = format!("{addr}/bench/app:64m");
    let o = thaw_benches::command(&thaw)
        .arg("push")
        .arg(&image)
        .arg(&reference)
        .output()
        .unwrap();
    assert!(o.status.success(), "thaw push failed");
    // "REF: pushed sha256:HEX: ..." names the manifest: by digest, a cached image needs no request.
    let digest = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .find_map(|w| {
            w.strip_prefix("sha256:")
                .map(|h| h.trim_end_matches(':').to_string())
        })
        .expect("the manifest digest");
    let pinned = format!("{addr}/bench/app@sha256:{digest}");
    let file = image.to_str().unwrap().to_string();

    let mut g = c.benchmark_group("registry");
    g.sample_size(10);
    // Each variant has its own cache (working sets are recorded by the first restore).
    let cache = private_dir(dir.path().join("cache-file"));
    g.bench_function("file", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| restore_once(&thaw, &file, &trust, &cache))
                .sum()
        })
    });
    let cache = private_dir(dir.path().join("cache-warm"));
    g.bench_function("reference_image_in_cache", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| restore_once(&thaw, &reference, &trust, &cache))
                .sum()
        })
    });
    g.bench_function("reference_by_digest_in_cache", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| restore_once(&thaw, &pinned, &trust, &cache))
                .sum()
        })
    });
    let cache = private_dir(dir.path().join("cache-empty"));
    g.bench_function("reference_empty_cache", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    let _ = std::fs::remove_dir_all(cache.join("images"));
                    restore_once(&thaw, &reference, &trust, &cache)
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
