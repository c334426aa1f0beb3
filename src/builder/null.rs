//! The `null` source (as in Packer): no machine at all. Provisioners run on
//! the build host in a throw-away workspace directory, and nothing is
//! snapshotted. For trying templates and provisioners quickly, and for
//! testing kiln itself; it isolates nothing.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{BuildError, Builder, Instance};
use crate::communicator::local::LocalCommunicator;
use crate::communicator::Communicator;
use crate::job::{sanitize, JobContext, Resource};
use crate::template::schema::Field;
use crate::ui::ArtifactInfo;

/// `[source.null.NAME]` takes no settings.
pub const FIELDS: &[Field] = &[];

pub struct NullBuilder;

struct NullInstance {
    comm: LocalCommunicator,
}

#[async_trait]
impl Builder for NullBuilder {
    async fn launch(&self, ctx: &JobContext) -> Result<Box<dyn Instance>, BuildError> {
        let base: PathBuf = ctx
            .state_dir
            .join("work")
            .join(sanitize(&ctx.build_id))
            .join(sanitize(&ctx.name));
        let workspace = base.join("workspace");
        ctx.undo
            .register(Resource::TempDir { path: base.clone() }, "null workspace")
            .await
            .map_err(BuildError::io("cannot journal the workspace"))?;
        fs_err::tokio::create_dir_all(&workspace)
            .await
            .map_err(BuildError::io("cannot create the workspace"))?;
        ctx.message(format!(
            "workspace `{}` (provisioners run on this host)",
            workspace.display()
        ));
        Ok(Box::new(NullInstance {
            comm: LocalCommunicator::new(workspace, base.join("scripts"), ctx.undo.clone()),
        }))
    }
}

#[async_trait]
impl Instance for NullInstance {
    fn communicator(&self) -> &dyn Communicator {
        &self.comm
    }

    async fn snapshot(&mut self, ctx: &JobContext) -> Result<Vec<ArtifactInfo>, BuildError> {
        ctx.message("null source: nothing to snapshot".to_string());
        Ok(vec![])
    }
}
