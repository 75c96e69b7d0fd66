//! `bitdust-gen`: writes the man pages (`man/*.1`) and the shell
//! completions of bitdustctl (`packaging/completions/`) from the clap
//! definitions of the binaries, so they never drift from the CLI.
//!
//! `cargo run -p bitdust-gen` rewrites them in the workspace;
//! `cargo run -p bitdust-gen -- --check` fails, naming the stale files,
//! when they differ from what the code would write (a test does the same).
//! `bitdust.toml.5` is written by hand, and a test checks it names every
//! configuration key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bitdust_daemon::cli::Daemon;
use clap::CommandFactory;
use clap_complete::Shell;

/// Every generated file: its path under the workspace, and its bytes.
pub fn generate() -> std::io::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for d in Daemon::ALL {
        out.insert(
            PathBuf::from(format!("man/{}.1", d.name())),
            man_page(d.command(), &[])?,
        );
    }
    let mut ctl = bitdustctl::Cli::command();
    // Propagates the global options (--json, --quiet, --run-dir) into every
    // subcommand, so each page lists them.
    ctl.build();
    ctl_pages(&ctl, "bitdustctl", &mut out)?;
    for (shell, file) in [
        (Shell::Bash, "bitdustctl.bash"),
        (Shell::Zsh, "_bitdustctl"),
        (Shell::Fish, "bitdustctl.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut ctl.clone(), "bitdustctl", &mut buf);
        out.insert(PathBuf::from(format!("packaging/completions/{file}")), buf);
    }
    Ok(out)
}

/// `bitdustctl.1`, and `bitdustctl-SUB.1` (git's way) for every subcommand,
/// so each one's options are documented.
fn ctl_pages(
    cmd: &clap::Command,
    name: &str,
    out: &mut BTreeMap<PathBuf, Vec<u8>>,
) -> std::io::Result<()> {
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .map(|s| format!("{name}-{}", s.get_name()))
        .collect();
    let page = cmd
        .clone()
        .name(name.to_owned())
        .bin_name(name.replace('-', " "));
    out.insert(
        PathBuf::from(format!("man/{name}.1")),
        man_page(page, &subs)?,
    );
    for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        ctl_pages(s, &format!("{name}-{}", s.get_name()), out)?;
    }
    Ok(())
}

/// One page, with a SEE ALSO section.
fn man_page(cmd: clap::Command, subs: &[String]) -> std::io::Result<Vec<u8>> {
    let name = cmd.get_name().to_owned();
    let man = clap_mangen::Man::new(cmd).date("");
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    let mut see: Vec<String> = subs.iter().map(|s| format!("{s}(1)")).collect();
    if name != "bitdustctl" && name.starts_with("bitdustctl") {
        see.push("bitdustctl(1)".into());
    }
    see.push("bitdust.toml(5)".into());
    see.push("systemctl(1)".into());
    buf.extend_from_slice(b".SH \"SEE ALSO\"\n");
    for (i, s) in see.iter().enumerate() {
        let (page, sect) = s.split_once('(').unwrap_or((s, ""));
        let sep = if i + 1 < see.len() { "," } else { "" };
        buf.extend_from_slice(
            format!(".BR {} ({}{sep}\n", page.replace('-', "\\-"), sect).as_bytes(),
        );
    }
    Ok(buf)
}

