//! Applying the schema, in two phases around the sealing of plaintext secrets
//! (docs/operations.md, upgrading to sealed secrets): the migrations up to the one that
//! adds the sealed columns, then the rows an earlier version stored in plaintext are
//! sealed ([`super::plaintext`]), then the rest, which drops the plaintext columns.
//! sqlx migrations are SQL only, and sealing needs the keys, so it runs between them.

use super::{MIGRATOR, keys, plaintext};
use crate::crypto::DataKeys;
use anyhow::Context;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::migrate::{Migration, MigrationSource, Migrator};

/// The migration that adds the sealed columns beside the plaintext ones.
pub const SEALED_COLUMNS: i64 = 8;

/// Applies every migration, sealing plaintext rows on the way. `keys` are needed only
/// when such rows exist (a database upgraded from before sealing).
pub async fn run(pool: &PgPool, keys: Option<&DataKeys>) -> anyhow::Result<()> {
    if past_sealing(pool).await? {
        return MIGRATOR
            .run(pool)
            .await
            .context("cannot apply database migrations");
    }
    up_to(SEALED_COLUMNS)
        .await?
        .run(pool)
        .await
        .context("cannot apply database migrations")?;
    if plaintext::columns_exist(pool).await? && plaintext::remaining(pool).await? > 0 {
        let keys = keys.context(
            "the database holds secrets in plaintext from an earlier version; sealing them \
             needs the data-encryption keys (WALLET_ENCRYPTION_KEYS or WALLET_ENCRYPTION_KEYS_FILE)",
        )?;
        let keyring = keys::keyring(pool, keys.clone()).await?;
        let sealed = plaintext::seal_all(pool, &keyring).await?;
        tracing::info!(
            rows = sealed,
            key_id = keyring.active_id(),
            "sealed the secrets an earlier version stored in plaintext"
        );
    }
    MIGRATOR
        .run(pool)
        .await
        .context("cannot apply database migrations")
}

/// Whether the migration after the sealing was applied: nothing is left to seal.
async fn past_sealing(pool: &PgPool) -> anyhow::Result<bool> {
    let applied: Result<Option<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await;
    match applied {
        Ok(version) => Ok(version > Some(SEALED_COLUMNS)),
        // A new database: no migrations table yet.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => Ok(false),
        Err(err) => Err(anyhow::Error::new(err).context("cannot read the database schema version")),
    }
}

/// A migrator that stops after migration `version` (and ignores those applied after it).
pub async fn up_to(version: i64) -> anyhow::Result<Migrator> {
    let mut migrator = Migrator::new(UpTo(version))
        .await
        .context("cannot read the embedded migrations")?;
    migrator.set_ignore_missing(true);
    Ok(migrator)
}

/// The embedded migrations up to a version.
#[derive(Debug)]
struct UpTo(i64);

impl MigrationSource<'static> for UpTo {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let migrations = MIGRATOR
            .iter()
            .filter(|m| m.version <= self.0)
            .cloned()
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}
