// Links libtether when the "link" feature is on, and writes the checks of
// tests/abi_json.rs from abi/tether-abi.json.
//
// TETHER_LIB_DIR names the directory of libtether.so (the CMake build sets
// it to its own tree); without it the linker's default path is searched
// (an installed libtether-dev).  TETHER_ABI_JSON names the ABI description
// (default: the tree's abi/tether-abi.json; without one the JSON test
// says it has nothing to check).
use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=TETHER_LIB_DIR");
    println!("cargo:rerun-if-env-changed=TETHER_ABI_JSON");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_LINK").is_some() {
        if let Some(dir) = env::var_os("TETHER_LIB_DIR") {
            println!("cargo:rustc-link-search=native={}", dir.to_string_lossy());
        }
        println!("cargo:rustc-link-lib=dylib=tether");
    }
    let json = match env::var_os("TETHER_ABI_JSON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../../abi/tether-abi.json"),
    };
    println!("cargo:rerun-if-changed={}", json.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("abi_json_check.rs");
    let code = match std::fs::read_to_string(&json) {
        Ok(text) => checks(&parse(&text), &json.display().to_string()),
        Err(_) => format!("pub const JSON: Option<&str> = None; // no {}\n", json.display()),
    };
    std::fs::write(out, code).unwrap();
}

/* ---- a small JSON reader (no registry crate) ---------------------------- */

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(BTreeMap<String, J>),
}

impl J {
    fn get(&self, k: &str) -> &J {
        match self {
            J::Obj(m) => m.get(k).unwrap_or(&J::Null),
            _ => &J::Null,
        }
    }
    fn s(&self) -> &str {
        match self {
            J::Str(s) => s,
            _ => "",
        }
    }
    fn n(&self) -> i64 {
        match self {
            J::Num(n) => *n as i64,
            _ => 0,
        }
    }
    fn b(&self) -> bool {
        matches!(self, J::Bool(true))
    }
    fn a(&self) -> &[J] {
        match self {
            J::Arr(v) => v,
            _ => &[],
        }
    }
}

fn parse(text: &str) -> J {
    let b = text.as_bytes();
    let mut i = 0;
    let v = value(b, &mut i);
    skip(b, &mut i);
    assert!(i == b.len(), "tether-abi.json: trailing text at byte {i}");
    v
}

