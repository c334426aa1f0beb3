//! The SSH communicator's downloads against a real OpenSSH server: what a
//! hostile instance serves (a file larger than the limit, one that never
//! ends) is refused naming the path and the limit, and never lands on the
//! host past it.

use kiln::communicator::ssh::{self, SshAuth, SshCommunicator, SshTarget};
use kiln::communicator::Communicator;
use std::time::Duration;

use crate::sshd::Sshd;

const LIMIT: u64 = 1 << 20;

async fn connected(sshd: &Sshd) -> SshCommunicator {
    let key = ssh::ephemeral_key().unwrap();
    sshd.authorize(&ssh::authorized_key(&key).unwrap());
    let comm = SshCommunicator::new(SshTarget {
        addr: sshd.addr.parse().unwrap(),
        username: "root".into(),
        auth: SshAuth::Key(std::sync::Arc::new(key)),
    })
    .with_download_limit(LIMIT);
    comm.wait_ready(Duration::from_secs(20), &mut || Ok(()))
        .await
        .unwrap();
    comm
}

#[tokio::test]
async fn ssh_downloads_stop_at_the_limit() {
    let Some(sshd) = Sshd::start() else { return };
    let comm = connected(&sshd).await;
    let tmp = tempfile::tempdir().unwrap();
    // "The instance's" files: exactly the limit, one byte more, and a
    // sparse file that claims 64 GiB.
    let guest = tmp.path().join("guest");
    std::fs::create_dir(&guest).unwrap();
    let at_limit = guest.join("at-limit");
    std::fs::write(&at_limit, vec![7u8; LIMIT as usize]).unwrap();
    let over = guest.join("over");
    std::fs::write(&over, vec![7u8; LIMIT as usize + 1]).unwrap();
    let sparse = guest.join("sparse");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();

    let host = tmp.path().join("host");
    comm.download(at_limit.to_str().unwrap(), &host.join("a"))
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(host.join("a")).unwrap().len(), LIMIT);

    for remote in [
        over.to_str().unwrap(),
        sparse.to_str().unwrap(),
        "/dev/zero",
    ] {
        let local = host.join("b");
        let started = std::time::Instant::now();
        let err = comm.download(remote, &local).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{remote}`")) && err.contains(&format!("{LIMIT} bytes")),
            "{remote}: {err}"
        );
        assert!(
            !local.exists(),
            "{remote}: nothing of a refused download stays on the host"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{remote}: refused as soon as it passed the limit ({:?})",
            started.elapsed()
        );
    }
    // The connection is still usable after a refused download.
    comm.download(at_limit.to_str().unwrap(), &host.join("c"))
        .await
        .unwrap();
    comm.disconnect().await;
}
