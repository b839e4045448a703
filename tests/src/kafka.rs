//! The Kafka-protocol broker a test runs against: librdkafka's embedded mock
//! cluster by default; with `TEST_KAFKA=tansu` a separate `tansu` process
//! with a durable SQLite log; with `TEST_KAFKA=apache` an Apache Kafka node
//! (KRaft, tests/kafka/apache-kafka.sh). The separate ones can be stopped
//! and restarted with their logs.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use govbus_kafka::EmbeddedCluster;

pub enum KafkaUnderTest {
    Embedded(EmbeddedCluster),
    Tansu(Tansu),
    Apache(Apache),
}

/// An Apache Kafka node (broker and controller) of this test, started by
/// tests/kafka/apache-kafka.sh with its data in `dir`.
pub struct Apache {
    port: u16,
    dir: PathBuf,
}

pub fn wants_apache() -> bool {
    std::env::var("TEST_KAFKA").is_ok_and(|v| v == "apache")
}

/// A tansu broker process on a fixed port of this test.
pub struct Tansu {
    port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

pub fn wants_tansu() -> bool {
    std::env::var("TEST_KAFKA").is_ok_and(|v| v == "tansu")
}

/// True (and says so) when the Kafka under test is tansu 0.6.0, which
/// panics in its storage task (lite.rs:503) when an idempotent producer
/// resumes after a timed-out record, and then serves no more produce
/// requests (README, "Kafka brokers"): tests that time records out skip.
pub fn skip_timed_out_records_on_tansu() -> bool {
    let skip = wants_tansu();
    if skip {
        println!("skipped on tansu 0.6.0: a timed-out idempotent record breaks the broker");
    }
    skip
}

impl KafkaUnderTest {
    pub fn start(dir: &Path, topics: &[String]) -> Self {
        if wants_tansu() {
            let tansu = Tansu {
                port: free_port(),
                dir: dir.to_path_buf(),
                child: Mutex::new(None),
            };
            tansu.launch();
            Self::Tansu(tansu)
        } else if wants_apache() {
            let apache = Apache {
                port: free_port(),
                dir: dir.join("kafka"),
            };
            apache.launch();
            Self::Apache(apache)
        } else {
            Self::Embedded(EmbeddedCluster::start(1, topics, 3).expect("embedded cluster starts"))
        }
    }

    pub fn bootstrap_servers(&self) -> String {
        match self {
            Self::Embedded(cluster) => cluster.bootstrap_servers().to_string(),
            Self::Tansu(t) => format!("127.0.0.1:{}", t.port),
            Self::Apache(a) => format!("127.0.0.1:{}", a.port),
        }
    }

    /// Whether govbus must create the topics itself (the embedded cluster
    /// creates them at start; tansu, like production, does not auto-create).
    pub fn needs_topic_management(&self) -> bool {
        !matches!(self, Self::Embedded(_))
    }

    /// Takes the broker away: the embedded one drops off the network, tansu
    /// is killed (its log stays on disk).
    pub fn broker_down(&self, id: i32) -> Result<(), String> {
        match self {
            Self::Embedded(cluster) => cluster.broker_down(id).map_err(|e| e.to_string()),
            Self::Tansu(t) => {
                t.stop();
                Ok(())
            }
            Self::Apache(a) => {
                a.stop();
                Ok(())
            }
        }
    }

    pub fn broker_up(&self, id: i32) -> Result<(), String> {
        match self {
            Self::Embedded(cluster) => cluster.broker_up(id).map_err(|e| e.to_string()),
            Self::Tansu(t) => {
                t.launch();
                Ok(())
            }
            Self::Apache(a) => {
                a.launch();
                Ok(())
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Tansu {
    fn launch(&self) {
        let binary = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .expect("tansu log");
        // tansu resolves sqlite:// paths against its working directory.
        let child = Command::new(&binary)
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary} (TEST_KAFKA=tansu): {e}"));
        *self.child.lock().expect("tansu child") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("tansu child").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Apache {
    fn script(command: &str) -> Command {
        let mut script = Command::new("bash");
        script
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka/apache-kafka.sh"))
            .arg(command);
        script
    }

    /// Fetches the pinned Kafka (once per process; cached across runs),
    /// then starts the node and waits until it answers.
    fn launch(&self) {
        static FETCHED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let fetched = FETCHED.get_or_init(|| {
            let output = Self::script("fetch").output().map_err(|e| e.to_string())?;
            if output.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&output.stderr).into_owned())
            }
        });
        if let Err(reason) = fetched {
            panic!("TEST_KAFKA=apache: apache-kafka.sh fetch failed:\n{reason}");
        }
        let output = Self::script("start")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run apache-kafka.sh: {e}"));
        assert!(
            output.status.success(),
            "TEST_KAFKA=apache: Kafka did not start in {}:\n{}",
            self.dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn stop(&self) {
        let _ = Self::script("stop").arg(&self.dir).output();
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        self.stop();
    }
}
