//! `bitdust-devnet`: a real BitDust network on loopback, as separate OS
//! processes of the real binaries, for demos, tests and benchmarks.
//!
//! ```text
//! DIR/nodes/dht-seed/                 the DHT node every other bootstraps from
//! DIR/nodes/supplier-<i>/              a dht-peer and a supplier-store
//! DIR/nodes/customer/                  a dht-peer, customer-agent and rebuilder
//! DIR/nodes/<name>/bitdust.toml        its config
//! DIR/nodes/<name>/node-id             its node id
//! DIR/nodes/<name>/<daemon>.pid        each daemon's pid
//! DIR/nodes/<name>/<daemon>.log        each daemon's log
//! DIR/nodes/<name>/run/                its sockets
//! DIR/nodes/<name>/state/              its state
//! DIR/devnet.env                       BITDUST_RUN_DIR=... (the customer's)
//! ```

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bitdust_proto::customer::v1 as cpb;
use bitdust_proto::supplier::v1 as spb;
use clap::{Parser, Subcommand};

/// A local BitDust network of real processes on loopback.
#[derive(Parser, Debug)]
#[command(name = "bitdust-devnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a customer and N (+M spare) suppliers; stay in the foreground
    /// until SIGTERM/SIGINT, then stop them all.
    Up {
        /// Directory for every node's config, state, sockets and logs.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Suppliers the customer hires: 2, 4, 7, 13, 18, 26 or 64.
        #[arg(long, default_value_t = 7)]
        suppliers: usize,
        /// Extra suppliers, running but not hired: the rebuilder hires
        /// them (found in the DHT) to replace failed ones.
        #[arg(long, default_value_t = 0)]
        spare: usize,
        /// Seconds between the rebuilder's checks of the suppliers (one
        /// unreachable 5 times as long, or 10 s at least, is replaced).
        #[arg(long, default_value_t = 60)]
        check_secs: u64,
        /// Blocks the rebuilder rebuilds at once.
        #[arg(long, default_value_t = 1)]
        parallel_blocks: u32,
        /// The customer's block (pack) size in MiB, 1 to 64 (the product's
        /// default is 4; small blocks make small tests span many).
        #[arg(long, default_value_t = 1, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=64))]
        block_mib: u32,
        /// The first K suppliers stand for suppliers behind a NAT: they
        /// advertise an address nobody can dial (192.0.2.1, TEST-NET-1)
        /// and hold a reservation on the DHT seed, which is also a router;
        /// customers reach them through it.
        #[arg(long, default_value_t = 0, value_name = "K")]
        relayed: usize,
    },
    /// On a fresh devnet: back PATH up, kill as many suppliers as the map
    /// tolerates, restore, check the restore is bit-exact, report.
    Demo {
        /// What to back up [default: a generated sample tree].
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
        /// Keep the devnet here instead of a temporary directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Suppliers.
        #[arg(long, default_value_t = 7)]
        suppliers: usize,
    },
}

/// What a relayed supplier advertises: an address in TEST-NET-1, which no
/// packet reaches.
const UNREACHABLE: &str = "192.0.2.1:9";

/// The binaries sit next to this one (cargo's target dir, or /usr/bin).
fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(name));
    me.parent()
        .map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

struct Node {
    name: String,
    dir: PathBuf,
    /// Its daemons, by binary name.
    children: Vec<(String, Child)>,
    node_id: String,
    listen: String,
}

impl Node {
    fn new(name: &str, dir: PathBuf) -> Node {
        Node {
            name: name.into(),
            dir,
            children: Vec::new(),
            node_id: String::new(),
            listen: String::new(),
        }
    }

    fn start(&mut self, daemon: &str, config: &Path) -> anyhow::Result<()> {
        let child = spawn(&self.dir, daemon, config)?;
        self.children.push((daemon.into(), child));
        Ok(())
    }
}

/// Knobs of a devnet.
#[derive(Clone, Copy, Debug)]
struct Options {
    /// Suppliers the customer hires.
    n: usize,
    /// Suppliers running but not hired at first.
    spare: usize,
    /// The rebuilder's check interval.
    check_secs: u64,
    /// Blocks the rebuilder rebuilds at once.
    parallel_blocks: u32,
    /// The customer's block size, MiB.
    block_mib: u32,
    /// Suppliers reached through the seed's router.
    relayed: usize,
}

