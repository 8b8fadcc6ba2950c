//! Links `podctl` as a position-dependent executable, as Go links kubelet, containerd and
//! runc. A position-independent one is relocated by the dynamic loader at every exec
//! (podctl execs itself as each pod's init): ~600 KiB of relocated pointers that every
//! pod init would keep as private memory, and the time to write them.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
