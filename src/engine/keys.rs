//! The signing keys of a run: each job's `[build.sign] key` loaded once
//! per key (a file, or a Vault transit key) before any job starts.

use std::path::Path;
use std::sync::Arc;

use super::error::JobError;
use crate::sign::SigningKey;
use crate::template::plan::{BuildPlan, JobPlan};

/// The signing key of a job, loaded once per key for the whole run.
pub(super) async fn signing_key(
    job: &JobPlan,
    plan: &BuildPlan,
    template_dir: &Path,
    keys: &mut std::collections::HashMap<String, Arc<SigningKey>>,
) -> Result<Option<Arc<SigningKey>>, JobError> {
    let Some(sign) = &job.sign else {
        return Ok(None);
    };
    let spec = sign
        .get("key")
        .and_then(|v| v.as_interpolated())
        .unwrap_or_default();
    if let Some(k) = keys.get(&spec) {
        return Ok(Some(k.clone()));
    }
    let key = match spec.strip_prefix("vault-transit:") {
        Some(name) => SigningKey::from_vault_transit(name, &plan.vault).await,
        None => crate::sign::load_signing_key(&spec, template_dir),
    }
    .map_err(|e| JobError::Sign(e.to_string()))?;
    let key = Arc::new(key);
    keys.insert(spec, key.clone());
    Ok(Some(key))
}