/// Writes the files under `root`; with `check`, writes nothing and returns
/// the stale or missing ones.
pub fn write_or_check(root: &Path, check: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut stale = Vec::new();
    for (rel, bytes) in generate()? {
        let path = root.join(&rel);
        if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        stale.push(rel);
        if !check {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, &bytes)?;
        }
    }
    Ok(stale)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let root = workspace_root();
    match write_or_check(&root, check) {
        Ok(stale) if check && !stale.is_empty() => {
            for s in &stale {
                eprintln!("bitdust-gen: {} is stale", s.display());
            }
            eprintln!("bitdust-gen: run `cargo run -p bitdust-gen` and commit the result");
            ExitCode::FAILURE
        }
        Ok(stale) => {
            if !check {
                for s in &stale {
                    println!("wrote {}", s.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "bitdust-gen: cannot write the files under {}: {e}",
                root.display()
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_committed_man_pages_and_completions_match_the_cli() {
        let stale = write_or_check(&workspace_root(), true).unwrap();
        assert!(
            stale.is_empty(),
            "stale generated files {stale:?}: run `cargo run -p bitdust-gen` and commit them"
        );
    }

    #[test]
    fn every_binary_has_a_page_and_bitdustctl_documents_its_subcommands() {
        let files = generate().unwrap();
        for b in [
            "bitdustctl",
            "bitdust-dht-peer",
            "bitdust-supplier-store",
            "bitdust-customer-agent",
            "bitdust-rebuilder",
            "bitdustctl-backup",
            "bitdustctl-local-backup",
            "bitdustctl-suppliers-hire",
        ] {
            let page = files
                .get(&PathBuf::from(format!("man/{b}.1")))
                .unwrap_or_else(|| panic!("no page for {b}"));
            let text = String::from_utf8_lossy(page);
            assert!(text.contains(".SH NAME"), "{b}");
            assert!(text.contains("bitdust.toml"), "{b}");
        }
        let backup =
            String::from_utf8_lossy(&files[&PathBuf::from("man/bitdustctl-local-backup.1")])
                .into_owned();
        assert!(backup.contains("zstd"), "{backup}");
    }

    /// The keys the parser accepts in `section` ("" for the top level),
    /// read from its own error for an unknown key.
    fn keys_of(section: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let body = if section.is_empty() {
            "zzz_unknown = 1\n".to_owned()
        } else {
            format!("[{section}]\nzzz_unknown = 1\n")
        };
        std::fs::write(&path, body).unwrap();
        let err = bitdust_config::Config::load(Some(&path))
            .unwrap_err()
            .to_string();
        let list = err
            .split("expected one of")
            .nth(1)
            .unwrap_or_else(|| panic!("{err}"));
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    const SECTIONS: [&str; 6] = ["", "dht", "supplier", "customer", "rebuilder", "router"];

    #[test]
    fn bitdust_toml_5_documents_every_key_of_every_section() {
        let page = std::fs::read_to_string(workspace_root().join("man/bitdust.toml.5")).unwrap();
        for section in SECTIONS {
            let keys = keys_of(section);
            assert!(keys.len() >= 2, "{section}: {keys:?}");
            // The page's part for the section.
            let part = if section.is_empty() {
                page.split(".SH TOP-LEVEL KEYS")
                    .nth(1)
                    .unwrap()
                    .split(".SH [")
                    .next()
                    .unwrap()
            } else {
                let head = format!(".SH [{section}]");
                page.split(head.as_str())
                    .nth(1)
                    .unwrap()
                    .split(".SH ")
                    .next()
                    .unwrap()
            };
            for k in keys.iter().filter(|k| !SECTIONS.contains(&k.as_str())) {
                assert!(
                    part.contains(&format!("\\fB{k}\\fR = ")),
                    "bitdust.toml(5) does not document [{section}] {k}"
                );
            }
        }
    }

    #[test]
    fn the_packaged_config_parses_and_its_commented_defaults_are_the_real_ones() {
        let text =
            std::fs::read_to_string(workspace_root().join("packaging/bitdust.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let as_is = dir.path().join("as-is.toml");
        std::fs::write(&as_is, &text).unwrap();
        let mut plain = bitdust_config::Config::load(Some(&as_is)).unwrap();
        // Every "#key = value" line, uncommented, must give the same config.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let set = dir.path().join("set.toml");
        std::fs::write(&set, &uncommented).unwrap();
        let mut explicit = bitdust_config::Config::load(Some(&set)).unwrap();
        plain.path = PathBuf::new();
        explicit.path = PathBuf::new();
        let default = bitdust_config::Config {
            path: PathBuf::new(),
            ..Default::default()
        };
        assert_eq!(format!("{explicit:?}"), format!("{default:?}"));
        assert_eq!(format!("{plain:?}"), format!("{default:?}"));
        // And it shows every key: those not set are named in a comment.
        for section in SECTIONS {
            for k in keys_of(section)
                .iter()
                .filter(|k| !SECTIONS.contains(&k.as_str()))
            {
                assert!(
                    text.contains(k.as_str()),
                    "packaging/bitdust.toml does not name {k}"
                );
            }
        }
    }
}
