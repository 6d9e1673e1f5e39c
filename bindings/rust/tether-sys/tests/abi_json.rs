//! tether-sys agrees with abi/tether-abi.json, the ABI as data: build.rs
//! turns the JSON into checks (abi_json_check.rs), so that every function,
//! callback type, handle typedef and struct field of the JSON must have
//! the same type in Rust or this file does not compile; here the rest is
//! compared: the list of functions both ways, every struct's size,
//! alignment and fields (name, offset, size, in order), every constant's
//! value.
#[allow(dead_code)]
mod json {
    include!(concat!(env!("OUT_DIR"), "/abi_json_check.rs"));
}

use std::collections::BTreeSet;

#[test]
fn the_declarations_are_the_jsons() {
    let path = match json::JSON {
        Some(p) => p,
        None => {
            eprintln!("no abi/tether-abi.json: nothing to compare (set TETHER_ABI_JSON)");
            return;
        }
    };
    // Functions, both ways: the JSON's (typed above) and bindings.rs's.
    let from_json: BTreeSet<&str> = json::functions().into_iter().collect();
    let src = include_str!("../src/bindings.rs");
    let from_rust: BTreeSet<&str> = src
        .split("pub fn ")
        .skip(1)
        .filter_map(|s| s.split('(').next())
        .filter(|n| n.starts_with("tether_"))
        .collect();
    assert_eq!(from_json, from_rust, "functions differ from {path}");

    // Structs: the same, in the same order, with the same layout.
    let rust: Vec<_> = tether_sys::layout::structs()
        .into_iter()
        .map(|s| (s.name, s.size, s.align, s.fields))
        .collect();
    let want = json::structs();
    assert_eq!(rust.len(), want.len(), "struct count differs from {path}");
    for (r, w) in rust.iter().zip(&want) {
        assert_eq!(r, w, "struct {} differs from {path}", w.0);
    }

    for (name, have, want) in json::constants() {
        assert_eq!(have, want, "{name} differs from {path}");
    }
    eprintln!(
        "{} functions, {} structs, {} constants: as {path} says",
        from_json.len(),
        want.len(),
        json::constants().len()
    );
}
