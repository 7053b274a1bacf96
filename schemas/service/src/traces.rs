//! OpenTelemetry traces: off unless an OTLP endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; OTLP over HTTP,
//! protobuf; `OTEL_SERVICE_NAME` names the service, the binary's name by default). Then every
//! `tracing` span at the log filter's level is exported, and the W3C `traceparent` links the
//! spans of one command across processes: the write side's request, the record it produces
//! (the `traceparent` header), each projector applying it, and a read API query sent with it.
//!
//! [`set_parent`] continues a trace from a `traceparent`; [`traceparent`] gives the one to
//! send on (`None` while traces are off). [`flush`] exports what is buffered (at shutdown).

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether the environment configures an OTLP endpoint (and does not disable the SDK).
pub fn configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| {
            std::env::args().next().and_then(|path| {
                std::path::Path::new(&path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
        })
        .unwrap_or_else(|| "factline".into())
}

/// The layer exporting spans, when an endpoint is configured; `None` otherwise (or when the
/// exporter cannot be built: said on stderr, since logging is not set up yet).
pub fn layer<S>() -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    if !configured() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("traces off: the OTLP exporter cannot be built: {error}");
            return None;
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name())
                .build(),
        )
        .build();
    let tracer = provider.tracer("factline");
    let _ = PROVIDER.set(provider);
    Some(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Whether spans are exported (an endpoint was configured and the layer installed).
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Makes the trace of `traceparent` (W3C) the parent of `span`; an invalid value is ignored.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if PROVIDER.get().is_none() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(context);
}

/// The `traceparent` naming `span`, to send on; `None` while traces are off.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    PROVIDER.get()?;
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Exports the spans buffered so far (at shutdown; a test before it looks).
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}
