//! Links `podctl` as a position-dependent executable, as Go links kubelet, containerd and
//! runc. A position-independent one is relocated by the dynamic loader at every exec
//! (podctl execs itself as each pod's init): ~600 KiB of relocated pointers that every
//! pod init would keep as private memory, and the time to write them.
//!
//! Compiles the Kubernetes API's protobuf definitions (src/apiserver/proto) into one
//! descriptor set, which the API server reads and writes protobuf bodies with.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    let root = Path::new("src/apiserver/proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut protos = Vec::new();
    find_protos(root, &mut protos);
    protos.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kubernetes-api.pb");
    let protoc = std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into());
    let status = Command::new(&protoc)
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg(format!("-I{}", root.display()))
        .args(protos.iter().map(|p| p.strip_prefix(root).expect("under the root")))
        .status()
        .unwrap_or_else(|e| panic!("run {protoc} (Debian: apt install protobuf-compiler): {e}"));
    assert!(status.success(), "{protoc} could not compile {}", root.display());
}

fn find_protos(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the proto directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            find_protos(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}
