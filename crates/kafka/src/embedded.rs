//! The embedded Kafka-protocol cluster: librdkafka's mock cluster, for
//! running the whole bus on one machine with no set-up.

use std::{sync::mpsc, thread};

use rdkafka::{
    mocking::MockCluster,
    types::{RDKafkaApiKey, RDKafkaRespErr},
};

/// What the cluster thread can be asked to do.
#[derive(Debug)]
enum Command {
    BrokerDown(i32, mpsc::Sender<Result<(), String>>),
    BrokerUp(i32, mpsc::Sender<Result<(), String>>),
    ProduceErrors(Vec<RDKafkaRespErr>, mpsc::Sender<Result<(), String>>),
}

/// A running mock cluster. Dropping it stops the cluster.
///
/// The cluster handle is not `Send`, so it lives on a thread of its own that
/// owns it from creation to destruction and takes commands over a channel.
#[derive(Debug)]
pub struct EmbeddedCluster {
    bootstrap_servers: String,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Why the embedded cluster did not start or obey.
#[derive(Debug, thiserror::Error)]
#[error("embedded kafka cluster: {0}")]
pub struct EmbeddedError(String);

impl EmbeddedCluster {
    /// Starts a cluster of `brokers` brokers (ids 1..=brokers) and creates
    /// `topics`, each with `partitions` partitions. (The mock broker does not
    /// implement the CreateTopics admin request, so topics are made through
    /// its own API.)
    pub fn start(brokers: i32, topics: &[String], partitions: i32) -> Result<Self, EmbeddedError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands_tx, commands_rx) = mpsc::channel::<Command>();
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
                let cluster = match started {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until the handle is dropped and the channel closes.
                for command in commands_rx {
                    match command {
                        Command::BrokerDown(id, reply) => {
                            let _ = reply.send(cluster.broker_down(id).map_err(|e| e.to_string()));
                        }
                        Command::BrokerUp(id, reply) => {
                            let _ = reply.send(cluster.broker_up(id).map_err(|e| e.to_string()));
                        }
                        Command::ProduceErrors(errors, reply) => {
                            cluster.request_errors(RDKafkaApiKey::Produce, &errors);
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
            })
            .map_err(|e| EmbeddedError(format!("cannot spawn its thread: {e}")))?;
        let bootstrap_servers = ready_rx
            .recv()
            .map_err(|_| EmbeddedError("its thread died".into()))?
            .map_err(|e| EmbeddedError(format!("did not start: {e}")))?;
        Ok(Self {
            bootstrap_servers,
            commands: Some(commands_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Takes broker `id` off the network: its connections are closed and new
    /// ones refused until [`broker_up`](Self::broker_up). For failure tests.
    pub fn broker_down(&self, id: i32) -> Result<(), EmbeddedError> {
        self.command(|reply| Command::BrokerDown(id, reply))
    }

    pub fn broker_up(&self, id: i32) -> Result<(), EmbeddedError> {
        self.command(|reply| Command::BrokerUp(id, reply))
    }

    /// Makes the next produce requests fail with `errors`, one each. For
    /// failure tests.
    pub fn fail_next_produce_requests(
        &self,
        errors: &[RDKafkaRespErr],
    ) -> Result<(), EmbeddedError> {
        let errors = errors.to_vec();
        self.command(|reply| Command::ProduceErrors(errors, reply))
    }

    fn command(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), EmbeddedError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.commands
            .as_ref()
            .ok_or_else(|| EmbeddedError("stopped".into()))?
            .send(make(reply_tx))
            .map_err(|_| EmbeddedError("its thread died".into()))?;
        reply_rx
            .recv()
            .map_err(|_| EmbeddedError("its thread died".into()))?
            .map_err(EmbeddedError)
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
