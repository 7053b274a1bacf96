//! Logs of every binary: one `tracing` subscriber set up the same way everywhere. The filter
//! comes from `RUST_LOG` (default `info`); `LOG_FORMAT=json` gives one flat JSON object per
//! line (fields at the top level), anything else human-readable text. With an OTLP endpoint
//! configured, spans are exported too ([`crate::traces`]).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One flat JSON object per line.
    Json,
}

impl LogFormat {
    /// The format named by a `LOG_FORMAT` value: `json` (any case) or text.
    pub fn from_setting(value: Option<&str>) -> LogFormat {
        match value {
            Some(v) if v.trim().eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Installs the process-wide subscriber with the format named by `LOG_FORMAT`. A second call
/// (several services in one test process) keeps the first subscriber.
pub fn init() {
    init_with(LogFormat::from_setting(
        std::env::var("LOG_FORMAT").ok().as_deref(),
    ));
}

/// Installs the process-wide subscriber with `format`; a second call keeps the first.
pub fn init_with(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(crate::traces::layer());
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    // Err means a subscriber is installed already: the first one stays.
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    #[test]
    fn json_is_chosen_by_name_in_any_case_and_everything_else_is_text() {
        assert_eq!(LogFormat::from_setting(Some("json")), LogFormat::Json);
        assert_eq!(LogFormat::from_setting(Some(" JSON ")), LogFormat::Json);
        assert_eq!(LogFormat::from_setting(Some("text")), LogFormat::Text);
        assert_eq!(LogFormat::from_setting(Some("")), LogFormat::Text);
        assert_eq!(LogFormat::from_setting(None), LogFormat::Text);
    }
}
