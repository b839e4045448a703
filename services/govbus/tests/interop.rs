//! Clients that are not ours reach the demo bus with nothing but the files
//! `govbus certs init` writes and the servers' reflection: Python grpcio,
//! grpc-java (netty-shaded), Node's @grpc/grpc-js, grpc-go, grpcurl running
//! the README's own commands, and OpenSSL. Each client is one of the
//! programs in `examples/`, set up by its `setup.sh` with pinned versions
//! (a toolchain that cannot be set up fails its test with the reason).
//!
//! Every example prints the same five kinds of lines: a health check and
//! the services listed by reflection on the broker and on the civil
//! registry's adapter, a birth certificate published through the adapter,
//! the evidence of it read from the broker as the portal, and one refusal.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use govbus_cli::demo::{Demo, DemoConfig};
use tokio_util::sync::CancellationToken;

/// A toolchain's first set-up downloads its pinned libraries (a few
/// minutes for Go on two cores); later ones check a stamp.
const SETUP_LIMIT: Duration = Duration::from_secs(900);
/// One client's whole round trip, evidence wait included.
const RUN_LIMIT: Duration = Duration::from_secs(120);

const REFUSAL: &str = "refused: PERMISSION_DENIED records[0].record_type: agency/civil-registry/system/fhdy may not publish address_registration; its owner is agency/interior/system/address-bureau";

/// The demo bus every test here talks to, started once on a thread of its
/// own and left running until the test process ends.
struct Bus {
    certs: PathBuf,
    broker: String,
    civil_registry: String,
    interior: String,
}

fn bus() -> &'static Bus {
    static BUS: OnceLock<Bus> = OnceLock::new();
    BUS.get_or_init(|| {
        govbus_security::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temporary folder").keep();
        let certs = dir.join("certs");
        let (tx, rx) = std::sync::mpsc::channel();
        let config = DemoConfig {
            data_dir: dir.join("demo"),
            certs_dir: certs.clone(),
            citizens: 50,
            broker_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            civil_registry_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            interior_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..DemoConfig::default()
        };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let demo = Demo::build(config).await.expect("demo builds");
                tx.send(demo.endpoints()).expect("endpoints sent");
                // Runs until the test process exits.
                demo.run(CancellationToken::new()).await
            })
        });
        let endpoints = rx.recv().expect("the demo started");
        let address = |name: &str| {
            endpoints
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, a)| a.clone())
                .unwrap_or_else(|| panic!("no {name} in {endpoints:?}"))
        };
        Bus {
            certs,
            broker: address("broker"),
            civil_registry: address("civil-registry"),
            interior: address("interior"),
        }
    })
}

/// A PINFL no other test of this process publishes for.
fn fresh_subject() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("3150515{:07}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `command` to its end, killing it after `limit`: a client or a
/// package download that hangs fails its test instead of the suite.
fn run(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {limit:?}:\n{}{}",
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `examples/<language>/setup.sh` once per process (tests of one
/// language run in parallel and share its installation); its reason when
/// it fails.
fn set_up(language: &str) {
    static DONE: Mutex<BTreeMap<String, Result<(), String>>> = Mutex::new(BTreeMap::new());
    let mut done = DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let result = done.entry(language.to_string()).or_insert_with(|| {
        let script = repo().join("examples").join(language).join("setup.sh");
        let output = run(Command::new("bash").arg(&script), SETUP_LIMIT);
        let (stdout, stderr) = text(&output);
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} could not set up the {language} toolchain:\n{stdout}{stderr}",
                script.display()
            ))
        }
    });
    if let Err(reason) = result {
        panic!("{reason}");
    }
}

/// Runs one example program against the bus with a fresh subject; its
/// standard output, after checking it exited 0.
fn run_example(language: &str, program: &str) -> String {
    set_up(language);
    let bus = bus();
    let script = repo().join("examples").join(language).join(program);
    let output = run(
        Command::new("bash")
            .arg(&script)
            .env("GOVBUS_CERTS", &bus.certs)
            .env("GOVBUS_BROKER", &bus.broker)
            .env("GOVBUS_CIVIL_REGISTRY", &bus.civil_registry)
            .env("GOVBUS_SUBJECT", fresh_subject()),
        RUN_LIMIT,
    );
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stdout}{stderr}",
        script.display(),
        output.status
    );
    stdout
}

