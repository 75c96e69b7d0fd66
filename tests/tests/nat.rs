//! The NAT lab (issue 16), for real: `tests/nat/lab.sh` builds an
//! "internet" bridge and home sites behind nftables NATs in network
//! namespaces of its own; UDP probes (`tests/nat/probe.py`) run inside
//! them. This file checks that each NAT type of the lab behaves as the
//! type it is named for, which the reachability tests built on the lab
//! rely on. Needs root, iproute2 and nftables (tests/run.sh installs
//! them).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn nat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nat")
}

/// A lab of namespaces named `PREFIX*`, removed on drop (also when a test
/// fails).
struct Lab {
    prefix: String,
    /// Per site: its name, the namespace of its host, the host's address.
    nodes: Vec<(String, String, String)>,
    children: Vec<Child>,
}

impl Lab {
    fn up(sites: &[&str]) -> Lab {
        let prefix = format!("bdn{}-", std::process::id());
        let mut lab = Lab {
            prefix,
            nodes: Vec::new(),
            children: Vec::new(),
        };
        let out = Command::new("bash")
            .arg(nat_dir().join("lab.sh"))
            .arg("up")
            .arg(&lab.prefix)
            .args(sites)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "lab.sh up failed (needs root, iproute2 and nftables: tests/run.sh installs them): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            lab.nodes
                .push((f[0].to_owned(), f[1].to_owned(), f[2].to_owned()));
        }
        lab
    }

    fn node(&self, name: &str) -> (&str, &str) {
        let n = self.nodes.iter().find(|n| n.0 == name).expect("a site");
        (&n.1, &n.2)
    }

    /// `probe.py ARGS` in site `name`'s host.
    fn probe(&self, name: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.node(name).0, "python3"])
            .arg(nat_dir().join("probe.py"))
            .args(args);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("bash")
            .arg(nat_dir().join("lab.sh"))
            .args(["down", &self.prefix])
            .status();
    }
}

/// What a host behind a site saw: where two public servers see it, and
/// the texts that reached its socket unasked.
struct Seen {
    mapped: Vec<(String, u64)>,
    got: Vec<String>,
}

/// From site `site`'s host, port 40000: ask public hosts a and b where
/// they see it; then a and b each send from another port (7001) to the
/// address a saw.
fn probe_site(lab: &Lab, site: &str) -> Seen {
    let (a, b) = (lab.node("a").1.to_owned(), lab.node("b").1.to_owned());
    let mut client = lab
        .probe(site, &["client", "40000", "2", &a, "7000", &b, "7000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let mapped: Vec<(String, u64)> = first["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(
                !s.is_null(),
                "{site}: a public host did not answer: {first}"
            );
            (s[0].as_str().unwrap().to_owned(), s[1].as_u64().unwrap())
        })
        .collect();
    let (ip, port) = (&mapped[0].0, mapped[0].1.to_string());
    for from in ["a", "b"] {
        let text = format!("{from}7001");
        let st = lab
            .probe(from, &["send", "7001", ip, &port, &text])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let mut got = Vec::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if let Some(t) = v["text"].as_str() {
            got.push(t.to_owned());
        }
    }
    client.wait().unwrap();
    got.sort();
    Seen { mapped, got }
}

/// Both hosts of sites `x` and `y` punch at once, each toward the address
/// the public host a saw the other at; whether each heard the other.
fn punch(lab: &Lab, x: (&str, &(String, u64)), y: (&str, &(String, u64))) -> (bool, bool) {
    let start = |me: &str, peer: &(String, u64)| {
        lab.probe(me, &["punch", "40000", "3", &peer.0, &peer.1.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (cx, cy) = (start(x.0, y.1), start(y.0, x.1));
    let heard = |c: Child| {
        let out = c.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        !v["from"].is_null()
    };
    (heard(cx), heard(cy))
}

#[test]
#[ignore = "needs root, iproute2 and nftables; tests/run.sh installs them and runs it"]
fn the_labs_nats_map_and_filter_as_their_types_say() {
    let mut lab = Lab::up(&[
        "a:public",
        "b:public",
        "pub:public",
        "fc:full-cone",
        "pr:port-restricted",
        "sy:symmetric",
        "pr2:port-restricted",
    ]);
    for host in ["a", "b"] {
        let echo = lab.probe(host, &["echo", "7000"]).spawn().unwrap();
        lab.children.push(echo);
    }
    let wan = |site: &str| {
        let i = lab.nodes.iter().position(|n| n.0 == site).unwrap() + 1;
        format!("203.0.113.{}", 100 + i)
    };

    // No NAT: seen as itself everywhere; anyone reaches it.
    let s = probe_site(&lab, "pub");
    let own = (lab.node("pub").1.to_owned(), 40000);
    assert_eq!(s.mapped, [own.clone(), own]);
    assert_eq!(s.got, ["a7001", "b7001"]);

    // Full cone: one mapping for every destination, open to anyone.
    let s = probe_site(&lab, "fc");
    assert_eq!(s.mapped[0], (wan("fc"), 40000));
    assert_eq!(s.mapped[1], s.mapped[0]);
    assert_eq!(s.got, ["a7001", "b7001"]);

    // Port-restricted cone: the same mapping everywhere, but only the
    // address and port the host sent to may answer.
    let s = probe_site(&lab, "pr");
    assert_eq!(s.mapped[0].0, wan("pr"));
    assert_eq!(s.mapped[1], s.mapped[0]);
    assert!(s.got.is_empty(), "{:?}", s.got);

    // Symmetric: another mapping for every destination.
    let s = probe_site(&lab, "sy");
    assert_eq!(s.mapped[0].0, wan("sy"));
    assert_eq!(s.mapped[1].0, wan("sy"));
    assert_ne!(s.mapped[1].1, s.mapped[0].1);
    assert!(s.got.is_empty(), "{:?}", s.got);
    let sy = s.mapped[0].clone();

    // Hole punching, each toward the address a saw the other at: two
    // port-restricted cones meet; a symmetric NAT meets a full cone (which
    // answers where the packets come from) but not a port-restricted one.
    let pr = probe_site(&lab, "pr").mapped[0].clone();
    let pr2 = probe_site(&lab, "pr2").mapped[0].clone();
    let fc = probe_site(&lab, "fc").mapped[0].clone();
    assert_eq!(punch(&lab, ("pr", &pr), ("pr2", &pr2)), (true, true));
    assert_eq!(punch(&lab, ("fc", &fc), ("sy", &sy)), (true, true));
    assert_eq!(punch(&lab, ("pr", &pr), ("sy", &sy)), (false, false));
}
