//! Removing what a job created in AWS, found by its `kiln:*` tags rather
//! than by ids kept in memory: the undo stack and `kiln cleanup` (after a
//! SIGKILL) run the same code, and a resource whose create call was cut off
//! before kiln saw its id is still found.

use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceStateName, SpotInstanceState};

use super::aws::{code, describe, wait_for, Clients, Target};

const TERMINATE_LIMIT: Duration = Duration::from_secs(10 * 60);

fn run_filter(run: &str) -> Filter {
    Filter::builder().name("tag:kiln:run").values(run).build()
}

/// Cancels the run's spot requests, terminates every instance of the run,
/// deletes the volumes it left (`delete_on_termination = false`), its key
/// pairs (`communicator = "ssh"`) and its
/// security groups.
pub async fn run(region: &str, endpoint: Option<&str>, run: &str) -> Result<(), String> {
    let aws = Clients::connect(&Target::new(region, endpoint)).await;
    // Listing the instances needs no answer about spot requests; but an
    // open request could still start one after the listing, so when any
    // request was cancelled the instances are listed again.
    let (cancelled, listed) = tokio::join!(spot_requests(&aws, run), live_instances(&aws, run));
    let instances = match cancelled? {
        0 => listed?,
        _ => live_instances(&aws, run).await?,
    };
    // The key pairs and the group list do not wait for the instances:
    // a key pair only matters at launch, and the groups are only deleted
    // once the instances are gone.
    let (terminated, keys, groups) = tokio::join!(
        terminate(&aws, run, &instances),
        key_pairs(&aws, run),
        aws.ec2
            .describe_security_groups()
            .filters(run_filter(run))
            .send(),
    );
    terminated?;
    keys?;
    let groups = groups
        .map_err(|e| format!("cannot list security groups of run {run}: {}", describe(&e)))?;
    // Volumes the instances leave (`delete_on_termination = false`) are
    // available only once they are terminated; the groups are free then
    // too, and neither waits for the other.
    let (vols, deleted) = tokio::join!(
        volumes(&aws, run),
        futures_util::future::join_all(
            groups
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id())
                .map(|id| delete_group(&aws, id)),
        )
    );
    vols?;
    deleted.into_iter().collect::<Result<Vec<()>, String>>()?;
    Ok(())
}

/// Deletes one security group of the run. A terminated instance's network
/// interface lets go of its group a little after the instance is gone.
async fn delete_group(aws: &Clients, id: &str) -> Result<(), String> {
    wait_for(
        &format!("security group {id} to be deleted"),
        TERMINATE_LIMIT,
        || async {
            match aws.ec2.delete_security_group().group_id(id).send().await {
                Ok(_) => Ok(Some(())),
                Err(e) if code(&e) == Some("InvalidGroup.NotFound") => Ok(Some(())),
                Err(e) if code(&e) == Some("DependencyViolation") => Ok(None),
                Err(e) => Err(format!(
                    "cannot delete security group {id}: {}",
                    describe(&e)
                )),
            }
        },
    )
    .await
}

/// Terminates `instances` and waits until none of the run is left
/// (security groups can be deleted only once nothing uses them).
async fn terminate(aws: &Clients, run: &str, instances: &[String]) -> Result<(), String> {
    if instances.is_empty() {
        return Ok(());
    }
    aws.ec2
        .terminate_instances()
        .set_instance_ids(Some(instances.to_vec()))
        .send()
        .await
        .map_err(|e| format!("cannot terminate {instances:?}: {}", describe(&e)))?;
    wait_for(
        &format!("instances {instances:?} to terminate"),
        TERMINATE_LIMIT,
        || async { Ok(live_instances(aws, run).await?.is_empty().then_some(())) },
    )
    .await
}

/// Deletes the run's key pairs (`communicator = "ssh"`).
async fn key_pairs(aws: &Clients, run: &str) -> Result<(), String> {
    let out = aws
        .ec2
        .describe_key_pairs()
        .filters(run_filter(run))
        .send()
        .await
        .map_err(|e| format!("cannot list key pairs of run {run}: {}", describe(&e)))?;
    for k in out.key_pairs() {
        let Some(name) = k.key_name() else { continue };
        match aws.ec2.delete_key_pair().key_name(name).send().await {
            Ok(_) => {}
            Err(e) if code(&e) == Some("InvalidKeyPair.NotFound") => {}
            Err(e) => return Err(format!("cannot delete key pair {name}: {}", describe(&e))),
        }
    }
    Ok(())
}

