//! Build script of kubox-containerd: compiles `pause/pause.c` into the freestanding static
//! `pause` binary that `src/pause.rs` embeds into kubox's sandbox image.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Flags that make the pause program tiny, static and free of libc.
const FLAGS: &[&str] = &[
    "-nostdlib",
    "-static",
    "-Os",
    "-fno-stack-protector",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-pie",
    "-no-pie",
    "-s",
    "-Wall",
    "-Wextra",
    "-Wl,--build-id=none",
    "-Wl,--gc-sections",
    "-Wl,-n",
    "-Wl,-z,noexecstack",
];

fn main() {
    if let Err(e) = build() {
        eprintln!("kubox-containerd build.rs: {e}");
        std::process::exit(1);
    }
}

/// Compiles and links the pause binary into `$OUT_DIR/pause`.
fn build() -> Result<(), String> {
    println!("cargo:rerun-if-changed=pause/pause.c");
    println!("cargo:rerun-if-changed=build.rs");
    let arch =
        env::var("CARGO_CFG_TARGET_ARCH").map_err(|e| format!("CARGO_CFG_TARGET_ARCH: {e}"))?;
    let os = env::var("CARGO_CFG_TARGET_OS").map_err(|e| format!("CARGO_CFG_TARGET_OS: {e}"))?;
    if os != "linux" || !matches!(arch.as_str(), "x86_64" | "aarch64") {
        return Err(format!(
            "the pause binary supports linux on x86_64 and aarch64, not {os}/{arch}"
        ));
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let manifest_dir = PathBuf::from(
        env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?,
    );
    let source = manifest_dir.join("pause").join("pause.c");
    let output = out_dir.join("pause");

    // The cc crate finds the C compiler and its target flags (cross compilers included); the
    // link is ours because cc only builds libraries.
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .debug(false)
        .pic(false)
        .opt_level_str("s")
        .try_get_compiler()
        .map_err(|e| format!("no C compiler for the target: {e}"))?;
    let mut cmd: Command = compiler.to_command();
    cmd.args(FLAGS).arg("-o").arg(&output).arg(&source);
    let status = cmd
        .status()
        .map_err(|e| format!("running {}: {e}", compiler.path().display()))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed: {status}"));
    }
    Ok(())
}
