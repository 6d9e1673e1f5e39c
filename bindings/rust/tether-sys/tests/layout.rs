//! Every struct of tether-sys has the C compiler's size, alignment and field
//! offsets: this test writes a C program that prints them with sizeof,
//! _Alignof and offsetof, compiles it with the C compiler (`$CC`, else `cc`)
//! against the headers (`$TETHER_INCLUDE_DIR`, else the tree's
//! `abi/include`), runs it, and compares its answer with Rust's.
use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

fn include_dir() -> PathBuf {
    match env::var_os("TETHER_INCLUDE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../abi/include"),
    }
}

#[test]
fn every_struct_matches_the_c_compiler() {
    let structs = tether_sys::layout::structs();
    assert!(structs.len() >= 6, "expected every struct of the headers");

    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <tether/tether_plugin.h>\nint main(void) {\n",
    );
    let mut rust = BTreeMap::new();
    for s in &structs {
        let _ = writeln!(
            c,
            "    printf(\"%s %zu %zu\\n\", \"{0}\", sizeof({0}), (size_t)_Alignof({0}));",
            s.name
        );
        rust.insert(s.name.to_string(), format!("{} {}", s.size, s.align));
        for (f, off, size) in &s.fields {
            let _ = writeln!(
                c,
                "    printf(\"%s %zu %zu\\n\", \"{0}.{1}\", offsetof({0}, {1}), sizeof((({0} *)0)->{1}));",
                s.name, f
            );
            rust.insert(format!("{}.{}", s.name, f), format!("{off} {size}"));
        }
    }
    c.push_str("    return 0;\n}\n");

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("tether_layout_probe.c");
    let exe = dir.join("tether_layout_probe");
    std::fs::write(&src, c).unwrap();
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    // The compiler and the probe are not the program under test: under a
    // sanitizer preset they must not get its preloaded runtime.
    let st = Command::new(&cc)
        .env_remove("LD_PRELOAD")
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(include_dir())
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(st.success(), "the C probe did not compile: {}", src.display());
    let out = Command::new(&exe).env_remove("LD_PRELOAD").output().expect("the C probe did not run");
    assert!(out.status.success());

    let mut c_said = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (k, v) = line.split_once(' ').unwrap();
        c_said.insert(k.to_string(), v.to_string());
    }
    let mut bad = Vec::new();
    for (k, v) in &rust {
        if c_said.get(k) != Some(v) {
            bad.push(format!("{k}: Rust {v}, C {:?}", c_said.get(k)));
        }
    }
    assert!(bad.is_empty(), "layouts differ:\n{}", bad.join("\n"));
    // Every Rust field has C's offset and size, and each struct C's size, so
    // no C field can be missing from Rust unless padding hides it; the field
    // lists are compared with abi/tether-abi.json too.
    eprintln!("{} structs, {} fields: same layout as C", structs.len(), rust.len() - structs.len());
}

#[test]
fn api_has_follows_the_size() {
    let mut api = tether_sys::TETHER_LINKED_API;
    assert!(tether_sys::tether_api_has!(&api, callback_on_free));
    api.size = 8;
    assert!(!tether_sys::tether_api_has!(&api, strerror));
    api.size = 16;
    assert!(tether_sys::tether_api_has!(&api, strerror));
    assert!(!tether_sys::tether_api_has!(&api, status_name));
}
