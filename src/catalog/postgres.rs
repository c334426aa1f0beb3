//! The PostgreSQL catalog, for teams whose builds run on many CI runners
//! at once (`--catalog postgres://…` or `KILN_CATALOG`). The log is the
//! table `kiln_catalog_log` (one row per entry, its exact bytes, primary
//! key `seq`, unique `prev`); a trigger refuses UPDATE and DELETE. A writer
//! takes a transaction-scoped advisory lock before reading the log, so
//! concurrent writers queue and the chain stays linear; the unique
//! constraints would refuse a fork even without it. Schema changes are
//! numbered migrations applied once, under their own advisory lock.
//!
//! Connections are unencrypted (`NoTls`): for a catalog on another host,
//! tunnel it or run kiln next to the database; TLS is not supported yet.

use async_trait::async_trait;
use tokio_postgres::{Client, NoTls};

use super::{Backend, CatalogError, Entry, Txn};

/// Advisory lock keys ("kiln" and "kiln" + 1).
const WRITER_LOCK: i64 = 0x6b69_6c6e;
const MIGRATION_LOCK: i64 = 0x6b69_6c6f;

/// The schema, in order; each runs once, recorded in `kiln_schema_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r#"
CREATE TABLE kiln_catalog_log (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    prev TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL UNIQUE,
    entry TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE kiln_catalog_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE FUNCTION kiln_catalog_log_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the kiln catalog log is append-only';
END $$;
CREATE TRIGGER kiln_catalog_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON kiln_catalog_log
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_catalog_log_append_only();
"#,
)];

fn db(e: tokio_postgres::Error) -> CatalogError {
    // The server's message says more than the client's summary.
    let detail = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    CatalogError::Db(detail)
}

/// The URL without its password (in the user info, which may itself
/// hold `@`, or as a `password=` parameter), for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    // The host comes after the last `@` of the authority.
    let authority_end = authority_and_path
        .find('/')
        .unwrap_or(authority_and_path.len());
    let (authority, path) = authority_and_path.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=<redacted>"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// One connection per process: commands are short, and a writer holds
/// it for the length of its transaction.
pub struct PgCatalog {
    client: std::sync::Arc<tokio::sync::Mutex<Client>>,
}

async fn connect(url: &str) -> Result<Client, CatalogError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
        CatalogError::Db(format!(
            "cannot connect to `{}`: {}",
            redact_url(url),
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        ))
    })?;
    tokio::spawn(async move {
        // Ends when the client is dropped (an open transaction rolls back).
        let _ = connection.await;
    });
    Ok(client)
}

impl PgCatalog {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<PgCatalog, CatalogError> {
        let mut client = connect(url).await?;
        migrate(&mut client).await?;
        Ok(PgCatalog {
            client: std::sync::Arc::new(tokio::sync::Mutex::new(client)),
        })
    }
}

/// The newest migration applied, without taking any lock.
async fn schema_version(client: &Client) -> Result<i32, CatalogError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('kiln_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM kiln_schema_migrations",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(row.get(0))
}

async fn migrate(client: &mut Client) -> Result<(), CatalogError> {
    let newest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if schema_version(client).await? >= newest {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS kiln_schema_migrations (
            version INT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(db)?;
    let done: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM kiln_schema_migrations",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > done) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| CatalogError::Db(format!("migration {version}: {}", db(e))))?;
        tx.execute(
            "INSERT INTO kiln_schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

async fn read_log(client: &Client) -> Result<Vec<Vec<u8>>, CatalogError> {
    Ok(client
        .query("SELECT entry FROM kiln_catalog_log ORDER BY seq", &[])
        .await
        .map_err(db)?
        .into_iter()
        .map(|r| r.get::<_, String>(0).into_bytes())
        .collect())
}

#[async_trait]
impl Backend for PgCatalog {
    async fn read(&self) -> Result<Vec<Vec<u8>>, CatalogError> {
        read_log(&*self.client.lock().await).await
    }

    async fn begin(&self) -> Result<Box<dyn Txn>, CatalogError> {
        let client = self.client.clone().lock_owned().await;
        client.batch_execute("BEGIN").await.map_err(db)?;
        let mut txn = PgTxn {
            client: Some(client),
            stored: vec![],
        };
        let c = txn.client();
        c.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])
            .await
            .map_err(db)?;
        txn.stored = read_log(c).await?;
        Ok(Box::new(txn))
    }

    async fn fingerprint_key(&self) -> Result<Vec<u8>, CatalogError> {
        let client = self.client.lock().await;
        let select = "SELECT value FROM kiln_catalog_settings WHERE name = 'fingerprint_key'";
        let value: String = match client.query_opt(select, &[]).await.map_err(db)? {
            Some(row) => row.get(0),
            None => {
                let mut fresh = [0u8; 32];
                getrandom::getrandom(&mut fresh).map_err(|e| CatalogError::Db(e.to_string()))?;
                // Racing creators: the first insert wins, everyone reads it.
                client
                    .execute(
                        "INSERT INTO kiln_catalog_settings (name, value) VALUES ('fingerprint_key', $1)
                         ON CONFLICT (name) DO NOTHING",
                        &[&hex::encode(fresh)],
                    )
                    .await
                    .map_err(db)?;
                client.query_one(select, &[]).await.map_err(db)?.get(0)
            }
        };
        hex::decode(value.trim())
            .map_err(|_| CatalogError::Corrupt("the fingerprint key is not hex".into()))
    }
}

/// An open transaction holding the writer lock on the catalog's
/// connection; dropped without commit, it is rolled back.
struct PgTxn {
    /// `None` once committed.
    client: Option<tokio::sync::OwnedMutexGuard<Client>>,
    stored: Vec<Vec<u8>>,
}

impl PgTxn {
    fn client(&self) -> &Client {
        self.client.as_deref().expect("open until committed")
    }
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // The connection stays locked until the rollback is done.
            tokio::spawn(async move {
                let _ = client.batch_execute("ROLLBACK").await;
            });
        }
    }
}

#[async_trait]
impl Txn for PgTxn {
    fn stored(&self) -> &[Vec<u8>] {
        &self.stored
    }

    async fn commit(mut self: Box<Self>, entries: &[Entry]) -> Result<(), CatalogError> {
        for e in entries {
            let bytes = String::from_utf8(e.to_bytes()).expect("JSON is UTF-8");
            self.client()
                .execute(
                    "INSERT INTO kiln_catalog_log (seq, prev, hash, entry) VALUES ($1, $2, $3, $4)",
                    &[&(e.seq as i64), &e.prev, &e.hash, &bytes],
                )
                .await
                .map_err(db)?;
        }
        let client = self.client.take().expect("open until committed");
        client.batch_execute("COMMIT").await.map_err(db)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact_url("postgres://kiln:s3cret@127.0.0.1:5432/cat"),
            "postgres://kiln:<redacted>@127.0.0.1:5432/cat"
        );
        assert_eq!(
            super::redact_url("postgres://kiln@h/db"),
            "postgres://kiln@h/db"
        );
        assert_eq!(
            super::redact_url("postgres://kiln:p@ss@h:5432/db"),
            "postgres://kiln:<redacted>@h:5432/db"
        );
        assert_eq!(
            super::redact_url("postgres://h/db?user=kiln&password=s3cret&sslmode=disable"),
            "postgres://h/db?user=kiln&password=<redacted>&sslmode=disable"
        );
    }
}
