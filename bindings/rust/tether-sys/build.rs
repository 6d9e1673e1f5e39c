// Links libtether when the "link" feature is on.  TETHER_LIB_DIR names the
// directory of libtether.so (the CMake build sets it to its own tree);
// without it the linker's default path is searched (an installed
// libtether-dev).
use std::env;

fn main() {
    println!("cargo:rerun-if-env-changed=TETHER_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_LINK").is_none() {
        return;
    }
    if let Some(dir) = env::var_os("TETHER_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", dir.to_string_lossy());
    }
    println!("cargo:rustc-link-lib=dylib=tether");
}
