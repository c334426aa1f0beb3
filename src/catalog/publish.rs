//! Channel pointers where users consume images: after a channel moves in
//! the catalog, each of the version's registry images gets the channel as
//! a tag (`repo:prod` → the version's digest). Artifacts that have no
//! pointer format yet (disk files, AMIs) are named, never skipped silently.

use super::model::Version;

/// What publishing did, per artifact.
#[derive(Debug, Default)]
pub struct Published {
    pub done: Vec<String>,
    pub not_supported: Vec<String>,
}

/// Points `channel` at `version`'s artifacts.
pub async fn channel(version: &Version, channel: &str) -> Result<Published, String> {
    let mut out = Published::default();
    for a in &version.registration.artifacts {
        #[cfg(feature = "oci")]
        if let (Some(r), Some(digest)) = (a.id.strip_prefix("registry:"), a.digest.as_deref()) {
            let image: oci_client::Reference = r.parse().map_err(|e| format!("`{r}`: {e}"))?;
            crate::builder::oci::image::tag(&image, digest, channel)
                .await
                .map_err(|e| format!("cannot move `{channel}` for `{r}`: {e}"))?;
            out.done.push(format!(
                "{}/{}:{channel} → {digest}",
                image.registry(),
                image.repository()
            ));
            continue;
        }
        out.not_supported.push(format!(
            "`{}` ({}): channel pointers for this kind are not supported yet",
            a.id, a.kind
        ));
    }
    Ok(out)
}
