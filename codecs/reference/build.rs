//! Links the C libraries this crate calls: Debian's libspandsp-dev and
//! libbcg729-dev (libopus comes with opusic-sys).
fn main() {
    println!("cargo:rustc-link-lib=dylib=spandsp");
    println!("cargo:rustc-link-lib=dylib=bcg729");
}
