//! Links bcg729 when the `g729` feature is on (Debian: libbcg729-dev).
fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_G729");
    if std::env::var_os("CARGO_FEATURE_G729").is_some() {
        println!("cargo:rustc-link-lib=dylib=bcg729");
    }
}
