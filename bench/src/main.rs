//! `factline-bench`: runs the bench, prints the table, writes the JSON results. Exits non-zero
//! when a stage failed (skipped stages are fine).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,librdkafka=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = factline_bench::Args::parse();
    let out = args.out.clone();
    let report = factline_bench::run(args).await;
    println!("{}", report.table());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("results written to {}", out.display());
    Ok(if report.any_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
