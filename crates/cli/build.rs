//! Links the unwinder (libgcc_eh) and libgcc into the binary instead of loading
//! `libgcc_s.so.1` at run time, on Linux with glibc.
//!
//! Why: every `credkeeper` process is short (a `get` that reuses its file, a credential
//! helper call), so start-up is most of its cost. Loading libgcc_s costs a library map and
//! its relocations, and its constructor (`__cpu_indicator_init`) executes `cpuid`, which
//! traps to the hypervisor on virtual machines: together ~0.2 ms of a ~1.5 ms start
//! (bench/README.md, "Start-up"). Linked statically, only the unwinder's code the binary
//! uses comes in, and the constructor does not (nothing asks for CPU features through it).
//! Panics unwind as before: this is what `gcc -static-libgcc` does for C programs.
//!
//! How: Rust's std asks the linker for `-lgcc_s`; a linker script of that name, found
//! first on the search path, stands for the two static archives instead.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !linux_gnu {
        return;
    }
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("static-libgcc");
    std::fs::create_dir_all(&dir).expect("creating OUT_DIR/static-libgcc");
    std::fs::write(
        dir.join("libgcc_s.so"),
        "/* credkeeper's build.rs: libgcc linked in statically */\nINPUT(-lgcc_eh -lgcc)\n",
    )
    .expect("writing OUT_DIR/static-libgcc/libgcc_s.so");
    println!("cargo:rustc-link-search=native={}", dir.display());
}
