//! Replays every committed fuzz input (`fuzz/corpus/<target>/`, and the
//! reproducers of fixed findings in `fuzz/regressions/<target>/`) through
//! the target bodies on stable: what fuzzing found stays found.

use bitdust_tests::fuzz::TARGETS;
use bitdust_tests::workspace_root;

#[test]
fn every_committed_fuzz_input_runs_through_its_target_without_a_panic() {
    for (name, body) in TARGETS {
        let mut replayed = 0;
        for kind in ["corpus", "regressions"] {
            let dir = workspace_root().join("fuzz").join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| body(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "no committed inputs for fuzz target {name}");
    }
}

/// The seeds (`cargo run -p bitdust-tests --example fuzz_seeds`) are valid
/// inputs, so fuzzing starts past the first checks.
#[test]
fn the_seeds_are_valid_inputs() {
    let corpus = workspace_root().join("fuzz/corpus");
    let read = |p: &str| std::fs::read(corpus.join(p)).unwrap();
    // A restore stream with every kind of entry but a device restores
    // whole, as any user; the hostile ones are refused.
    let dir = tempfile::tempdir().unwrap();
    let r = bitdust_tests::fuzz::replay_restore_stream(
        &read("restore_stream/seed-tree"),
        &dir.path().join("tree"),
    )
    .unwrap();
    assert_eq!(
        (r.files, r.hard_links, r.specials, r.symlinks),
        (3, 1, 1, 1)
    );
    for hostile in ["link-outside", "through-symlink", "hole-past-size"] {
        let to = dir.path().join(hostile);
        let path = format!("restore_stream/seed-{hostile}");
        assert!(
            bitdust_tests::fuzz::replay_restore_stream(&read(&path), &to).is_err(),
            "{hostile} was restored"
        );
        assert!(!to.exists(), "{hostile} left a target behind");
    }
    let me = bitdust_tests::fuzz::fuzz_identity().node_id();
    let m = bitdust_block::Manifest::from_signed_bytes(&read("manifest/seed-file"), &me).unwrap();
    assert_eq!(m.blocks, 1);
    let mut opener = bitdust_block::BlockOpener::new(me, m.backup_id, 1, 0);
    for f in 0..4 {
        let file = read(&format!("fragment/seed-file-{f}"));
        opener.add(f, &mut file.as_slice(), "seed").unwrap();
    }
    assert!(opener.has_all_data());
    let text = String::from_utf8(read("config/seed-supplier")).unwrap();
    bitdust_config::Config::parse(&text, std::path::Path::new("seed.toml")).unwrap();
    let req: bitdust_proto::peer::v1::Request =
        bitdust_net::frame::decode_frame(&read("peer_request/seed-service"), 1 << 20).unwrap();
    assert!(req.kind.is_some());
}
