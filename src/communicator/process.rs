//! Running a child process the way every communicator needs it: stdin
//! fed, stdout and stderr streamed line by line, an optional timeout, and
//! the exit code (128+signal when killed, as shells report it).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

use super::{CommError, OutputFn};
use crate::ui::Stream;

/// Streams a spawned child's output to `output` until it exits. The child
/// must have been spawned with piped stdout and stderr (and piped stdin
/// when `stdin` is given). On timeout the child is left to the caller to
/// kill, and [`CommError::Timeout`] is returned.
pub async fn stream_child(
    child: &mut Child,
    stdin: Option<Vec<u8>>,
    output: &mut OutputFn<'_>,
    timeout: Option<Duration>,
) -> Result<i32, CommError> {
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = pipe.write_all(&data).await;
            // Dropping the pipe closes it: the child sees end of input.
        });
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let readers: [(Stream, Box<dyn tokio::io::AsyncRead + Send + Unpin>); 2] = [
        (Stream::Stdout, Box::new(stdout)),
        (Stream::Stderr, Box::new(stderr)),
    ];
    for (stream, reader) in readers {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((stream, line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let run = async {
        while let Some((stream, line)) = rx.recv().await {
            output(stream, line);
        }
        child.wait().await
    };
    let status = match timeout {
        Some(t) => tokio::time::timeout(t, run)
            .await
            .map_err(|_| CommError::Timeout(t))?,
        None => run.await,
    }
    .map_err(CommError::io("waiting for the process"))?;
    Ok(status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    }))
}
