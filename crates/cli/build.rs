//! No build step. This script exists for its build-dependency on `syn` with `visit-mut`, the one
//! host feature that the `mpi` feature's bindgen (rsmpi's mpi-sys) adds: with it in every build,
//! the host's `syn` is the same with and without `--features mpi`, so an MPI build (CI's MPI
//! clippy and tests) reuses every proc-macro, and every crate derived with one, instead of
//! compiling the whole dependency tree a second time.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
