//! Compiles the C half of the threads test (a `__thread` variable).
fn main() {
    cc::Build::new().file("zdtm/tls.c").compile("zdtm_tls");
    println!("cargo:rerun-if-changed=zdtm/tls.c");
}
