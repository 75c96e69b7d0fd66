//! Regenerates `libs/ecc/src/kernels_gen.rs`, the register-blocked encode
//! kernels, from the committed maps (see `bitdust_ecc::kernelgen`).
//!
//! ```text
//! cargo run -p bitdust-ecc --bin ecc-kernelgen             # rewrite the file
//! cargo run -p bitdust-ecc --bin ecc-kernelgen -- --check  # exit 1 if it is stale
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use bitdust_ecc::kernelgen;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(kernelgen::PATH);
    let text = kernelgen::source();
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed == text {
            println!("{}: up to date", path.display());
            ExitCode::SUCCESS
        } else {
            eprintln!("{}: stale; regenerate with ecc-kernelgen", path.display());
            ExitCode::FAILURE
        }
    } else {
        match std::fs::write(&path, text) {
            Ok(()) => {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: cannot write: {e}", path.display());
                ExitCode::FAILURE
            }
        }
    }
}
