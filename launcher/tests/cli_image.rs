//! `thaw keygen / sign / verify / inspect` on real files, through the real binary.

mod common;

use std::process::Command;

use common::*;

const CORRUPT: i32 = 65;
const SIGNATURE: i32 = 66;
const USAGE: i32 = 64;
const IO: i32 = 74;

#[test]
fn keygen_sign_verify_inspect_round_trip() {
    let dir = scratch();
    let (key, pubkey) = keygen(dir.path(), "k");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let o = thaw(dir.path(), &["keygen", "k"]);
    expect_failure(&o, USAGE, "already exists");

    let img = dir.path().join("app.thaw");
    let m = write_sample_image(&img, 300);
    let o = thaw(dir.path(), &["sign", "--key", "k.key", "app.thaw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = thaw(dir.path(), &["verify", "--trust", "k.pub", "app.thaw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let pub_fp = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl pkey -pubin -in {} -outform DER | sha256sum",
            pubkey.display()
        ))
        .output()
        .unwrap();
    let pub_fp = String::from_utf8_lossy(&pub_fp.stdout)[..64].to_string();
    assert!(out.contains(&format!("signed by sha256:{pub_fp}")), "{out}");

    let o = thaw(
        dir.path(),
        &["inspect", "--json", "--trust", "k.pub", "app.thaw"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["signature"]["verified"], true);
    assert_eq!(v["signature"]["signer"], format!("sha256:{pub_fp}"));
    assert_eq!(v["header"]["format_version"], thaw::image::FORMAT_VERSION);
    let back: thaw::state::Manifest = serde_json::from_value(v["manifest"].clone()).unwrap();
    let mut expected = m.clone();
    expected.chunks = back.chunks.clone();
    assert_eq!(back, expected);
    assert_eq!(back.chunks.digests.len(), 5); // 300 KiB in 64 KiB chunks

    let o = thaw(dir.path(), &["inspect", "--trust", "k.pub", "app.thaw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "pid: 31337",
        "comm: sample-app",
        "cwd: /srv/app",
        "kernel_release: 6.18.0-test",
        "verified: true",
        "groups: [100, 101]",
        "chunk_size: 65536",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn inspect_no_verify_says_so_loudly() {
    let dir = scratch();
    let img = dir.path().join("app.thaw");
    write_sample_image(&img, 8);
    let o = thaw(dir.path(), &["inspect", "app.thaw"]);
    expect_failure(&o, SIGNATURE, "not signed");
    let o = thaw(dir.path(), &["inspect", "--no-verify", "app.thaw"]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("NOT checked"), "{}", stderr(&o));
    assert!(stdout(&o).contains("verified: false"));
}

#[test]
fn openssl_keys_work_and_ours_work_in_openssl() {
    let dir = scratch();
    let d = dir.path();
    let sh = |cmd: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    };
    // openssl → thaw
    sh("openssl genpkey -algorithm ed25519 -out o.key && chmod 600 o.key && openssl pkey -in o.key -pubout -out o.pub");
    write_sample_image(&d.join("a.thaw"), 64);
    let o = thaw(d, &["sign", "--key", "o.key", "a.thaw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = thaw(d, &["verify", "--trust", "o.pub", "a.thaw"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // thaw → openssl: openssl reads our secret key and derives our public key ...
    keygen(d, "t");
    let derived = sh("openssl pkey -in t.key -pubout");
    assert_eq!(derived.stdout, std::fs::read(d.join("t.pub")).unwrap());
    // ... and checks our image signature over domain ‖ SHA-256(header block ‖ manifest), the
    // digest made by openssl too.
    write_sample_image(&d.join("b.thaw"), 64);
    assert!(thaw(d, &["sign", "--key", "t.key", "b.thaw"])
        .status
        .success());
    let bytes = std::fs::read(d.join("b.thaw")).unwrap();
    let h = thaw::image::ImageFile::open(&d.join("b.thaw"))
        .unwrap()
        .header()
        .to_owned();
    let mut signed = bytes[..h.payload_off as usize].to_vec();
    signed.extend_from_slice(&bytes[h.manifest_off as usize..h.trailer_off as usize]);
    std::fs::write(d.join("hm"), &signed).unwrap();
    let digest = sh("openssl dgst -sha256 -binary hm").stdout;
    let mut msg = thaw::image::SIGNATURE_DOMAIN.to_vec();
    msg.extend_from_slice(&digest);
    std::fs::write(d.join("msg"), &msg).unwrap();
    let t = h.trailer_off as usize;
    std::fs::write(d.join("sig"), &bytes[t + 48..t + 112]).unwrap();
    sh("openssl pkeyutl -verify -pubin -inkey t.pub -rawin -in msg -sigfile sig");
}

#[test]
fn secret_key_readable_by_others_is_refused() {
    let dir = scratch();
    keygen(dir.path(), "k");
    write_sample_image(&dir.path().join("a.thaw"), 8);
    std::fs::set_permissions(
        dir.path().join("k.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let before = std::fs::read(dir.path().join("a.thaw")).unwrap();
    let o = thaw(dir.path(), &["sign", "--key", "k.key", "a.thaw"]);
    expect_failure(&o, USAGE, "readable by others (mode 0644)");
    assert_eq!(std::fs::read(dir.path().join("a.thaw")).unwrap(), before);
}

/// Every kind of bad input: one line, the right exit code, never a panic.
#[test]
fn bad_inputs_get_one_line_and_the_right_exit_code() {
    let dir = scratch();
    let d = dir.path();
    keygen(d, "k");
    keygen(d, "stranger");
    write_sample_image(&d.join("good.thaw"), 200);
    assert!(thaw(d, &["sign", "--key", "k.key", "good.thaw"])
        .status
        .success());
    let good = std::fs::read(d.join("good.thaw")).unwrap();
    let h = thaw::image::ImageFile::open(&d.join("good.thaw"))
        .unwrap()
        .header()
        .to_owned();

    let check = |name: &str, bytes: &[u8], code: i32, needle: &str| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        for cmd in ["verify", "inspect"] {
            let o = thaw(d, &[cmd, "--trust", "k.pub", name]);
            expect_failure(&o, code, needle);
        }
    };
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let put =
        |b: &mut Vec<u8>, off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());

    check("empty.thaw", &[], CORRUPT, "too short");
    check(
        "magic.thaw",
        &with(&|b| b[1] = b'X'),
        CORRUPT,
        "wrong magic",
    );
    let next = thaw::image::FORMAT_VERSION + 1;
    check(
        "version.thaw",
        &with(&|b| b[8] = next as u8),
        CORRUPT,
        &format!("unknown image format version {next}"),
    );
    for (i, cut) in [
        100usize,
        4096,
        h.manifest_off as usize,
        h.trailer_off as usize,
        good.len() - 1,
    ]
    .into_iter()
    .enumerate()
    {
        let needle = if cut < 128 { "too short" } else { "truncated" };
        check(&format!("cut{i}.thaw"), &good[..cut], CORRUPT, needle);
    }
    check(
        "payload-past-end.thaw",
        &with(&|b| put(b, 40, 1 << 40)),
        CORRUPT,
        "past the end",
    );
    check(
        "overlap.thaw",
        &with(&|b| put(b, 48, h.manifest_off - 8192)),
        CORRUPT,
        "next section starts at",
    );
    check(
        "huge.thaw",
        &with(&|b| put(b, 56, u64::MAX - 10)),
        CORRUPT,
        "past the end",
    );
    check(
        "no-trailer.thaw",
        &with(&|b| {
            let t = h.trailer_off as usize;
            b[t..t + 8].fill(0)
        }),
        CORRUPT,
        "trailer missing",
    );
    // `inspect` trusts the signed manifest only; the payload is `verify`'s job.
    std::fs::write(
        d.join("payload-flip.thaw"),
        with(&|b| b[4096 + 70_000] ^= 0x10),
    )
    .unwrap();
    let o = thaw(d, &["verify", "--trust", "k.pub", "payload-flip.thaw"]);
    expect_failure(&o, CORRUPT, "payload chunk 1 (bytes");
    check(
        "manifest-flip.thaw",
        &with(&|b| b[h.manifest_off as usize + 3] ^= 1),
        SIGNATURE,
        "signature does not match",
    );
    check(
        "sig-flip.thaw",
        &with(&|b| b[h.trailer_off as usize + 100] ^= 1),
        SIGNATURE,
        "signature does not match",
    );

    // Signed by a key nobody trusts.
    std::fs::write(d.join("s.thaw"), &good).unwrap();
    assert!(thaw(d, &["sign", "--key", "stranger.key", "s.thaw"])
        .status
        .success());
    let o = thaw(d, &["verify", "--trust", "k.pub", "s.thaw"]);
    expect_failure(&o, SIGNATURE, "not trusted");

    // Missing file, directory, usage.
    expect_failure(&thaw(d, &["verify", "nope.thaw"]), IO, "cannot open");
    expect_failure(
        &thaw(d, &["verify", "--trust", "k.pub", "."]),
        CORRUPT,
        "not a regular file",
    );
    // A FIFO where the image should be: refused at once, never waited on.
    assert!(Command::new("mkfifo")
        .arg(d.join("fifo.thaw"))
        .status()
        .unwrap()
        .success());
    expect_failure(
        &thaw(d, &["verify", "--trust", "k.pub", "fifo.thaw"]),
        CORRUPT,
        "not a regular file",
    );
    assert_eq!(thaw(d, &["verify"]).status.code(), Some(USAGE));
    assert_eq!(thaw(d, &["frobnicate"]).status.code(), Some(USAGE));
}

/// A sample of single flipped bytes through the binary (the property test over many positions is
/// in the SDK's image_format tests).
#[test]
fn flipped_bytes_never_verify() {
    let dir = scratch();
    let d = dir.path();
    keygen(d, "k");
    write_sample_image(&d.join("good.thaw"), 128);
    assert!(thaw(d, &["sign", "--key", "k.key", "good.thaw"])
        .status
        .success());
    let good = std::fs::read(d.join("good.thaw")).unwrap();
    let step = good.len() / 97;
    for pos in (0..good.len())
        .step_by(step)
        .chain(good.len() - 112..good.len())
    {
        let mut b = good.clone();
        b[pos] ^= 0x80;
        std::fs::write(d.join("f.thaw"), &b).unwrap();
        let o = thaw(d, &["verify", "--trust", "k.pub", "f.thaw"]);
        let code = o.status.code();
        assert!(
            code == Some(CORRUPT) || code == Some(SIGNATURE),
            "flip at {pos}: {code:?} {}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"));
    }
}