/// The value of the one line starting with `prefix`.
fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    let found: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect();
    assert_eq!(found.len(), 1, "one {prefix:?} line in:\n{stdout}");
    found[0].trim()
}

/// Checks the five steps every example prints.
fn check_round_trip(stdout: &str) {
    let bus = bus();
    for address in [&bus.broker, &bus.civil_registry] {
        assert_eq!(line(stdout, &format!("health {address}:")), "SERVING");
    }
    let listed = |address: &str| -> Vec<String> {
        line(stdout, &format!("services {address}:"))
            .split(',')
            .map(|s| s.trim().to_string())
            .collect()
    };
    let broker = listed(&bus.broker);
    let adapter = listed(&bus.civil_registry);
    for (services, served, not_served) in [
        (
            &broker,
            &["govbus.v1.OnceOnly", "govbus.v1.Consents"][..],
            "govbus.v1.AgencyAdapter",
        ),
        (
            &adapter,
            &["govbus.v1.AgencyAdapter"][..],
            "govbus.v1.OnceOnly",
        ),
    ] {
        for name in served.iter().chain(&["grpc.health.v1.Health"]) {
            assert!(services.iter().any(|s| s == name), "{name} in {services:?}");
        }
        assert!(
            !services.iter().any(|s| s == not_served),
            "{not_served} is not served there: {services:?}"
        );
    }

    let published: Vec<&str> = line(stdout, "published:").split_whitespace().collect();
    let [record_id, topic, partition, offset] = published[..] else {
        panic!("published: <id> <topic> <partition> <offset>, got {published:?}");
    };
    assert_eq!(topic, "govbus.records.birth_certificate");
    assert!(partition.parse::<u32>().is_ok() && offset.parse::<u64>().is_ok());
    assert_eq!(
        line(stdout, "evidence:"),
        format!("{record_id} birth_certificate v1 EVIDENCE_STATUS_VALID"),
        "the portal reads back what was published"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == REFUSAL),
        "{REFUSAL:?} in:\n{stdout}"
    );
}

#[test]
fn python_grpcio_publishes_and_reads_evidence() {
    check_round_trip(&run_example("python", "run.sh"));
}

#[test]
fn java_grpc_netty_shaded_publishes_and_reads_evidence() {
    check_round_trip(&run_example("java", "run.sh"));
}

#[test]
fn node_grpc_js_publishes_and_reads_evidence() {
    check_round_trip(&run_example("node", "run.sh"));
}

#[test]
fn go_grpc_publishes_and_reads_evidence() {
    check_round_trip(&run_example("go", "run.sh"));
}

#[test]
fn grpcurl_publishes_and_reads_evidence() {
    check_round_trip(&run_example("go", "grpcurl.sh"));
}

/// The pinned grpcurl that `examples/go/setup.sh` installs.
fn grpcurl() -> PathBuf {
    set_up("go");
    let cache = std::env::var_os("GOVBUS_EXAMPLES_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/examples"));
    cache.join("go/bin/grpcurl")
}

/// The README's shell block that calls `method` with grpcurl, after the
/// variables the session set before it (`C=var/certs`), with the demo's
/// addresses for the ones `make run` prints by default.
fn readme_commands(method: &str) -> String {
    let bus = bus();
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let blocks: Vec<&str> = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| block.contains("grpcurl"))
        .collect();
    let calls: Vec<usize> = (0..blocks.len())
        .filter(|&i| blocks[i].contains(method))
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "one README block calls {method}: {blocks:?}"
    );
    let variables: String = blocks[..calls[0]]
        .iter()
        .flat_map(|block| block.lines())
        .filter(|line| {
            line.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase())
            })
        })
        .map(|line| format!("{line}\n"))
        .collect();
    format!("{variables}{}", blocks[calls[0]])
        .replace("127.0.0.1:50051", &bus.broker)
        .replace("127.0.0.1:50061", &bus.civil_registry)
        .replace("127.0.0.1:50062", &bus.interior)
}

