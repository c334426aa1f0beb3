//! `kiln cleanup`: reap resources that builds killed without a chance to
//! clean up (SIGKILL, power loss) left in the journal.

use std::path::Path;

use clap::Args;

use super::Exit;
use crate::template::schema::parse_duration;

#[derive(Args, Debug)]
pub struct CleanupArgs {
    /// Only entries older than this (e.g. `1h`).
    #[arg(long, value_name = "DURATION", value_parser = |s: &str| parse_duration(s).ok_or_else(|| format!("`{s}` is not a duration such as 30m or 2h")))]
    pub older_than: Option<std::time::Duration>,
    /// List what would be reaped without touching it.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove the caches (unpacked base images, image blobs,
    /// downloaded QEMU base disks); builds
    /// fetch and unpack again what they need.
    #[arg(long)]
    pub caches: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn exec(args: CleanupArgs, state_dir: &Path) -> Exit {
    let report = match crate::engine::cleanup(
        state_dir,
        &crate::builder::Builders::standard().reapers(),
        args.older_than,
        args.dry_run,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: cannot read the journal under `{}`: {e}",
                state_dir.display()
            );
            return Exit::Failure;
        }
    };
    use crate::builder::cache;
    let (caches, cache_failed, removed) = if args.caches && !args.dry_run {
        if report.skipped_live.is_empty() {
            let (before, failed) = cache::remove_caches(state_dir);
            (cache::usage(state_dir), failed, Some(before))
        } else {
            (
                cache::usage(state_dir),
                vec!["caches kept: a build is still running".to_string()],
                None,
            )
        }
    } else {
        (cache::usage(state_dir), vec![], None)
    };
    if args.json {
        let mut v = serde_json::to_value(&report).expect("serializable");
        v["caches"] = serde_json::to_value(&caches).expect("serializable");
        v["caches_removed"] = serde_json::to_value(&removed).expect("serializable");
        v["caches_failed"] = serde_json::to_value(&cache_failed).expect("serializable");
        println!("{v}");
    } else {
        for r in &report.would_reap {
            println!("would reap {r}");
        }
        for r in &report.reaped {
            println!("reaped {r}");
        }
        for r in &report.skipped_live {
            println!("skipped (its build is still running) {r}");
        }
        for r in &report.failed {
            eprintln!("error: could not reap {r}");
        }
        if report.reaped.is_empty() && report.would_reap.is_empty() && report.failed.is_empty() {
            println!("nothing to clean up");
        }
        if let Some(before) = &removed {
            println!("removed caches: {}", cache::describe(before));
        }
        for f in &cache_failed {
            eprintln!("error: {f}");
        }
        let cached = if args.caches && args.dry_run {
            "would remove caches"
        } else {
            "caches"
        };
        println!(
            "{cached}: {}{}",
            cache::describe(&caches),
            if args.caches {
                ""
            } else {
                " (`kiln cleanup --caches` removes them)"
            }
        );
    }
    let cache_ok = cache_failed.is_empty();
    if report.failed.is_empty() && cache_ok {
        Exit::Success
    } else {
        Exit::Failure
    }
}
