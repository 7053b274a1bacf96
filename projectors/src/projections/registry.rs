//! The registry of projections by name: what `factline-projector <name>` runs and what
//! `factline-projector --list` prints. Each [`Registered`] projection knows its name, its sink
//! and how to build and run itself; the list itself is one line per projection in
//! [`super::registry`]. A projection is built only when it is run (a broken mapping fails that
//! projector's start, loudly, and nobody else's).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::declarative::{
    DeclarativeConfig, DeclarativeError, DeclarativeProjection, DeclarativeSearchProjection,
    SinkKind,
};
use crate::{Config, Projection, ProjectionError, RunError, SearchProjection};

/// The port of the first listed projector's `/healthz` and `/metrics`; the i-th listed one
/// (from 0) defaults to `FIRST_PORT + i`.
pub const FIRST_PORT: u16 = 9101;

/// The signal a projector stops on (SIGTERM/SIGINT in the binary, anything in a test).
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why a projector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No projection of that name is registered.
    #[error("no projector named {name:?}; registered: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The projection cannot be built (e.g. a mapping file that is not JSON).
    #[error("projector {name} cannot be built")]
    Build {
        /// The projection.
        name: String,
        /// What is wrong.
        #[source]
        source: ProjectionError,
    },
    /// The projection's `name()` is not the name it is registered under.
    #[error("projector registered as {registered} is named {actual}")]
    Misnamed {
        /// The registered name.
        registered: String,
        /// The projection's own.
        actual: String,
    },
    /// A declarative configuration is invalid.
    #[error("declarative projector {name} is invalid")]
    Declarative {
        /// The projection or file.
        name: String,
        /// What is wrong.
        #[source]
        source: DeclarativeError,
    },
    /// The runtime stopped with an error.
    #[error(transparent)]
    Run(#[from] RunError),
}

type Start = Box<
    dyn Fn(Config, Shutdown) -> Pin<Box<dyn Future<Output = Result<(), StartError>> + Send>>
        + Send
        + Sync,
>;

type Check = Box<dyn Fn() -> Result<(), StartError> + Send + Sync>;

/// How a registered projection is built.
enum Build {
    /// In code, for a known sink.
    Code {
        sink: SinkKind,
        check: Check,
        start: Start,
    },
    /// A declarative configuration embedded in the binary.
    Declarative(&'static str),
    /// The event archive (its settings are read when it runs: `ARCHIVE_*`).
    Archive,
}

/// One registered projection.
pub struct Registered {
    name: &'static str,
    build: Build,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("name", &self.name)
            .field("declarative", &self.is_declarative())
            .finish_non_exhaustive()
    }
}

