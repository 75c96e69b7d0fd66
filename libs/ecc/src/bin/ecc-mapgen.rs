//! Regenerates the committed XOR ECC maps in `libs/ecc/maps/` with the
//! deterministic search of `bitdust_ecc::mapgen`.
//!
//! ```text
//! cargo run -p bitdust-ecc --release --bin ecc-mapgen            # rewrite maps/
//! cargo run -p bitdust-ecc --release --bin ecc-mapgen -- --check # verify them
//! cargo run -p bitdust-ecc --release --bin ecc-mapgen -- --only 64
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use bitdust_ecc::map::EccMap;
use bitdust_ecc::mapgen::{self, PLANS};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: ecc-mapgen [--check] [--only N]");
        return ExitCode::SUCCESS;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("maps");
    let mut ok = true;
    for plan in PLANS {
        if only.is_some_and(|n| n != plan.suppliers) {
            continue;
        }
        let start = Instant::now();
        let (map, comments) = mapgen::generate(plan);
        let text = map.to_text(&comments);
        let name = mapgen::file_name(plan.suppliers);
        println!(
            "{name}: weight {}, tolerance {} ({:.1?})",
            plan.weight,
            map.tolerance(),
            start.elapsed()
        );
        if check {
            let committed = EccMap::builtin_text(plan.suppliers).unwrap_or_default();
            if committed != text {
                eprintln!("{name}: committed file differs from the generator's output");
                ok = false;
            }
        } else if let Err(e) = std::fs::write(dir.join(&name), text) {
            eprintln!("{name}: cannot write: {e}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