fn skip(b: &[u8], i: &mut usize) {
    while *i < b.len() && b[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

fn value(b: &[u8], i: &mut usize) -> J {
    skip(b, i);
    match b[*i] {
        b'{' => {
            *i += 1;
            let mut m = BTreeMap::new();
            loop {
                skip(b, i);
                if b[*i] == b'}' {
                    *i += 1;
                    return J::Obj(m);
                }
                let k = match value(b, i) {
                    J::Str(s) => s,
                    other => panic!("tether-abi.json: key {other:?}"),
                };
                skip(b, i);
                assert_eq!(b[*i], b':');
                *i += 1;
                m.insert(k, value(b, i));
                skip(b, i);
                if b[*i] == b',' {
                    *i += 1;
                }
            }
        }
        b'[' => {
            *i += 1;
            let mut v = Vec::new();
            loop {
                skip(b, i);
                if b[*i] == b']' {
                    *i += 1;
                    return J::Arr(v);
                }
                v.push(value(b, i));
                skip(b, i);
                if b[*i] == b',' {
                    *i += 1;
                }
            }
        }
        b'"' => {
            *i += 1;
            let mut s = String::new();
            while b[*i] != b'"' {
                if b[*i] == b'\\' {
                    *i += 1;
                    match b[*i] {
                        b'n' => s.push('\n'),
                        b't' => s.push('\t'),
                        b'u' => {
                            let h = std::str::from_utf8(&b[*i + 1..*i + 5]).unwrap();
                            s.push(char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap_or('?'));
                            *i += 4;
                        }
                        c => s.push(c as char),
                    }
                    *i += 1;
                } else {
                    let start = *i;
                    while b[*i] != b'"' && b[*i] != b'\\' {
                        *i += 1;
                    }
                    s.push_str(std::str::from_utf8(&b[start..*i]).unwrap());
                }
            }
            *i += 1;
            J::Str(s)
        }
        b't' => {
            *i += 4;
            J::Bool(true)
        }
        b'f' => {
            *i += 5;
            J::Bool(false)
        }
        b'n' => {
            *i += 4;
            J::Null
        }
        _ => {
            let start = *i;
            while *i < b.len() && (b[*i] == b'-' || b[*i] == b'+' || b[*i] == b'.' || b[*i] == b'e' || b[*i] == b'E' || b[*i].is_ascii_digit()) {
                *i += 1;
            }
            J::Num(std::str::from_utf8(&b[start..*i]).unwrap().parse().unwrap())
        }
    }
}

/* ---- the checks ------------------------------------------------------------ */

/// The Rust spelling of a C type of the JSON.
fn rust_type(t: &J) -> String {
    match t.get("kind").s() {
        "void" => "()".into(),
        "integer" => named(t.get("name").s()),
        "callback" => format!("tether_sys::{}", t.get("name").s()),
        "function_pointer" => format!("::std::option::Option<{}>", fn_type(t.get("function"))),
        "pointer" => {
            let mut s = named(t.get("pointee").s());
            for level in 0..t.get("pointer").n() {
                let q = if level == 0 && t.get("const").b() { "*const " } else { "*mut " };
                s = format!("{q}{s}");
            }
            s
        }
        k => panic!("tether-abi.json: unknown type kind {k}"),
    }
}

fn named(n: &str) -> String {
    match n {
        "void" => "::std::os::raw::c_void".into(),
        "char" => "::std::os::raw::c_char".into(),
        "int" => "::std::os::raw::c_int".into(),
        "unsigned" | "unsigned int" => "::std::os::raw::c_uint".into(),
        "size_t" => "usize".into(),
        "int8_t" | "int16_t" | "int32_t" | "int64_t" => format!("i{}", &n[3..n.len() - 2]),
        "uint8_t" | "uint16_t" | "uint32_t" | "uint64_t" => format!("u{}", &n[4..n.len() - 2]),
        _ => format!("tether_sys::{n}"),
    }
}

/// `unsafe extern "C" fn(..) -> ..` of a JSON function or callback.
fn fn_type(f: &J) -> String {
    let params: Vec<String> = f.get("params").a().iter().map(|p| rust_type(p.get("type"))).collect();
    let ret = rust_type(f.get("returns"));
    let ret = if ret == "()" { String::new() } else { format!(" -> {ret}") };
    format!("unsafe extern \"C\" fn({}){}", params.join(", "), ret)
}

fn checks(d: &J, path: &str) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "pub const JSON: Option<&str> = Some({path:?});");
    // Functions: each declaration has the JSON's type (a mismatch does not
    // compile), and the list of names is compared at run time.
    c.push_str("#[allow(unused_variables, clippy::type_complexity)]\npub fn functions() -> Vec<&'static str> {\n");
    let mut names = Vec::new();
    for f in d.get("functions").a() {
        let name = f.get("name").s();
        if f.get("exported_by").s() != "library" {
            continue; // tether_plugin_entry: the plugin defines it
        }
        let _ = writeln!(c, "    let f: {} = tether_sys::{name};", fn_type(f));
        names.push(format!("{name:?}"));
    }
    let _ = writeln!(c, "    vec![{}]\n}}", names.join(", "));
    // Callback types.
    for cb in d.get("callbacks").a() {
        let name = cb.get("name").s();
        let _ = writeln!(
            c,
            "#[allow(dead_code)]\nfn callback_{name}(x: tether_sys::{name}) -> ::std::option::Option<{}> {{ x }}",
            fn_type(cb)
        );
    }
    // Handles and other typedefs.
    for t in d.get("typedefs").a() {
        let name = t.get("name").s();
        if t.get("type").get("kind").s() == "integer" {
            let _ = writeln!(
                c,
                "#[allow(dead_code)]\nfn typedef_{name}(x: tether_sys::{name}) -> {} {{ x }}",
                rust_type(t.get("type"))
            );
        }
    }
    // Struct fields: their types (compiled) and layout (compared at run time).
    c.push_str("#[allow(clippy::type_complexity)]\npub fn structs() -> Vec<(&'static str, usize, usize, Vec<(&'static str, usize, usize)>)> {\n");
    c.push_str("    let mut v = Vec::new();\n");
    for s in d.get("structs").a() {
        let name = s.get("name").s();
        let _ = writeln!(c, "    {{\n        // SAFETY: integers, pointers and Option<fn>: all-zero is valid.\n        let z: tether_sys::{name} = unsafe {{ ::std::mem::zeroed() }};");
        let mut fields = Vec::new();
        for f in s.get("fields").a() {
            let fname = f.get("name").s();
            let rname = if fname == "fn" { "fn_" } else { fname };
            let _ = writeln!(c, "        let _: {} = z.{rname};", rust_type(f.get("type")));
            fields.push(format!("({fname:?}, {}, {})", f.get("offset").n(), f.get("size").n()));
        }
        let _ = writeln!(
            c,
            "        v.push(({name:?}, {}, {}, vec![{}]));\n    }}",
            s.get("size").n(),
            s.get("align").n(),
            fields.join(", ")
        );
    }
    c.push_str("    v\n}\n");
    // Constants and statuses: each exists in Rust with the JSON's value.
    c.push_str("pub fn constants() -> Vec<(&'static str, i64, i64)> {\n    vec![\n");
    for k in d.get("constants").a().iter().chain(d.get("statuses").a()) {
        let name = k.get("name").s();
        let _ = writeln!(c, "        ({name:?}, tether_sys::{name} as i64, {}),", k.get("value").n());
    }
    c.push_str("    ]\n}\n");
    c
}
