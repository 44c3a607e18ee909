//! Links bcg729 when the `g729` feature is on (Debian: libbcg729-dev), and
//! opencore-amr and vo-amrwbenc with `amr` (libopencore-amrnb-dev,
//! libopencore-amrwb-dev, libvo-amrwbenc-dev).
fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_G729");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_AMR");
    if std::env::var_os("CARGO_FEATURE_G729").is_some() {
        println!("cargo:rustc-link-lib=dylib=bcg729");
    }
    if std::env::var_os("CARGO_FEATURE_AMR").is_some() {
        for lib in ["opencore-amrnb", "opencore-amrwb", "vo-amrwbenc"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