/// Runs README commands in a folder whose `var/certs` are the demo's, as
/// after `make run`, with the pinned grpcurl first on the PATH.
fn run_readme(commands: &str) -> Output {
    static CWD: OnceLock<PathBuf> = OnceLock::new();
    let cwd = CWD.get_or_init(|| {
        let cwd = tempfile::tempdir().expect("temporary folder").keep();
        std::fs::create_dir_all(cwd.join("var")).expect("var");
        std::os::unix::fs::symlink(&bus().certs, cwd.join("var/certs")).expect("var/certs");
        cwd
    });
    let bin = grpcurl().parent().expect("bin folder").to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin];
    paths.extend(std::env::split_paths(&path));
    run(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", commands])
            .current_dir(cwd)
            .env("PATH", std::env::join_paths(paths).expect("PATH")),
        RUN_LIMIT,
    )
}

#[test]
fn the_readme_example_session_works_verbatim_with_grpcurl() {
    let published = run_readme(&readme_commands("AgencyAdapter/Publish"));
    let (stdout, stderr) = text(&published);
    assert!(published.status.success(), "{stdout}{stderr}");
    let reply: serde_json::Value = serde_json::from_str(&stdout).expect("grpcurl prints JSON");
    let result = &reply["results"][0];
    assert_eq!(result["outcome"], "PUBLISH_OUTCOME_ACCEPTED", "{reply}");
    let record_id = result["recordId"]
        .as_str()
        .expect("a record id")
        .to_string();

    // Ingestion is asynchronous: the README's query, until the record is there.
    let query = readme_commands("OnceOnly/GetEvidence");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answered = run_readme(&query);
        let (stdout, stderr) = text(&answered);
        if answered.status.success() {
            let reply: serde_json::Value =
                serde_json::from_str(&stdout).expect("grpcurl prints JSON");
            let evidence = reply["evidence"]
                .as_array()
                .expect("evidence")
                .iter()
                .find(|e| e["record"]["recordId"] == record_id.as_str());
            if let Some(evidence) = evidence {
                assert_eq!(evidence["status"], "EVIDENCE_STATUS_VALID", "{reply}");
                assert_eq!(
                    evidence["record"]["payload"]["child"]["firstName"], "Laylo",
                    "{reply}"
                );
                return;
            }
        } else {
            assert!(stderr.contains("NotFound"), "{stdout}{stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "the README's GetEvidence never showed {record_id}:\n{stdout}{stderr}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn openssl_reads_every_key_and_completes_a_handshake_with_every_server() {
    let bus = bus();
    for entry in std::fs::read_dir(&bus.certs).expect("certs folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "key") {
            let output = run(
                Command::new("openssl")
                    .args(["pkey", "-noout", "-in"])
                    .arg(&path),
                RUN_LIMIT,
            );
            let (stdout, stderr) = text(&output);
            assert!(
                output.status.success(),
                "openssl pkey {}: {stdout}{stderr}",
                path.display()
            );
        }
    }
    let file = |name: &str| bus.certs.join(name);
    for address in [&bus.broker, &bus.civil_registry, &bus.interior] {
        let output = run(
            Command::new("openssl")
                .args(["s_client", "-brief", "-verify_return_error"])
                .args(["-connect", address, "-verify_hostname", "localhost"])
                .arg("-CAfile")
                .arg(file("ca.pem"))
                .arg("-cert")
                .arg(file("egov.portal.pem"))
                .arg("-key")
                .arg(file("egov.portal.key")),
            RUN_LIMIT,
        );
        let (stdout, stderr) = text(&output);
        let said = format!("{stdout}{stderr}");
        assert!(
            said.contains("Verification: OK") && said.contains("Signature type: ECDSA"),
            "openssl s_client {address}:\n{said}"
        );
    }
}
