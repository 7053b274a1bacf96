//! Connecting to PostgreSQL (`DATABASE_URL`), where the projectors keep their bookkeeping,
//! dead letters and archive manifest, and the key store its erasures.

use crate::error::CliError;

/// One connection to PostgreSQL.
pub async fn connect(database_url: &str) -> Result<deadpool_postgres::Object, CliError> {
    let settings = factline_service::postgres::PoolSettings::new("factline-cli", 1);
    let pool = factline_service::postgres::pool(database_url, &settings)
        .map_err(|e| CliError::Config(e.to_string()))?;
    let object = pool.get().await.map_err(|e| CliError::Unreachable {
        service: "postgresql (DATABASE_URL)".into(),
        message: e.to_string(),
    })?;
    Ok(object)
}