impl Registered {
    /// A PostgreSQL projection in code: its name and how to build it.
    pub fn postgres<P, F>(name: &'static str, build: F) -> Registered
    where
        P: Projection,
        F: Fn() -> Result<P, ProjectionError> + Send + Sync + 'static,
    {
        let built = move || checked(name, build(), |p: &P| p.name().to_owned());
        Registered::code(name, SinkKind::Postgres, built, crate::run)
    }

    /// An Elasticsearch projection in code: its name and how to build it.
    pub fn search<P, F>(name: &'static str, build: F) -> Registered
    where
        P: SearchProjection,
        F: Fn() -> Result<P, ProjectionError> + Send + Sync + 'static,
    {
        let built = move || checked(name, build(), |p: &P| p.name().to_owned());
        Registered::code(name, SinkKind::Elasticsearch, built, crate::run_search)
    }

    /// A projection in code, built by `build` and run on its sink by `run`.
    fn code<P, B, R, F>(name: &'static str, sink: SinkKind, build: B, run: R) -> Registered
    where
        P: Send + 'static,
        B: Fn() -> Result<P, StartError> + Send + Sync + 'static,
        R: Fn(Config, P, Shutdown) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), RunError>> + Send + 'static,
    {
        let build = Arc::new(build);
        let check = {
            let build = build.clone();
            Box::new(move || build().map(drop))
        };
        let start: Start = Box::new(move |config, shutdown| {
            let projection = build();
            let running = projection.map(|p| run(config, p, shutdown));
            Box::pin(async move { Ok(running?.await?) })
        });
        Registered {
            name,
            build: Build::Code { sink, check, start },
        }
    }

    /// The event archive of every topic of the built-in catalog (see [`crate::archive`]).
    pub fn archive(name: &'static str) -> Registered {
        Registered {
            name,
            build: Build::Archive,
        }
    }

    /// A declarative projection shipped in the binary (`include_str!` of its TOML file).
    pub fn declarative(name: &'static str, toml: &'static str) -> Registered {
        Registered {
            name,
            build: Build::Declarative(toml),
        }
    }

    /// The projector's name (its consumer group, checkpoint key and metrics label).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Where it writes: `postgres`, `elasticsearch` or `archive` (the object store).
    pub fn sink(&self) -> Result<&'static str, StartError> {
        let kind = match &self.build {
            Build::Code { sink, .. } => *sink,
            Build::Declarative(toml) => self.parse(toml)?.sink,
            Build::Archive => return Ok("archive"),
        };
        Ok(match kind {
            SinkKind::Postgres => "postgres",
            SinkKind::Elasticsearch => "elasticsearch",
        })
    }

    /// Whether it is a declarative configuration rather than code.
    pub fn is_declarative(&self) -> bool {
        matches!(self.build, Build::Declarative(_))
    }

    fn parse(&self, toml: &str) -> Result<DeclarativeConfig, StartError> {
        let config = DeclarativeConfig::parse(toml).map_err(|source| StartError::Declarative {
            name: self.name.to_owned(),
            source,
        })?;
        if config.name != self.name {
            return Err(StartError::Misnamed {
                registered: self.name.to_owned(),
                actual: config.name,
            });
        }
        Ok(config)
    }

    /// Builds the projection without running it: its mappings or configuration parse and its
    /// name is the registered one.
    pub fn check(&self) -> Result<(), StartError> {
        match &self.build {
            Build::Code { check, .. } => check(),
            Build::Declarative(toml) => self.parse(toml).map(drop),
            Build::Archive => Ok(()),
        }
    }

    /// Builds the projection and runs it until `shutdown`.
    pub async fn run(&self, config: Config, shutdown: Shutdown) -> Result<(), StartError> {
        match &self.build {
            Build::Code { start, .. } => start(config, shutdown).await,
            Build::Declarative(toml) => run_declarative(config, self.parse(toml)?, shutdown).await,
            Build::Archive => Ok(crate::archive::run_archive(config, shutdown).await?),
        }
    }
}

/// A built projection, checked to carry the name it is registered under.
fn checked<P>(
    name: &'static str,
    built: Result<P, ProjectionError>,
    name_of: impl Fn(&P) -> String,
) -> Result<P, StartError> {
    let projection = built.map_err(|source| StartError::Build {
        name: name.to_owned(),
        source,
    })?;
    let actual = name_of(&projection);
    if actual != name {
        return Err(StartError::Misnamed {
            registered: name.to_owned(),
            actual,
        });
    }
    Ok(projection)
}

/// Runs a declarative configuration on the sink it names.
pub async fn run_declarative(
    config: Config,
    file: DeclarativeConfig,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    match file.sink {
        SinkKind::Postgres => {
            crate::run(config, DeclarativeProjection::new(file), shutdown).await?
        }
        SinkKind::Elasticsearch => {
            crate::run_search(config, DeclarativeSearchProjection::new(file), shutdown).await?
        }
    }
    Ok(())
}

/// Finds a registered projection by name.
pub fn find<'a>(registry: &'a [Registered], name: &str) -> Result<&'a Registered, StartError> {
    registry
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| StartError::Unknown {
            name: name.to_owned(),
            known: registry
                .iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The `--list` output: one line per projection, `name<TAB>port<TAB>sink<TAB>kind`, in
/// registry order; the port is the default one (`FIRST_PORT` + position), the sink
/// `postgres`, `elasticsearch` or `archive`, the kind `code` or `declarative`.
pub fn list(registry: &[Registered]) -> Result<String, StartError> {
    let mut out = String::new();
    for (i, registered) in registry.iter().enumerate() {
        let sink = registered.sink()?;
        let kind = if registered.is_declarative() {
            "declarative"
        } else {
            "code"
        };
        let port = usize::from(FIRST_PORT) + i;
        out.push_str(&format!("{}\t{port}\t{sink}\t{kind}\n", registered.name));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projections::order_search::{self, OrderSearchProjection};
    use crate::search::IndexSpec;

    #[test]
    fn a_mapping_that_is_not_json_fails_the_start_naming_it() {
        let broken = Registered::search(order_search::NAME, || {
            IndexSpec::new(order_search::NAME, r#"{"mappings": "#)?;
            OrderSearchProjection::new()
        });
        let error = crate::error::chain(&broken.check().unwrap_err());
        assert!(
            error.contains("order_search") && error.contains("not JSON"),
            "{error}"
        );
    }

    #[test]
    fn a_projection_registered_under_another_name_is_refused() {
        let misnamed = Registered::search("orders", OrderSearchProjection::new);
        assert!(matches!(
            misnamed.check(),
            Err(StartError::Misnamed { actual, .. }) if actual == "order_search"
        ));
        let misnamed = Registered::declarative(
            "directory",
            include_str!("../../config/customer_directory.toml"),
        );
        assert!(matches!(misnamed.check(), Err(StartError::Misnamed { .. })));
    }
}