struct Devnet {
    dir: PathBuf,
    seed: Option<Node>,
    suppliers: Vec<Node>,
    customer: Option<Node>,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_config(dir: &Path, body: &str) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join("bitdust.toml");
    let text = format!(
        "run_dir = {:?}\nstate_dir = {:?}\n{body}",
        dir.join("run"),
        dir.join("state")
    );
    fs::write(&path, text)?;
    Ok(path)
}

fn spawn(dir: &Path, daemon: &str, config: &Path) -> anyhow::Result<Child> {
    let log = fs::File::create(dir.join(format!("{daemon}.log")))?;
    let mut command = Command::new(sibling(daemon));
    // The devnet stands for one machine per node on one machine's cores:
    // every daemon but the customer-agent runs one worker thread (unless
    // the caller sets TOKIO_WORKER_THREADS), so that N suppliers do not
    // run a runtime thread per core each against each other and the agent.
    if daemon != "bitdust-customer-agent" && std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        command.env("TOKIO_WORKER_THREADS", "1");
    }
    let child = command
        .arg("--config")
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", sibling(daemon).display()))?;
    fs::write(
        dir.join(format!("{daemon}.pid")),
        format!("{}\n", child.id()),
    )?;
    Ok(child)
}

/// Polls `f` until it succeeds or `secs` pass.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                bail!("{what} did not come up within {secs} s: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn supplier_status(sock: &Path) -> anyhow::Result<spb::StatusReply> {
    let ch = bitdust_daemon::connect(sock).await?;
    let mut c = spb::supplier_client::SupplierClient::new(ch);
    Ok(c.status(spb::StatusRequest {}).await?.into_inner())
}

async fn dht_status(sock: &Path) -> anyhow::Result<bitdust_proto::dht::v1::StatusResponse> {
    let ch = bitdust_daemon::connect(sock).await?;
    let mut c = bitdust_proto::dht::v1::dht_client::DhtClient::new(ch);
    Ok(c.status(bitdust_proto::dht::v1::StatusRequest {})
        .await?
        .into_inner())
}

/// The node ids (text) of the supplier offers one random lookup finds.
async fn offer_owners(sock: &Path) -> anyhow::Result<Vec<String>> {
    let ch = bitdust_daemon::connect(sock).await?;
    let mut c = bitdust_proto::dht::v1::dht_client::DhtClient::new(ch);
    let r = c
        .random_nodes(bitdust_proto::dht::v1::RandomNodesRequest {
            count: 64,
            kind: "supplier".into(),
        })
        .await?
        .into_inner();
    Ok(r.records
        .iter()
        .filter_map(|rec| bitdust_crypto::NodeId::try_from(rec.owner.as_slice()).ok())
        .map(|id| id.to_string())
        .collect())
}

async fn customer_status(sock: &Path) -> anyhow::Result<cpb::StatusReply> {
    let ch = bitdust_daemon::connect(sock).await?;
    let mut c = cpb::customer_client::CustomerClient::new(ch);
    Ok(c.status(cpb::StatusRequest {}).await?.into_inner())
}