/// Cancels the run's open or active spot requests (one-time requests
/// close with their instance; this catches one whose instance never came);
/// returns how many it cancelled.
async fn spot_requests(aws: &Clients, run: &str) -> Result<usize, String> {
    let out = aws
        .ec2
        .describe_spot_instance_requests()
        .filters(run_filter(run))
        .send()
        .await
        .map_err(|e| format!("cannot list spot requests of run {run}: {}", describe(&e)))?;
    let ids: Vec<String> = out
        .spot_instance_requests()
        .iter()
        .filter(|r| {
            matches!(
                r.state(),
                Some(SpotInstanceState::Open | SpotInstanceState::Active) | None
            )
        })
        .filter_map(|r| r.spot_instance_request_id().map(str::to_string))
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    aws.ec2
        .cancel_spot_instance_requests()
        .set_spot_instance_request_ids(Some(ids.clone()))
        .send()
        .await
        .map_err(|e| format!("cannot cancel spot requests {ids:?}: {}", describe(&e)))?;
    Ok(ids.len())
}

/// Deletes the run's volumes that outlived its instances (every volume
/// RunInstances made carries the run's tags).
async fn volumes(aws: &Clients, run: &str) -> Result<(), String> {
    let out = aws
        .ec2
        .describe_volumes()
        .filters(run_filter(run))
        .filters(Filter::builder().name("status").values("available").build())
        .send()
        .await
        .map_err(|e| format!("cannot list volumes of run {run}: {}", describe(&e)))?;
    for v in out.volumes() {
        let Some(id) = v.volume_id() else { continue };
        match aws.ec2.delete_volume().volume_id(id).send().await {
            Ok(_) => {}
            Err(e) if code(&e) == Some("InvalidVolume.NotFound") => {}
            Err(e) => return Err(format!("cannot delete volume {id}: {}", describe(&e))),
        }
    }
    Ok(())
}

/// Instances of the run that are not terminated.
async fn live_instances(aws: &Clients, run: &str) -> Result<Vec<String>, String> {
    let out = aws
        .ec2
        .describe_instances()
        .filters(run_filter(run))
        .send()
        .await
        .map_err(|e| format!("cannot list instances of run {run}: {}", describe(&e)))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()),
                Some(InstanceStateName::Terminated)
            )
        })
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
}

/// Deregisters a half-made image of the run (by its unique name) and
/// deletes its snapshots.
pub async fn image(
    region: &str,
    endpoint: Option<&str>,
    run: &str,
    name: &str,
) -> Result<(), String> {
    let aws = Clients::connect(&Target::new(region, endpoint)).await;
    // By name *and* run: an image of another build with the same name
    // (a fixed `ami_name`) is never touched.
    let images = wait_for(
        &format!("image `{name}` to leave `pending`"),
        TERMINATE_LIMIT,
        || async {
            let out = aws
                .ec2
                .describe_images()
                .owners("self")
                .filters(Filter::builder().name("name").values(name).build())
                .filters(run_filter(run))
                .send()
                .await
                .map_err(|e| format!("cannot look up image `{name}`: {}", describe(&e)))?;
            // A pending image lists its snapshots only once it is done.
            let pending = out
                .images()
                .iter()
                .any(|i| i.state() == Some(&aws_sdk_ec2::types::ImageState::Pending));
            Ok((!pending).then(|| {
                out.images()
                    .iter()
                    .filter_map(|i| i.image_id().map(str::to_string))
                    .collect::<Vec<_>>()
            }))
        },
    )
    .await?;
    for id in &images {
        super::image::delete(&aws, id).await?;
    }
    // Snapshots CreateImage made before it was cut off, without an image.
    let snaps = aws
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(run_filter(run))
        .send()
        .await
        .map_err(|e| format!("cannot list snapshots of run {run}: {}", describe(&e)))?;
    for s in snaps.snapshots() {
        if let Some(id) = s.snapshot_id() {
            super::image::delete_snapshot(&aws, id).await?;
        }
    }
    Ok(())
}
