//! The systemd units, checked by systemd's own tools on this machine:
//! `systemd-analyze verify` (syntax, dependencies, executables) and
//! `systemd-analyze security --offline` (every daemon rated 4.9 or better).
//! The real install under systemd as PID 1 is the install test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use bitdust_tests::{bin, workspace_root};

const DAEMONS: [&str; 4] = [
    "bitdust-dht",
    "bitdust-supplier",
    "bitdust-customer",
    "bitdust-rebuilder",
];

/// The units, copied with ExecStart pointing at this build's binaries
/// (verify checks that they exist).
fn units() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir(workspace_root().join("systemd")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !(name.ends_with(".service") || name.ends_with(".target") || name.ends_with(".timer")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .lines()
            .map(|l| match l.strip_prefix("ExecStart=/usr/bin/") {
                Some(rest) => {
                    let (b, args) = rest.split_once(' ').unwrap_or((rest, ""));
                    format!("ExecStart={} {args}\n", bin(b).display())
                }
                None => format!("{l}\n"),
            })
            .collect::<String>();
        let to = dir.path().join(&name);
        std::fs::write(&to, text).unwrap();
        out.push(to);
    }
    out.sort();
    (dir, out)
}

#[test]
fn the_units_verify_and_every_daemon_is_rated_ok_or_better() {
    let (_dir, units) = units();
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "bitdust-dht.service",
        "bitdust-supplier.service",
        "bitdust-customer.service",
        "bitdust-rebuilder.service",
        "bitdust.target",
        "bitdust-backup.service",
        "bitdust-backup.timer",
    ] {
        assert!(names.iter().any(|n| n == want), "systemd/{want} is missing");
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && errors.trim().is_empty(), "{errors}");
    for d in DAEMONS {
        let unit = units
            .iter()
            .find(|u| u.ends_with(format!("{d}.service")))
            .unwrap();
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{d}: {text}"));
        let level: f64 = line
            .split(": ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(level <= 4.9, "{d}: {line}");
        let unit_text = std::fs::read_to_string(unit).unwrap();
        for key in [
            "Type=notify",
            "WatchdogSec=",
            "Restart=on-failure",
            "User=bitdust",
            "StateDirectory=bitdust",
            "RuntimeDirectory=bitdust",
            "ConfigurationDirectory=bitdust",
        ] {
            assert!(unit_text.contains(key), "{d} lacks {key}");
        }
    }
}
