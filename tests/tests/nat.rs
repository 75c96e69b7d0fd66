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
    /// Per site: its name, the namespace of its host, the host's address,
    /// and the address the internet sees (its router's, behind a NAT).
    nodes: Vec<(String, String, String, String)>,
    children: Vec<Child>,
}

impl Lab {
    fn up(sites: &[&str]) -> Lab {
        // Tests run at once in one process: one prefix per lab.
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("bdn{}.{n}-", std::process::id());
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
                .push((f[0].into(), f[1].into(), f[2].into(), f[3].into()));
        }
        lab
    }

    fn node(&self, name: &str) -> (&str, &str) {
        let n = self.nodes.iter().find(|n| n.0 == name).expect("a site");
        (&n.1, &n.2)
    }

    /// The address the internet sees site `name`'s host at.
    fn public(&self, name: &str) -> String {
        let n = self.nodes.iter().find(|n| n.0 == name).expect("a site");
        n.3.clone()
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

/// Two public hosts (a, b) to ask and be reached from, and one site of
/// each kind.
const SITES: [&str; 6] = [
    "a:public",
    "b:public",
    "pub:public",
    "fc:full-cone",
    "pr:port-restricted",
    "sy:symmetric",
];

#[test]
#[ignore = "needs root, iproute2 and nftables; tests/run.sh installs them and runs it"]
fn the_labs_nats_map_and_filter_as_their_types_say() {
    let mut lab = Lab::up(&[&SITES[..], &["pr2:port-restricted"]].concat());
    for host in ["a", "b"] {
        let echo = lab.probe(host, &["echo", "7000"]).spawn().unwrap();
        lab.children.push(echo);
    }

    // No NAT: seen as itself everywhere; anyone reaches it.
    let s = probe_site(&lab, "pub");
    let own = (lab.node("pub").1.to_owned(), 40000);
    assert_eq!(s.mapped, [own.clone(), own]);
    assert_eq!(s.got, ["a7001", "b7001"]);

    // Full cone: one mapping for every destination, open to anyone.
    let s = probe_site(&lab, "fc");
    assert_eq!(s.mapped[0], (lab.public("fc"), 40000));
    assert_eq!(s.mapped[1], s.mapped[0]);
    assert_eq!(s.got, ["a7001", "b7001"]);

    // Port-restricted cone: the same mapping everywhere, but only the
    // address and port the host sent to may answer.
    let s = probe_site(&lab, "pr");
    assert_eq!(s.mapped[0].0, lab.public("pr"));
    assert_eq!(s.mapped[1], s.mapped[0]);
    assert!(s.got.is_empty(), "{:?}", s.got);

    // Symmetric: another mapping for every destination.
    let s = probe_site(&lab, "sy");
    assert_eq!(s.mapped[0].0, lab.public("sy"));
    assert_eq!(s.mapped[1].0, lab.public("sy"));
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

/// A `bitdust-dht-peer` in a lab namespace, listening on 0.0.0.0:7900,
/// joining through `bootstrap`; its files under `dir`.
fn dht_peer(lab: &mut Lab, site: &str, dir: &std::path::Path, bootstrap: &[String]) -> PathBuf {
    let dir = dir.join(site);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bitdust.toml");
    std::fs::write(
        &cfg,
        format!(
            "run_dir = {:?}\nstate_dir = {:?}\n[dht]\nlisten = \"0.0.0.0:7900\"\nbootstrap = {:?}\nrefresh_secs = 2\n",
            dir.join("run"),
            dir.join("state"),
            bootstrap
        ),
    )
    .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", lab.node(site).0])
        .arg(bitdust_tests::bin("bitdust-dht-peer"))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.children.push(child);
    dir.join("run/dht.sock")
}

/// The addresses the peers told the dht-peer at `socket` they saw its
/// pings come from, once it has `n` of them (30 s at most).
fn observed(socket: &std::path::Path, n: usize) -> Vec<String> {
    use bitdust_proto::dht::v1 as pb;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(ch) = bitdust_daemon::connect(socket).await
                && let Ok(s) = pb::dht_client::DhtClient::new(ch)
                    .status(pb::StatusRequest {})
                    .await
            {
                let mut seen: Vec<String> = s
                    .into_inner()
                    .observed
                    .into_iter()
                    .map(|o| o.address)
                    .collect();
                if seen.len() >= n {
                    seen.sort();
                    return seen;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: fewer than {n} observed addresses after 30 s",
                socket.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}

/// A dht-peer learns where its packets come from by asking its peers: the
/// ping's answer names the address the peer saw. Two public seeds see a
/// public node and a node behind a cone NAT at one address (the router's,
/// with the port kept), and a node behind a symmetric NAT at two ports of
/// its router's address. Then another peer's dial-back from a fresh
/// socket says whether strangers reach it: the public node, the one
/// behind the full-cone NAT and the one whose home router maps its port
/// (miniupnpd, PCP) are reached, and only they give others an address:
/// the seed's lookups find them and none of the other two (which only
/// ask, and so stay out of routing tables).
#[test]
#[ignore = "needs root, iproute2, nftables and miniupnpd; tests/run.sh installs them and runs it"]
fn dht_peers_learn_the_address_their_pings_come_from_behind_each_nat() {
    let mut sites = SITES.to_vec();
    sites.push("mp:upnp");
    let mut lab = Lab::up(&sites);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (lab.node("a").1.to_owned(), lab.node("b").1.to_owned());
    let seed = dht_peer(&mut lab, "a", dir.path(), &[]);
    dht_peer(&mut lab, "b", dir.path(), &[format!("{a}:7900")]);
    let seeds = [format!("{a}:7900"), format!("{b}:7900")];
    let sockets: Vec<(String, PathBuf)> = ["pub", "fc", "pr", "sy", "mp"]
        .iter()
        .map(|s| (s.to_string(), dht_peer(&mut lab, s, dir.path(), &seeds)))
        .collect();
    for (site, socket) in &sockets {
        let seen = observed(socket, 2);
        match site.as_str() {
            "pub" => {
                let own = format!("{}:7900", lab.node("pub").1);
                assert_eq!(seen, [own.clone(), own], "{site}");
            }
            "fc" | "pr" | "mp" => {
                let mapped = format!("{}:7900", lab.public(site));
                assert_eq!(seen, [mapped.clone(), mapped], "{site}");
            }
            _ => {
                let prefix = format!("{}:", lab.public(site));
                assert!(
                    seen.iter().all(|s| s.starts_with(&prefix)),
                    "{site}: {seen:?}"
                );
                assert_ne!(seen[0], seen[1], "{site}: one port for two peers");
            }
        }
    }
    let mut reached = Vec::new();
    for (site, socket) in &sockets {
        let st = poll_dht(socket, |s| {
            !s.reachability.is_empty() && !s.reachability.starts_with("unknown")
        });
        let public = lab.public(site);
        let (want, address) = match site.as_str() {
            "pub" => (
                format!("public: reachable at {public}:7900"),
                format!("{public}:7900"),
            ),
            "fc" => (
                format!("mapped: reachable at {public}:7900 through a NAT"),
                format!("{public}:7900"),
            ),
            "pr" => ("behind a cone NAT".into(), String::new()),
            "sy" => ("behind a symmetric NAT".into(), String::new()),
            _ => {
                let port = st
                    .port_mapping
                    .strip_prefix(&format!("PCP: {public}:"))
                    .unwrap_or_else(|| panic!("mp: {}", st.port_mapping))
                    .to_owned();
                (
                    format!(
                        "mapped: reachable at {public}:{port} through the port mapping its home router keeps (PCP)"
                    ),
                    format!("{public}:{port}"),
                )
            }
        };
        assert!(
            st.reachability.starts_with(&want),
            "{site}: {}",
            st.reachability
        );
        assert_eq!(st.address, address, "{site}: the address it gives others");
        if !address.is_empty() {
            reached.push(address);
        }
    }
    // The seed's lookup finds every node that gives an address, and none
    // that only asks. Those that became reachable refresh at once; give
    // the lookups a few rounds.
    reached.push(format!("{b}:7900"));
    reached.sort();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        use bitdust_proto::dht::v1 as pb;
        let found = rt.block_on(async {
            let ch = bitdust_daemon::connect(&seed).await.unwrap();
            pb::dht_client::DhtClient::new(ch)
                .find_node(pb::FindNodeRequest::default())
                .await
                .unwrap()
                .into_inner()
        });
        let mut got: Vec<String> = found.nodes.iter().map(|n| n.address.clone()).collect();
        got.sort();
        if got == reached {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the seed's lookup found {got:?}, not {reached:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Starts `daemon` in site `site`'s host with the config `body` (run and
/// state directories under `dir/site` are added).
fn daemon_in(
    lab: &mut Lab,
    site: &str,
    dir: &std::path::Path,
    daemon: &str,
    body: &str,
) -> PathBuf {
    let dir = dir.join(site);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bitdust.toml");
    std::fs::write(
        &cfg,
        format!(
            "run_dir = {:?}\nstate_dir = {:?}\n{body}",
            dir.join("run"),
            dir.join("state")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("{daemon}.log"))).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", lab.node(site).0])
        .arg(bitdust_tests::bin(daemon))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .unwrap();
    lab.children.push(child);
    dir.join("run")
}

/// A DHT seed at site "a" that also runs a router (its `[router]` section
/// gets `router_extra`): the seed's run directory, the router's node id,
/// and the `[dht]` section the other nodes' configs start with.
fn seed_with_router(
    lab: &mut Lab,
    dir: &std::path::Path,
    router_extra: &str,
) -> (PathBuf, String, String) {
    let a = lab.node("a").1.to_owned();
    let seed_run = daemon_in(
        lab,
        "a",
        dir,
        "bitdust-dht-peer",
        &format!(
            "[dht]\nlisten = \"0.0.0.0:7900\"\n[router]\nenabled = true\nlisten = \"0.0.0.0:7910\"\nadvertise = \"{a}:7910\"\n{router_extra}"
        ),
    );
    let router_id = poll_dht(&seed_run.join("dht.sock"), |s| {
        s.router.as_ref().is_some_and(|r| !r.address.is_empty())
    })
    .node_id;
    let dht =
        format!("[dht]\nlisten = \"0.0.0.0:7900\"\nbootstrap = [\"{a}:7900\"]\nrefresh_secs = 5\n");
    (seed_run, router_id, dht)
}

/// A dht-peer and a supplier-store at `site`, configs starting with
/// `dht`; `[supplier]` gets `extra`.
fn supplier_at(lab: &mut Lab, dir: &std::path::Path, dht: &str, site: &str, extra: &str) {
    let body = format!(
        "{dht}[supplier]\nlisten = \"0.0.0.0:7800\"\ncapacity = \"8 GiB\"\npublish_secs = 30\n{extra}"
    );
    daemon_in(lab, site, dir, "bitdust-dht-peer", &body);
    daemon_in(lab, site, dir, "bitdust-supplier-store", &body);
}

/// A dht-peer and a customer-agent at `site` that hires `suppliers`
/// (1 GiB needed), configs starting with `dht`; `[customer]` gets
/// `extra`. Returns the agent's run directory.
fn customer_at(
    lab: &mut Lab,
    dir: &std::path::Path,
    dht: &str,
    site: &str,
    suppliers: u32,
    extra: &str,
) -> PathBuf {
    let body = format!(
        "{dht}[customer]\nbind = \"0.0.0.0:0\"\nsuppliers = {suppliers}\nneeded_space = \"1 GiB\"\n{extra}"
    );
    daemon_in(lab, site, dir, "bitdust-dht-peer", &body);
    daemon_in(lab, site, dir, "bitdust-customer-agent", &body)
}

/// Waits until the customer at `run` has hired `n` suppliers (`secs` at
/// most).
fn wait_hired(run: &std::path::Path, n: u64, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let st = ctl_json(run, &["status"], 30);
        if st["hired"] == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: not {n} hired: {st}",
            run.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Backs up a tree (`make_tree(seed, scale)`, at `dir/src-NAME`) from the
/// customer at `run` with every position, restores it to `dir/out-NAME`
/// and checks it bit-exact; returns the backup's report.
fn backup_and_restore(
    run: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    seed: u64,
    scale: usize,
) -> serde_json::Value {
    let src = dir.join(format!("src-{name}"));
    bitdust_tests::make_tree(&src, seed, scale);
    let b = ctl_json(run, &["backup", &src.display().to_string()], 5);
    assert_eq!(
        b["failed_positions"].as_array().unwrap().len(),
        0,
        "{name}: {b}"
    );
    let out = dir.join(format!("out-{name}"));
    ctl_json(run, &["restore", "--to", &out.display().to_string()], 5);
    bitdust_tests::assert_same_tree(&src, &bitdust_tests::restored_path(&out, &src));
    b
}

/// `bitdustctl --json ARGS` against the customer whose sockets are in
/// `run`, retried for up to `secs` while it fails.
fn ctl_json(run: &std::path::Path, args: &[&str], secs: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let out = Command::new(bitdust_tests::bin("bitdustctl"))
            .arg("--run-dir")
            .arg(run)
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bitdustctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A supplier behind a symmetric NAT, which no customer can dial, finds a
/// public router in the DHT (its config names none) and holds a
/// reservation on it; a customer behind a port-restricted NAT
/// finds it in the DHT, hires it and a public supplier, and backs up and
/// restores bit-exact, the symmetric one's fragments through the router.
#[test]
#[ignore = "needs root, iproute2 and nftables; tests/run.sh installs them and runs it"]
fn a_supplier_behind_a_symmetric_nat_serves_a_customer_through_a_router() {
    let mut lab = Lab::up(&[
        "a:public",
        "pub:public",
        "pr:port-restricted",
        "sy:symmetric",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let a = lab.node("a").1.to_owned();
    let (seed_run, router_id, dht) = seed_with_router(&mut lab, dir.path(), "");
    let pub_ip = lab.node("pub").1.to_owned();
    // The supplier behind the symmetric NAT names no router: it finds the
    // one the seed advertises in the DHT.
    for (site, supplier) in [
        ("pub", format!("advertise = \"{pub_ip}:7800\"\n")),
        ("sy", String::new()),
    ] {
        supplier_at(&mut lab, dir.path(), &dht, site, &supplier);
    }
    let run = customer_at(
        &mut lab,
        dir.path(),
        &dht,
        "pr",
        2,
        "block_size = \"1 MiB\"\ntimeout_secs = 5\n",
    );
    // The agent hires both suppliers from the DHT's offers (the symmetric
    // one's names the router).
    wait_hired(&run, 2, 120);
    let b = backup_and_restore(&run, dir.path(), "pr", 5, 2);

    let st = poll_supplier(&dir.path().join("sy/run/supplier.sock"), |s| {
        !s.routers.is_empty()
    });
    assert_eq!(st.routers, [format!("{router_id}@{a}:7910")]);
    assert!(
        st.reachability.starts_with("behind a symmetric NAT"),
        "{}",
        st.reachability
    );
    // `bitdustctl status` on the supplier's machine (no customer-agent)
    // says the same.
    let own = ctl_json(&dir.path().join("sy/run"), &["status"], 5);
    assert_eq!(
        own["supplier"]["reachability"],
        st.reachability.as_str(),
        "{own}"
    );
    assert_eq!(
        own["supplier"]["routers"][0],
        st.routers[0].as_str(),
        "{own}"
    );
    let list = ctl_json(&run, &["suppliers"], 5);
    let mut paths: Vec<String> = list["suppliers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        ["direct".to_owned(), format!("router {router_id}")],
        "{list}"
    );
    let seed = poll_dht(&seed_run.join("dht.sock"), |_| true);
    let router = seed.router.unwrap();
    let sy_id = std::fs::read_to_string(dir.path().join("sy/state/supplier/node-id"))
        .unwrap()
        .trim()
        .to_owned();
    let stored = b["stored_bytes"].as_u64().unwrap();
    let sy = router
        .clients
        .iter()
        .find(|c| c.node_id == sy_id)
        .unwrap_or_else(|| {
            panic!("the symmetric site's supplier is not on the router: {router:?}")
        });
    assert!(sy.reserved, "{router:?}");
    // Its half of the backup came in through the router, and the restore
    // read from it through the router too.
    let customer = router
        .clients
        .iter()
        .find(|c| !c.reserved)
        .expect("the customer");
    assert!(
        customer.sent_bytes > stored / 2,
        "{} of {stored}",
        customer.sent_bytes
    );
    assert!(sy.sent_bytes > stored / 8, "{} of {stored}", sy.sent_bytes);
    // The supplier counts the relayed customer at the address the router
    // sees it at (its NAT's), not at a stand-in address.
    let customers = {
        use bitdust_proto::supplier::v1 as spb;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ch = bitdust_daemon::connect(&dir.path().join("sy/run/supplier.sock"))
                .await
                .unwrap();
            spb::supplier_client::SupplierClient::new(ch)
                .list_customers(spb::ListCustomersRequest {})
                .await
                .unwrap()
                .into_inner()
                .customers
        })
    };
    assert_eq!(
        customers
            .iter()
            .map(|c| c.address.as_str())
            .collect::<Vec<_>>(),
        [lab.public("pr").as_str()],
        "{customers:?}"
    );
    // The router saw them at their NATs' public addresses.
    assert!(
        sy.address.starts_with(&format!("{}:", lab.public("sy"))),
        "{}",
        sy.address
    );
    assert!(
        customer
            .address
            .starts_with(&format!("{}:", lab.public("pr"))),
        "{}",
        customer.address
    );
}

/// The dht-peer's status at `socket`, once `ready` says so (30 s at most).
fn poll_dht(
    socket: &std::path::Path,
    ready: impl Fn(&bitdust_proto::dht::v1::StatusResponse) -> bool,
) -> bitdust_proto::dht::v1::StatusResponse {
    use bitdust_proto::dht::v1 as pb;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(ch) = bitdust_daemon::connect(socket).await
                && let Ok(s) = pb::dht_client::DhtClient::new(ch)
                    .status(pb::StatusRequest {})
                    .await
            {
                let s = s.into_inner();
                if ready(&s) {
                    return s;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: not ready after 30 s",
                socket.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}

/// Every customer/supplier pair of NAT types: four suppliers (public, full
/// cone, port-restricted, symmetric; those behind NATs hold a reservation
/// on a public router) and four customers behind the same four types.
/// Each customer hires all four from the DHT, backs up and restores
/// bit-exact. Every pair connects directly (a plain dial, or a hole punch
/// the router coordinates) except port-restricted with symmetric and
/// symmetric with symmetric, either way round, which go through the router.
#[test]
#[ignore = "needs root, iproute2 and nftables; tests/run.sh installs them and runs it"]
fn every_pair_of_nat_types_backs_up_and_restores_direct_where_possible_and_relayed_otherwise() {
    let types = [
        ("pub", "public"),
        ("fc", "full-cone"),
        ("pr", "port-restricted"),
        ("sy", "symmetric"),
    ];
    let mut sites = vec!["a:public".to_owned()];
    for role in ["s", "c"] {
        for (short, ty) in types {
            sites.push(format!("{role}{short}:{ty}"));
        }
    }
    let site_refs: Vec<&str> = sites.iter().map(String::as_str).collect();
    let mut lab = Lab::up(&site_refs);
    let dir = tempfile::tempdir().unwrap();
    let a = lab.node("a").1.to_owned();
    let (_seed_run, router_id, dht) = seed_with_router(&mut lab, dir.path(), "");
    for (short, _) in types {
        let site = format!("s{short}");
        let mut reach = format!("routers = [\"{router_id}@{a}:7910\"]\n");
        if short == "pub" {
            reach.push_str(&format!("advertise = \"{}:7800\"\n", lab.node(&site).1));
        }
        supplier_at(&mut lab, dir.path(), &dht, &site, &reach);
    }
    // What the routers' dial-backs told each supplier, and which of them
    // hold a reservation: those strangers cannot reach (and the public
    // one, whose address is configured).
    for (short, _) in types {
        let sock = dir.path().join(format!("s{short}/run/supplier.sock"));
        let want = match short {
            "pub" => "public: reachable at",
            "fc" => "mapped: reachable at",
            "pr" => "behind a cone NAT",
            _ => "behind a symmetric NAT",
        };
        let st = poll_supplier(&sock, |s| !s.reachability.is_empty());
        assert!(
            st.reachability.starts_with(want),
            "s{short}: {}",
            st.reachability
        );
        let held = !st.routers.is_empty();
        assert_eq!(held, short != "fc", "s{short}: routers {:?}", st.routers);
    }
    let supplier_site: std::collections::HashMap<String, &str> = types
        .iter()
        .map(|(short, _)| {
            let id = poll_file(&dir.path().join(format!("s{short}/state/supplier/node-id")));
            (id, *short)
        })
        .collect();
    let mut runs = Vec::new();
    for (short, _) in types {
        let site = format!("c{short}");
        let extra = "block_size = \"1 MiB\"\ntimeout_secs = 5\n";
        runs.push((
            short,
            customer_at(&mut lab, dir.path(), &dht, &site, 4, extra),
        ));
    }
    let relayed = [("pr", "sy"), ("sy", "pr"), ("sy", "sy")];
    let mut seen = Vec::new();
    for (customer, run) in &runs {
        wait_hired(run, 4, 180);
        backup_and_restore(run, dir.path(), customer, 3, 1);
        let list = ctl_json(run, &["suppliers"], 5);
        for s in list["suppliers"].as_array().unwrap() {
            let supplier = supplier_site[s["node_id"].as_str().unwrap()];
            let path = s["path"].as_str().unwrap().to_owned();
            let want = if relayed.contains(&(*customer, supplier)) {
                format!("router {router_id}")
            } else {
                "direct".to_owned()
            };
            seen.push(format!("customer {customer}, supplier {supplier}: {path}"));
            assert_eq!(path, want, "customer {customer}, supplier {supplier}");
        }
    }
    eprintln!("{}", seen.join("\n"));
    assert_eq!(seen.len(), 16);
}

/// The trimmed text of `path` once it exists (30 s at most).
fn poll_file(path: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(t) = std::fs::read_to_string(path)
            && !t.trim().is_empty()
        {
            return t.trim().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A customer behind a port-restricted NAT with a 50 Mbit/s uplink backs
/// up to a public supplier (direct) and one behind a symmetric NAT
/// (through the router). Midway, both NATs forget every binding
/// (`conntrack -F` in their routers): the next packets get new mappings
/// (a new port, behind the symmetric one), QUIC moves its connections to
/// them, and the backup completes with every position and restores
/// bit-exact.
#[test]
#[ignore = "needs root, iproute2, nftables and conntrack; tests/run.sh installs them and runs it"]
fn a_backup_survives_its_nats_forgetting_every_binding_midway() {
    let mut lab = Lab::up(&[
        "a:public",
        "spub:public",
        "ssy:symmetric",
        "cpr:port-restricted:50",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let a = lab.node("a").1.to_owned();
    let (seed_run, router_id, dht) = seed_with_router(
        &mut lab,
        dir.path(),
        "rate = \"64 MiB\"\nburst = \"16 MiB\"\n",
    );
    let spub = lab.node("spub").1.to_owned();
    for (site, reach) in [
        ("spub", format!("advertise = \"{spub}:7800\"\n")),
        ("ssy", format!("routers = [\"{router_id}@{a}:7910\"]\n")),
    ] {
        supplier_at(&mut lab, dir.path(), &dht, site, &reach);
    }
    let run = customer_at(&mut lab, dir.path(), &dht, "cpr", 2, "timeout_secs = 10\n");
    wait_hired(&run, 2, 120);
    // 48 MiB that does not compress: about 96 MiB on the wire, some 16 s
    // at 50 Mbit/s.
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; 48 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    std::fs::write(src.join("big"), &data).unwrap();
    let backup = Command::new(bitdust_tests::bin("bitdustctl"))
        .arg("--run-dir")
        .arg(&run)
        .args(["--json", "backup"])
        .arg(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(6));
    let ssy_id = poll_file(&dir.path().join("ssy/state/supplier/node-id"));
    let on_router = |id: &str| {
        let st = poll_dht(&seed_run.join("dht.sock"), |_| true);
        let c = st
            .router
            .unwrap()
            .clients
            .into_iter()
            .find(|c| c.node_id == id);
        c.unwrap_or_else(|| panic!("{id} is not on the router"))
    };
    let before = on_router(&ssy_id);
    for site in ["cpr", "ssy"] {
        let ns = format!("{}rt-{site}", lab.prefix);
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "conntrack", "-F"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "conntrack -F in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the backup failed after the flush: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["failed_positions"].as_array().unwrap().len(), 0, "{b}");
    eprintln!("backup after a flush: {} s", b["seconds"]);
    // The symmetric NAT gave the supplier's link to the router a new port,
    // and the link moved to it: the same connection, older than the flush.
    let after = on_router(&ssy_id);
    assert_ne!(
        after.address, before.address,
        "the flush changed no mapping"
    );
    assert!(
        after.connected_secs >= before.connected_secs + 5,
        "the link was made anew, not moved: {before:?} then {after:?}"
    );
    let dest = dir.path().join("out");
    ctl_json(&run, &["restore", "--to", &dest.display().to_string()], 5);
    bitdust_tests::assert_same_tree(&src, &bitdust_tests::restored_path(&dest, &src));

    // Idle connections after a flush: both suppliers answer a ping again
    // (each ping has 3 s; a connection made anew must fit in it).
    for site in ["cpr", "ssy"] {
        let ns = format!("{}rt-{site}", lab.prefix);
        Command::new("ip")
            .args(["netns", "exec", &ns, "conntrack", "-F"])
            .output()
            .unwrap();
    }
    let t = std::time::Instant::now();
    loop {
        let list = ctl_json(&run, &["suppliers"], 5);
        let up = list["suppliers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["reachable"] == true)
            .count();
        if up == 2 {
            break;
        }

        assert!(
            t.elapsed().as_secs() < 60,
            "not both reachable after a flush: {list}"
        );
    }
    eprintln!(
        "both answer again {:.1} s after an idle flush",
        t.elapsed().as_secs_f64()
    );
}

/// The supplier's status at `socket`, once `ready` says so (30 s at most).
fn poll_supplier(
    socket: &std::path::Path,
    ready: impl Fn(&bitdust_proto::supplier::v1::StatusReply) -> bool,
) -> bitdust_proto::supplier::v1::StatusReply {
    use bitdust_proto::supplier::v1 as pb;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(ch) = bitdust_daemon::connect(socket).await
                && let Ok(s) = pb::supplier_client::SupplierClient::new(ch)
                    .status(pb::StatusRequest {})
                    .await
            {
                let s = s.into_inner();
                if ready(&s) {
                    return s;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: not ready after 30 s",
                socket.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}

/// The port mappings miniupnpd holds in site `site`'s router to its
/// host's `port`: the DNAT rules in its `prerouting_miniupnpd` chain, as
/// `dport PORT dnat ip to ADDR` texts.
fn mappings(lab: &Lab, site: &str, port: u16) -> Vec<String> {
    let rt = format!("{}rt-{site}", lab.prefix);
    let out = Command::new("ip")
        .args([
            "netns", "exec", &rt, "nft", "list", "chain", "inet", "filter",
        ])
        .arg("prerouting_miniupnpd")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("dnat"))
        .map(|l| {
            let dport = l.split("dport ").nth(1).unwrap_or("").split(' ').next();
            let to = l.split("dnat ip to ").nth(1).unwrap_or("");
            format!("dport {} dnat ip to {}", dport.unwrap_or(""), to.trim())
        })
        .filter(|m| m.ends_with(&format!(":{port}")))
        .collect()
}

/// Three suppliers behind port-restricted home routers that run a real
/// miniupnpd, each allowed one protocol (UPnP IGD, NAT-PMP, PCP), map
/// their port; the router found in the DHT dials the mapped port back, so
/// they hold no reservation and offer the mapped address. A customer
/// behind a port-restricted NAT, which could reach none of them without
/// (no router to punch through), hires all three and a public supplier,
/// and backs up and restores bit-exact over direct connections. The PCP mapping (20 s
/// lifetimes in the lab) outlives three lifetimes: it is renewed. Each
/// supplier, and each site's dht-peer (which maps its own port), removes
/// its mapping when it stops.
#[test]
#[ignore = "needs root, iproute2, nftables and miniupnpd; tests/run.sh installs them and runs it"]
fn suppliers_behind_home_routers_map_their_port_over_upnp_nat_pmp_and_pcp() {
    let protocols = [
        ("up", "upnp", "UPnP IGD"),
        ("pmp", "nat-pmp", "NAT-PMP"),
        ("pcp", "pcp", "PCP"),
    ];
    let mut lab = Lab::up(&[
        "a:public",
        "pub:public",
        "c:port-restricted",
        "up:upnp",
        "pmp:upnp",
        "pcp:upnp",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (_seed_run, _router_id, dht) = seed_with_router(&mut lab, dir.path(), "");
    let mut suppliers = Vec::new();
    for (site, protocol, _) in protocols {
        let extra = format!("port_mapping = [\"{protocol}\"]\n");
        supplier_at(&mut lab, dir.path(), &dht, site, &extra);
        suppliers.push(lab.children.len() - 1);
    }
    let mut external = Vec::new();
    for (site, _, name) in protocols {
        let st = poll_supplier(&dir.path().join(format!("{site}/run/supplier.sock")), |s| {
            s.reachability.starts_with("mapped: reachable")
        });
        // The gateway picks the public port (miniupnpd keeps the asked
        // one over NAT-PMP and PCP, and picks any over UPnP's
        // AddAnyPortMapping).
        let want = st
            .port_mapping
            .strip_prefix(&format!("{name}: {}:", lab.public(site)))
            .unwrap_or_else(|| panic!("{site}: {}", st.port_mapping));
        let port: u16 = want.parse().unwrap();
        let want = format!("{}:{port}", lab.public(site));
        external.push(port);
        assert_eq!(
            st.reachability,
            format!(
                "mapped: reachable at {want} through the port mapping its home router keeps ({name})"
            ),
            "{site}"
        );
        assert_eq!(st.address, want, "{site}");
        // The router's dial-back reached it: no reservation is held.
        assert!(st.routers.is_empty(), "{site}: {:?}", st.routers);
        let (_, host) = lab.node(site);
        assert_eq!(
            mappings(&lab, site, 7800),
            [format!("dport {port} dnat ip to {host}:7800")],
            "{site}"
        );
        // The site's dht-peer maps its own port (PCP first) and is
        // reached there; `bitdustctl status` shows both.
        let dht = poll_dht(&dir.path().join(format!("{site}/run/dht.sock")), |s| {
            s.reachability.starts_with("mapped: reachable")
        });
        assert!(
            dht.port_mapping.starts_with("PCP: "),
            "{}",
            dht.port_mapping
        );
        let own = ctl_json(&dir.path().join(format!("{site}/run")), &["status"], 5);
        assert_eq!(
            own["supplier"]["port_mapping"],
            st.port_mapping.as_str(),
            "{own}"
        );
        assert_eq!(
            own["dht"]["reachability"],
            dht.reachability.as_str(),
            "{own}"
        );
        assert_eq!(own["dht"]["address"], dht.address.as_str(), "{own}");
    }
    // A public supplier makes four, a scheme's number.
    let pub_ip = lab.node("pub").1.to_owned();
    let extra = format!("advertise = \"{pub_ip}:7800\"\n");
    supplier_at(&mut lab, dir.path(), &dht, "pub", &extra);
    let extra = "block_size = \"1 MiB\"\ntimeout_secs = 5\n";
    let run = customer_at(&mut lab, dir.path(), &dht, "c", 4, extra);
    wait_hired(&run, 4, 120);
    backup_and_restore(&run, dir.path(), "c", 4, 1);
    let list = ctl_json(&run, &["suppliers"], 5);
    let paths: Vec<&str> = list["suppliers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["direct"; 4], "{list}");

    // PCP mappings last 20 s in the lab: one still held after 65 s has
    // been renewed, and the supplier is still reachable.
    std::thread::sleep(std::time::Duration::from_secs(65));
    let (_, host) = lab.node("pcp");
    assert_eq!(
        mappings(&lab, "pcp", 7800),
        [format!("dport {} dnat ip to {host}:7800", external[2])]
    );
    let log = std::fs::read_to_string(format!("/run/{}rt-pcp.miniupnpd.log", lab.prefix)).unwrap();
    let asks = log.matches("PCP MAP: ").count();
    assert!(asks >= 4, "{asks} PCP MAP requests in 65+ s:\n{log}");

    // Stopped, each supplier removes its mapping, and so does each
    // site's dht-peer (started just before it, mapping port 7900).
    for (i, (site, _, _)) in suppliers.iter().zip(protocols) {
        for (child, port) in [(*i, 7800), (*i - 1, 7900)] {
            assert_eq!(mappings(&lab, site, port).len(), 1, "{site}: port {port}");
            let pid = lab.children[child].id();
            let st = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(st.success());
            let _ = lab.children[child].wait();
            // Removed before the process exits; the gateway's own table
            // may show it a moment later.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while !mappings(&lab, site, port).is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            assert_eq!(
                mappings(&lab, site, port),
                Vec::<String>::new(),
                "{site}: port {port}"
            );
        }
    }
}

/// Runs `f` on a thread of its own whose sockets live in the lab's
/// network namespace `ns`, on a tokio runtime of its own.
fn in_netns<F, Fut>(ns: &str, f: F) -> std::thread::JoinHandle<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future,
    Fut::Output: Send + 'static,
{
    use std::os::fd::AsFd;
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f())
    })
}

/// A router with a 4 MiB/s bucket per client carries a customer's backup
/// to a supplier behind a symmetric NAT while another host floods that
/// supplier through the same router at about 19 times the rate. The
/// backup completes and restores bit-exact, the flooder's packets are
/// dropped at its own bucket (what was forwarded of them stays within
/// rate x time + burst), and the customer's relayed share got through.
#[test]
#[ignore = "needs root, iproute2 and nftables; tests/run.sh installs them and runs it"]
fn a_router_under_a_flood_from_one_client_keeps_serving_the_others_within_their_limits() {
    const RATE: u64 = 4 << 20;
    const BURST: u64 = 1 << 20;
    let mut lab = Lab::up(&[
        "a:public",
        "pub:public",
        "sy:symmetric",
        "c:port-restricted",
        "f:public",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let a = lab.node("a").1.to_owned();
    let (seed_run, router_id, dht) = seed_with_router(
        &mut lab,
        dir.path(),
        "rate = \"4 MiB\"\nburst = \"1 MiB\"\n",
    );
    let pub_ip = lab.node("pub").1.to_owned();
    for (site, supplier) in [
        ("pub", format!("advertise = \"{pub_ip}:7800\"\n")),
        ("sy", format!("routers = [\"{router_id}@{a}:7910\"]\n")),
    ] {
        supplier_at(&mut lab, dir.path(), &dht, site, &supplier);
    }
    let run = customer_at(
        &mut lab,
        dir.path(),
        &dht,
        "c",
        2,
        "block_size = \"1 MiB\"\ntimeout_secs = 5\n",
    );
    wait_hired(&run, 2, 120);
    let sy_id: bitdust_crypto::NodeId = poll_file(&dir.path().join("sy/state/supplier/node-id"))
        .parse()
        .unwrap();
    let rid: bitdust_crypto::NodeId = router_id.parse().unwrap();
    let raddr: std::net::SocketAddr = format!("{a}:7910").parse().unwrap();

    // The flooder: junk packets to the supplier through the router, 64 of
    // 1,200 bytes a millisecond (about 77 MB/s, 19 times its bucket).
    let flooder = bitdust_crypto::Identity::generate();
    let flooder_id = flooder.node_id();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = in_netns(lab.node("f").0, {
        let stop = stop.clone();
        move || async move {
            let ep = bitdust_net::Endpoint::bind(
                &flooder,
                "0.0.0.0:0".parse().unwrap(),
                b"bitdust/flood/1",
                false,
            )
            .unwrap();
            let link = ep.link_router(raddr, rid, false).await.unwrap();
            let junk = vec![0x55u8; 1200];
            let t = std::time::Instant::now();
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..64 {
                    if link.send_packet(&sy_id, &junk) {
                        sent += junk.len() as u64;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            (t.elapsed(), sent)
        }
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let b = backup_and_restore(&run, dir.path(), "pr", 5, 2);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (flood_time, flood_sent) = flooding.join().unwrap();

    let router = poll_dht(&seed_run.join("dht.sock"), |_| true)
        .router
        .unwrap();
    let client = |id: &str| router.clients.iter().find(|c| c.node_id == id);
    let f = client(&flooder_id.to_string()).expect("the flooder at the router");
    let allowed = RATE * (flood_time.as_secs() + 1) + BURST;
    eprintln!(
        "flood: {} s, {} MB queued, {} MB reached the router, {} MB forwarded (allowed {} MB); dropped over rate: {}",
        flood_time.as_secs(),
        flood_sent >> 20,
        f.sent_bytes >> 20,
        f.forwarded_bytes >> 20,
        allowed >> 20,
        router.dropped_rate
    );
    assert!(
        f.sent_bytes > 2 * allowed,
        "the flood did not exceed the bucket: {} bytes in {flood_time:?}",
        f.sent_bytes
    );
    assert!(
        f.forwarded_bytes <= allowed,
        "the flooder got {} bytes through, more than {allowed}",
        f.forwarded_bytes
    );
    assert!(router.dropped_rate > 0);
    let customer = router
        .clients
        .iter()
        .find(|c| !c.reserved && c.node_id != flooder_id.to_string())
        .expect("the customer at the router");
    let stored = b["stored_bytes"].as_u64().unwrap();
    assert!(
        customer.forwarded_bytes > stored / 4,
        "the customer got {} of {stored} bytes through",
        customer.forwarded_bytes
    );
}