impl Devnet {
    async fn up(dir: &Path, o: Options) -> anyhow::Result<Devnet> {
        let (n, spare) = (o.n, o.spare);
        if !bitdust_ecc::SUPPLIER_COUNTS.contains(&n) {
            bail!("--suppliers {n} is not one of 2, 4, 7, 13, 18, 26, 64");
        }
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = fs::canonicalize(dir)?;
        let mut net = Devnet {
            dir: dir.clone(),
            seed: None,
            suppliers: Vec::new(),
            customer: None,
        };
        // The DHT seed: a node that only runs a dht-peer; every other node
        // bootstraps through it.
        let mut seed = Node::new("dht-seed", dir.join("nodes/dht-seed"));
        let router = if o.relayed > 0 {
            "[router]\nenabled = true\nlisten = \"127.0.0.1:0\"\n"
        } else {
            ""
        };
        let config = write_config(
            &seed.dir,
            &format!("[dht]\nlisten = \"127.0.0.1:0\"\n{router}"),
        )?;
        seed.start("bitdust-dht-peer", &config)?;
        let seed_sock = seed.dir.join("run/dht.sock");
        let st = wait_for("the DHT seed", 30, || async {
            let st = dht_status(&seed_sock).await?;
            match &st.router {
                Some(r) if r.address.is_empty() => bail!("the router has no address yet"),
                _ => Ok(st),
            }
        })
        .await?;
        // The seed's router, for the relayed suppliers.
        let router = st
            .router
            .as_ref()
            .map(|r| format!("{}@{}", st.node_id, r.address));
        fs::write(seed.dir.join("node-id"), format!("{}\n", st.node_id))?;
        seed.node_id = st.node_id;
        seed.listen = st.address;
        let dht = format!(
            "[dht]\nlisten = \"127.0.0.1:0\"\nbootstrap = [{:?}]\n",
            format!("{}@{}", seed.node_id, seed.listen)
        );
        net.seed = Some(seed);
        for i in 0..n + spare {
            let name = format!("supplier-{i}");
            let mut node = Node::new(&name, dir.join("nodes").join(&name));
            let behind = match &router {
                Some(r) if i < o.relayed => {
                    format!("advertise = \"{UNREACHABLE}\"\nrouters = [{r:?}]\n")
                }
                _ => String::new(),
            };
            let config = write_config(
                &node.dir,
                &format!(
                    "{dht}[supplier]\nlisten = \"127.0.0.1:0\"\ncapacity = \"8 GiB\"\nmax_object_size = \"64 MiB\"\npublish_secs = 60\n{behind}"
                ),
            )?;
            node.start("bitdust-dht-peer", &config)?;
            node.start("bitdust-supplier-store", &config)?;
            net.suppliers.push(node);
        }
        for s in &mut net.suppliers {
            let sock = s.dir.join("run/supplier.sock");
            let st = wait_for(&s.name, 30, || supplier_status(&sock)).await?;
            fs::write(s.dir.join("node-id"), format!("{}\n", st.node_id))?;
            s.node_id = st.node_id;
            s.listen = st.listen;
        }
        // Every supplier's offer can be found before the customer starts,
        // measured as a customer finds them: random lookups for offers
        // (RandomNodes, kind "supplier") through a supplier's dht-peer,
        // not records held on the seed.
        let total = n + spare;
        let expected: HashSet<String> = net.suppliers.iter().map(|s| s.node_id.clone()).collect();
        let mut found: HashSet<String> = HashSet::new();
        let lookup_socks: Vec<PathBuf> = net
            .suppliers
            .iter()
            .take(4)
            .map(|s| s.dir.join("run/dht.sock"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for round in 0.. {
            let sock = &lookup_socks[round % lookup_socks.len()];
            if let Ok(owners) = offer_owners(sock).await {
                found.extend(owners.into_iter().filter(|o| expected.contains(o)));
            }
            if found.len() >= total {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the suppliers' offers in the DHT did not come up within 60 s: {} of {total} offers found by lookups",
                    found.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The first N are listed for positions 0..N-1 (so tests know who
        // holds what); spares are found through the DHT by the rebuilder.
        let addresses: Vec<String> = net.suppliers[..n]
            .iter()
            .enumerate()
            .map(|(i, s)| match &router {
                // As its offer says: an address nobody dials, and the router.
                Some(r) if i < o.relayed => {
                    format!("{:?}", format!("{}@{UNREACHABLE} via {r}", s.node_id))
                }
                _ => format!("{:?}", format!("{}@{}", s.node_id, s.listen)),
            })
            .collect();
        let mut customer = Node::new("customer", dir.join("nodes/customer"));
        let config = write_config(
            &customer.dir,
            &format!(
                // [customer] last: tests append keys to it.
                "{dht}[rebuilder]\ncheck_secs = {}\naudit_every = 3\nunreachable_secs = {}\nparallel_blocks = {}\n\
                 [customer]\nbind = \"127.0.0.1:0\"\nsuppliers = {n}\nneeded_space = \"1 GiB\"\nblock_size = \"{} MiB\"\ntimeout_secs = 3\nsupplier_addresses = [{}]\n",
                o.check_secs,
                (o.check_secs * 5).max(10),
                o.parallel_blocks,
                o.block_mib,
                addresses.join(", ")
            ),
        )?;
        customer.start("bitdust-dht-peer", &config)?;
        customer.start("bitdust-customer-agent", &config)?;
        let sock = customer.dir.join("run/customer.sock");
        let st = wait_for("customer", 60, || async {
            let st = customer_status(&sock).await?;
            if st.hired as usize == n {
                Ok(st)
            } else {
                bail!("{} of {n} suppliers hired", st.hired)
            }
        })
        .await?;
        fs::write(customer.dir.join("node-id"), format!("{}\n", st.node_id))?;
        customer.node_id = st.node_id;
        customer.start("bitdust-rebuilder", &config)?;
        net.customer = Some(customer);
        let mut env = fs::File::create(dir.join("devnet.env"))?;
        writeln!(
            env,
            "BITDUST_RUN_DIR={}",
            dir.join("nodes/customer/run").display()
        )?;
        writeln!(env, "BITDUST_DEVNET_DIR={}", dir.display())?;
        writeln!(env, "BITDUST_DEVNET_SUPPLIERS={n}")?;
        Ok(net)
    }

    fn customer_run_dir(&self) -> PathBuf {
        self.dir.join("nodes/customer/run")
    }

    /// kill -9 the supplier-store of supplier `i` (its dht-peer stays).
    fn kill_supplier(&mut self, i: usize) {
        let node = &mut self.suppliers[i];
        if let Some(k) = node
            .children
            .iter()
            .position(|(d, _)| d == "bitdust-supplier-store")
        {
            let (_, mut c) = node.children.remove(k);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM to every daemon (the customer's first, the seed's last).
    fn stop(&mut self) {
        let nodes = self
            .customer
            .iter_mut()
            .chain(self.suppliers.iter_mut())
            .chain(self.seed.iter_mut());
        let mut children: Vec<Child> = nodes
            .flat_map(|n| n.children.drain(..).rev().map(|(_, c)| c))
            .collect();
        for c in &children {
            if let Ok(pid) = rustix::process::Pid::from_raw(c.id() as i32).ok_or(()) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

/// A small tree with every kind of entry: text, random binary, nested and
/// empty directories, a symlink, an executable.
fn sample_tree(root: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(root.join("docs/nested/deeper"))?;
    fs::create_dir_all(root.join("empty"))?;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = vec![0u8; 3 << 20];
    for b in rnd.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(root.join("random.bin"), &rnd)?;
    for i in 0..40 {
        let text: String = (0..200)
            .map(|j| format!("line {j} of note {i}: backups are boring until they are not\n"))
            .collect();
        fs::write(root.join(format!("docs/nested/note-{i:02}.txt")), text)?;
    }
    fs::write(
        root.join("docs/nested/deeper/script.sh"),
        "#!/bin/sh\necho hello\n",
    )?;
    fs::set_permissions(
        root.join("docs/nested/deeper/script.sh"),
        fs::Permissions::from_mode(0o755),
    )?;
    std::os::unix::fs::symlink("docs/nested/note-00.txt", root.join("link-to-note"))?;
    Ok(())
}

/// Compares two trees: kinds, permission bits, contents, link targets.
fn same_tree(a: &Path, b: &Path) -> anyhow::Result<u64> {
    let ma = fs::symlink_metadata(a)?;
    let mb = fs::symlink_metadata(b).with_context(|| format!("{} is missing", b.display()))?;
    if ma.file_type() != mb.file_type() {
        bail!("{} differs in kind", b.display());
    }
    if !ma.is_symlink() && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        bail!(
            "{} has mode {:o}, not {:o}",
            b.display(),
            mb.mode() & 0o7777,
            ma.mode() & 0o7777
        );
    }
    if ma.is_symlink() {
        if fs::read_link(a)? != fs::read_link(b)? {
            bail!("{} points elsewhere", b.display());
        }
        return Ok(1);
    }
    if ma.is_file() {
        if fs::read(a)? != fs::read(b)? {
            bail!("{} differs in content", b.display());
        }
        return Ok(1);
    }
    let mut names: Vec<_> = fs::read_dir(a)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    let nb = fs::read_dir(b)?.count();
    if names.len() != nb {
        bail!("{} has {nb} entries, not {}", b.display(), names.len());
    }
    names.sort();
    let mut n = 1;
    for name in names {
        n += same_tree(&a.join(&name), &b.join(&name))?;
    }
    Ok(n)
}

fn ctl(run_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(sibling("bitdustctl"))
        .arg("--run-dir")
        .arg(run_dir)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run bitdustctl")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() && out.status.code() != Some(4) {
        bail!("bitdustctl {} failed ({})", args.join(" "), out.status);
    }
    Ok(stdout)
}

async fn demo(path: Option<PathBuf>, dir: Option<PathBuf>, n: usize) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("bitdust-devnet-")
        .tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_owned());
    let source = match path {
        Some(p) => {
            fs::canonicalize(&p).with_context(|| format!("{} does not exist", p.display()))?
        }
        None => {
            let s = dir.join("sample");
            sample_tree(&s)?;
            s
        }
    };
    let started = Instant::now();
    println!(
        "devnet: starting 1 customer and {n} suppliers under {}",
        dir.display()
    );
    let mut net = Devnet::up(
        &dir,
        Options {
            n,
            spare: 0,
            check_secs: 3600,
            parallel_blocks: 1,
            block_mib: 1,
            relayed: 0,
        },
    )
    .await?;
    let run = net.customer_run_dir();
    println!("devnet: up in {:.1} s", started.elapsed().as_secs_f64());
    print!("{}", ctl(&run, &["suppliers"])?);
    let t = Instant::now();
    let src = source.display().to_string();
    print!("{}", ctl(&run, &["backup", &src])?);
    let backup_secs = t.elapsed().as_secs_f64();
    let code = bitdust_ecc::Code::new(bitdust_ecc::Scheme::Xor, n)?;
    let lose = code.tolerance();
    // Lose the suppliers of spread-out positions.
    let victims: Vec<usize> = (0..lose)
        .map(|k| (k * n) / lose.max(1) + 1)
        .map(|p| p.min(n - 1))
        .collect();
    let mut victims = victims;
    victims.dedup();
    for &v in &victims {
        println!("devnet: kill -9 {} (position {v})", net.suppliers[v].name);
        net.kill_supplier(v);
    }
    print!("{}", ctl(&run, &["status"])?);
    let out = dir.join("restored");
    let t = Instant::now();
    print!(
        "{}",
        ctl(&run, &["restore", "--to", &out.display().to_string()])?
    );
    let restore_secs = t.elapsed().as_secs_f64();
    let restored = out.join(source.strip_prefix("/").unwrap_or(&source));
    let entries = same_tree(&source, &restored)?;
    println!(
        "devnet demo: OK: {entries} entries restored bit-exact after losing {} of {n} suppliers (kill -9); backup {backup_secs:.1} s, restore {restore_secs:.1} s",
        victims.len()
    );
    net.stop();
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bitdust-devnet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Cmd::Up {
                dir,
                suppliers,
                spare,
                check_secs,
                parallel_blocks,
                block_mib,
                relayed,
            } => {
                let mut net = Devnet::up(
                    &dir,
                    Options {
                        n: suppliers,
                        spare,
                        check_secs,
                        parallel_blocks,
                        block_mib,
                        relayed,
                    },
                )
                .await?;
                println!(
                    "devnet: up: customer and {} suppliers under {}; source {}/devnet.env",
                    suppliers + spare,
                    net.dir.display(),
                    net.dir.display()
                );
                bitdust_daemon::shutdown_signal().await;
                net.stop();
                println!("devnet: stopped");
                Ok(())
            }
            Cmd::Demo {
                path,
                dir,
                suppliers,
            } => demo(path, dir, suppliers).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bitdust-devnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}
