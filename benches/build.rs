//! Links the system libsrtp2 into the SRTP benchmark when pkg-config finds it
//! (Debian `libsrtp2-dev`), so rvoip and libsrtp2 are timed in one run. The
//! `pkg-config` and `cc` crates do the probing and the C build.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(libsrtp2)");
    println!("cargo::rerun-if-changed=srtp/shim.c");
    if let Ok(lib) = pkg_config::Config::new().probe("libsrtp2") {
        let mut build = cc::Build::new();
        build.file("srtp/shim.c").opt_level(2);
        for dir in &lib.include_paths {
            build.include(dir);
        }
        build.compile("rvoip_bench_srtp");
        println!("cargo::rustc-cfg=libsrtp2");
    } else {
        println!("cargo::warning=libsrtp2 not found: the SRTP benchmark times rvoip alone");
    }
}
