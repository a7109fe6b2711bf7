//! A native library a runtime unpacked to a temporary file and loaded (sqlite-jdbc, JNA and
//! snappy-java do so, and delete it as the JVM exits): gone at restore, the refusal says why and
//! what to do, where it said only "No such file or directory". Through Debian's python3 (ctypes
//! loads a copy of libz) and the thaw package.

mod common;

use common::*;

const SCRIPT: &str = r#"
import ctypes, shutil, sys, thaw
shutil.copy("/usr/lib/x86_64-linux-gnu/libz.so.1", sys.argv[3])
z = ctypes.CDLL(sys.argv[3])
z.zlibVersion.restype = ctypes.c_char_p
version = z.zlibVersion()
thaw.checkpoint(sys.argv[1], key=sys.argv[2], exit_after_save=True)
print(version.decode(), z.zlibVersion().decode(), flush=True)
"#;

#[test]
fn a_native_library_unpacked_to_a_temporary_file_and_removed_is_refused_with_the_reason() {
    let env = Env::new();
    let img = env.path("lib.thaw");
    let lib = env.path("libz-unpacked.so");
    let o = env.python_script(SCRIPT, &img).arg(&lib).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Still there: restored, the library answers.
    let o = env.restore(&img, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let v: Vec<&str> = out.split_whitespace().collect();
    assert!(v.len() == 2 && v[0] == v[1], "{out}");
    // Removed, as the JVM's deleteOnExit does: refused, naming the file and the reason.
    std::fs::remove_file(&lib).unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("cannot open mapped file {}", lib.display()))
            && err.contains("removed since the checkpoint (a library a runtime unpacked"),
        "{err}"
    );
}
