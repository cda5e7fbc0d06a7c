//! Applying the schema, in two phases around the sealing of plaintext secrets
//! (docs/operations.md, upgrading to sealed secrets): the migrations up to the one that
//! adds the sealed columns, then the rows an earlier version stored in plaintext are
//! sealed ([`super::plaintext`]), then the rest, which drops the plaintext columns.
//! sqlx migrations are SQL only, and sealing needs the keys, so it runs between them.

use super::{keys, plaintext};
use crate::crypto::DataKeys;
use anyhow::Context;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use std::borrow::Cow;
use std::sync::LazyLock;

/// The files of `migrations/`, compiled in: version, name, SQL. Listed by hand rather
/// than by sqlx's `migrate!`, whose proc-macro crate builds a second copy of the Postgres
/// driver for the compiler (a test checks this list against the directory).
const EMBEDDED: [(i64, &str, &str); 9] = [
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "gateway_notify",
        include_str!("../../migrations/0002_gateway_notify.sql"),
    ),
    (
        3,
        "wallet_lifecycle",
        include_str!("../../migrations/0003_wallet_lifecycle.sql"),
    ),
    (
        4,
        "retention",
        include_str!("../../migrations/0004_retention.sql"),
    ),
    (
        5,
        "trace_context",
        include_str!("../../migrations/0005_trace_context.sql"),
    ),
    (
        7,
        "dead_letter_store",
        include_str!("../../migrations/0007_dead_letter_store.sql"),
    ),
    (
        8,
        "sealed_secrets",
        include_str!("../../migrations/0008_sealed_secrets.sql"),
    ),
    (
        9,
        "drop_plaintext_secrets",
        include_str!("../../migrations/0009_drop_plaintext_secrets.sql"),
    ),
    (
        10,
        "unfinished_deliveries",
        include_str!("../../migrations/0010_unfinished_deliveries.sql"),
    ),
];

/// Every embedded migration, as sqlx's `migrate!` would make it (same description,
/// same checksum: databases migrated by either agree).
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    // Resolving embedded migrations does no I/O: the future is ready at once.
    futures::executor::block_on(Migrator::new(UpTo(i64::MAX)))
        .expect("the embedded migrations form a valid set")
});

/// The embedded migrations up to `version`.
fn embedded(version: i64) -> Vec<Migration> {
    EMBEDDED
        .iter()
        .filter(|(v, _, _)| *v <= version)
        .map(|&(v, name, sql)| {
            let description = Cow::Owned(name.replace('_', " "));
            Migration::new(
                v,
                description,
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect()
}

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
        let migrations = embedded(self.0);
        Box::pin(async move { Ok(migrations) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_migrations_directory_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations/")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        let embedded: Vec<String> = EMBEDDED
            .iter()
            .map(|(version, name, _)| format!("{version:04}_{name}.sql"))
            .collect();
        assert_eq!(embedded, files);
        assert_eq!(MIGRATOR.iter().count(), files.len());
    }
}
