//! PostgreSQL with time limits. Every connection is taken from the pool within the pool's wait
//! and connect timeouts, and every statement is bounded twice: the server cancels it after
//! `statement_timeout` (set on each connection), and the read API stops waiting shortly after
//! that even if the server never answers (a hung or black-holed database). A limit hit is a
//! `503` with `Retry-After` naming the limit; a connection that timed out on the client side is
//! closed instead of going back to the pool.

use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError, TimeoutType};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement, ToStatement};

use crate::error::ApiError;

/// How long the client waits past the server's `statement_timeout` before giving up on an
/// answer (the server's cancellation normally arrives first, as a clean error).
const GRACE: Duration = Duration::from_millis(500);

/// The time limits of PostgreSQL access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a free pooled connection.
    pub wait: Duration,
    /// Longest time to open or check a connection.
    pub connect: Duration,
    /// Longest statement.
    pub statement: Duration,
}

/// A pooled connection whose statements are bounded by [`Limits`].
pub struct Db {
    client: Option<Object>,
    limits: Limits,
    poisoned: bool,
}

/// Takes a connection from `pool` within the limits.
pub async fn connect(pool: &Pool, limits: Limits) -> Result<Db, ApiError> {
    // the pool applies its own wait/create/recycle timeouts; this outer bound only guards a
    // pool built without them
    let outer = limits.wait + limits.connect * 2 + GRACE;
    match tokio::time::timeout(outer, pool.get()).await {
        Ok(Ok(client)) => Ok(Db {
            client: Some(client),
            limits,
            poisoned: false,
        }),
        Ok(Err(PoolError::Timeout(kind))) => Err(pool_timeout(kind, limits)),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(pool_timeout(TimeoutType::Wait, limits)),
    }
}

fn pool_timeout(kind: TimeoutType, limits: Limits) -> ApiError {
    let (what, limit) = match kind {
        TimeoutType::Wait => ("waiting for a free connection", limits.wait),
        TimeoutType::Create => ("connecting", limits.connect),
        TimeoutType::Recycle => ("checking a pooled connection", limits.connect),
    };
    ApiError::TimedOut {
        store: "postgresql",
        what,
        limit_ms: limit.as_millis() as u64,
    }
}

impl Db {
    fn statement_timeout(&self) -> ApiError {
        ApiError::TimedOut {
            store: "postgresql",
            what: "statement timeout",
            limit_ms: self.limits.statement.as_millis() as u64,
        }
    }

    fn client(&self) -> Result<&Object, ApiError> {
        self.client
            .as_ref()
            .ok_or_else(|| ApiError::Internal("connection already released".into()))
    }

    fn finish<T>(
        &mut self,
        outcome: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, ApiError> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            // query_canceled: the server's statement_timeout fired
            Ok(Err(error))
                if error
                    .as_db_error()
                    .is_some_and(|db| db.code().code() == "57014") =>
            {
                Err(self.statement_timeout())
            }
            Ok(Err(error)) => Err(error.into()),
            Err(_) => {
                self.poisoned = true;
                Err(self.statement_timeout())
            }
        }
    }

    fn bound(&self) -> Duration {
        self.limits.statement + GRACE
    }

    /// A prepared statement from the connection's cache.
    pub async fn prepare_cached(&mut self, sql: &str) -> Result<Statement, ApiError> {
        let outcome = tokio::time::timeout(self.bound(), self.client()?.prepare_cached(sql)).await;
        self.finish(outcome)
    }

    /// Every row of a statement.
    pub async fn query<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ApiError>
    where
        T: ?Sized + ToStatement + Sync,
    {
        let outcome =
            tokio::time::timeout(self.bound(), self.client()?.query(statement, params)).await;
        self.finish(outcome)
    }

    /// At most one row of a statement.
    pub async fn query_opt<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, ApiError>
    where
        T: ?Sized + ToStatement + Sync,
    {
        let outcome =
            tokio::time::timeout(self.bound(), self.client()?.query_opt(statement, params)).await;
        self.finish(outcome)
    }

    /// Exactly one row of a statement.
    pub async fn query_one<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ApiError>
    where
        T: ?Sized + ToStatement + Sync,
    {
        let outcome =
            tokio::time::timeout(self.bound(), self.client()?.query_one(statement, params)).await;
        self.finish(outcome)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if self.poisoned {
            if let Some(client) = self.client.take() {
                // an answer may still be on its way: never hand this connection out again
                drop(Object::take(client));
            }
        }
    }
}
