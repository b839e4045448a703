//! The embedded Kafka-protocol cluster: librdkafka's mock cluster, for
//! running the whole bus on one machine with no set-up.

use std::{sync::mpsc, thread};

use rdkafka::mocking::MockCluster;

/// A running mock cluster. Dropping it stops the cluster.
///
/// The cluster handle is not `Send`, so it lives on a thread of its own that
/// owns it from creation to destruction.
#[derive(Debug)]
pub struct EmbeddedCluster {
    bootstrap_servers: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EmbeddedCluster {
    /// Starts a cluster of `brokers` brokers and creates `topics`, each with
    /// `partitions` partitions. (The mock broker does not implement the
    /// CreateTopics admin request, so topics are made through its own API.)
    pub fn start(brokers: i32, topics: &[String], partitions: i32) -> Result<Self, EmbeddedError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topics = topics.to_vec();
        let thread = thread::Builder::new()
            .name("kafka-embedded".into())
            .spawn(move || {
                let started = MockCluster::new(brokers).and_then(|cluster| {
                    for topic in &topics {
                        cluster.create_topic(topic, partitions, 1)?;
                    }
                    Ok(cluster)
                });
                match started {
                    Ok(cluster) => {
                        let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                        // Blocks until stop() sends or the handle is dropped.
                        let _ = stop_rx.recv();
                        drop(cluster);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            })
            .map_err(|e| EmbeddedError(format!("cannot spawn its thread: {e}")))?;
        let bootstrap_servers = ready_rx
            .recv()
            .map_err(|_| EmbeddedError("its thread died".into()))?
            .map_err(EmbeddedError)?;
        Ok(Self {
            bootstrap_servers,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why the embedded cluster did not start.
#[derive(Debug, thiserror::Error)]
#[error("embedded kafka cluster did not start: {0}")]
pub struct EmbeddedError(String);
