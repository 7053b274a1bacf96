//! `factline-schemas`: register the schemas, check their compatibility with the registry, and
//! create the catalog's Kafka topics. Works on the embedded schemas, or on a directory with the
//! same layout (`catalog.toml` plus the `.avsc` files it names) given with `--dir`.

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use factline_schemas::registry::{explain_incompatibility, Compatibility, RegistryClient};
use factline_schemas::topics::{
    client_config, create_topics, with_dead_letter_topics, TopicOutcome,
};
use factline_schemas::Catalog;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "factline-schemas",
    version,
    about = "factline's event contract tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Tool,
}

#[derive(Subcommand)]
enum Tool {
    /// Register every schema under its subject ({topic}-{full record name}); prints subject -> id.
    Register {
        #[command(flatten)]
        source: Source,
        /// The schema registry.
        #[arg(long, env = "SCHEMA_REGISTRY_URL")]
        registry_url: String,
    },
    /// Check every schema against its subject's latest version; non-zero exit on any
    /// incompatibility. Subjects without a version yet count as compatible.
    Check {
        #[command(flatten)]
        source: Source,
        /// The schema registry.
        #[arg(long, env = "SCHEMA_REGISTRY_URL")]
        registry_url: String,
    },
    /// Create every catalog topic and its `<topic>.dlq`, kept forever (retention.ms=-1,
    /// cleanup.policy=delete). Existing topics are left as they are.
    CreateTopics {
        #[command(flatten)]
        source: Source,
        /// Kafka bootstrap servers (librdkafka properties come from KAFKA_PROPERTY_<NAME>).
        #[arg(long, env = "KAFKA_BROKERS")]
        brokers: String,
        /// Partitions of each new topic.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Replication factor of each new topic.
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
    },
}

#[derive(Args)]
struct Source {
    /// Read catalog.toml and the schemas from this directory instead of the embedded ones.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Prefix every topic (and so every subject) with this, e.g. for tests on a shared cluster.
    #[arg(long, default_value = "")]
    topic_prefix: String,
}

impl Source {
    fn catalog(&self) -> anyhow::Result<Catalog> {
        let catalog = match &self.dir {
            Some(dir) => Catalog::from_dir(dir)
                .with_context(|| format!("cannot load the catalog in {}", dir.display()))?,
            None => Catalog::load_builtin().context("the embedded catalog is invalid")?,
        };
        Ok(catalog.with_topic_prefix(&self.topic_prefix))
    }
}

async fn register(catalog: &Catalog, registry_url: &str) -> anyhow::Result<()> {
    let registry = RegistryClient::new(registry_url)?;
    for event in catalog.events() {
        let subject = event.subject();
        let id = registry
            .register(&subject, &event.schema_json)
            .await
            .with_context(|| format!("cannot register {subject}"))?;
        println!("{subject} -> {id}");
    }
    Ok(())
}

async fn check(catalog: &Catalog, registry_url: &str) -> anyhow::Result<()> {
    let registry = RegistryClient::new(registry_url)?;
    let mut incompatible = Vec::new();
    for event in catalog.events() {
        let subject = event.subject();
        match registry
            .check_compatibility(&subject, &event.schema_json)
            .await
            .with_context(|| format!("cannot check {subject}"))?
        {
            Compatibility::Compatible => println!("{subject}: compatible"),
            Compatibility::NotRegistered => {
                println!("{subject}: not registered yet (compatible)")
            }
            Compatibility::Incompatible(mut messages) => {
                // The registry's messages, plus a local explanation naming the field when the
                // registry's own do not say it the same way.
                if let Ok(Some(latest)) = registry.latest_schema(&subject).await {
                    if let Some(why) = explain_incompatibility(&latest, &event.schema_json) {
                        if !messages.iter().any(|m| m.contains(&why)) {
                            messages.push(format!("local check: {why}"));
                        }
                    }
                }
                println!("{subject}: INCOMPATIBLE");
                for message in &messages {
                    println!("  {message}");
                }
                incompatible.push(format!("{subject}: {}", messages.join("; ")));
            }
        }
    }
    if !incompatible.is_empty() {
        bail!(
            "{} schema(s) incompatible with the registry:\n  {}",
            incompatible.len(),
            incompatible.join("\n  ")
        );
    }
    Ok(())
}

async fn topics(
    catalog: &Catalog,
    brokers: &str,
    partitions: i32,
    replication_factor: i32,
) -> anyhow::Result<()> {
    if partitions < 1 || replication_factor < 1 {
        bail!("--partitions and --replication-factor must be at least 1");
    }
    let names = with_dead_letter_topics(&catalog.topics());
    let outcomes = create_topics(
        &client_config(brokers),
        &names,
        partitions,
        replication_factor,
    )
    .await
    .context("cannot create the topics")?;
    for (topic, outcome) in outcomes {
        match outcome {
            TopicOutcome::Created => println!("{topic}: created ({partitions} partitions)"),
            TopicOutcome::AlreadyExists => println!("{topic}: already exists"),
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Tool::Register {
            source,
            registry_url,
        } => register(&source.catalog()?, &registry_url).await,
        Tool::Check {
            source,
            registry_url,
        } => check(&source.catalog()?, &registry_url).await,
        Tool::CreateTopics {
            source,
            brokers,
            partitions,
            replication_factor,
        } => topics(&source.catalog()?, &brokers, partitions, replication_factor).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
