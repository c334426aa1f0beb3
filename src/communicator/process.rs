//! Running a child process the way every communicator needs it: stdin
//! fed, stdout and stderr streamed line by line (invalid UTF-8 shown
//! lossily, never ending the stream), an optional timeout, and the exit
//! code (128+signal when killed, as shells report it).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

use super::{CommError, OutputFn};
use crate::ui::Stream;

/// How long output may still arrive after the process exited: a daemon it
/// started may hold the pipes open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

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
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                // A line longer than MAX_LINE comes in pieces.
                let mut piece = (&mut reader).take(super::MAX_LINE as u64);
                match piece.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        if tx.send((stream, line)).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let run = async {
        // Stream until the process exits…
        let status = loop {
            tokio::select! {
                Some((stream, line)) = rx.recv() => output(stream, line),
                status = child.wait() => break status,
            }
        };
        // …then take what is still buffered, for a bounded time.
        let deadline = tokio::time::sleep(DRAIN_AFTER_EXIT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some((stream, line)) => output(stream, line),
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        status
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
