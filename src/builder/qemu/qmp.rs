//! A minimal QMP (QEMU Machine Protocol) client over the VM's control
//! socket: the capabilities handshake, then one command at a time with its
//! reply (asynchronous events in between are skipped).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::builder::BuildError;

pub struct Qmp {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

fn qmp_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    BuildError::io(what)
}

impl Qmp {
    /// Connects once QEMU has created the socket, retrying with short,
    /// growing delays until `limit`.
    pub async fn connect(socket: &Path, limit: Duration) -> Result<Qmp, BuildError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(20);
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(s) => break s,
                Err(e) if start.elapsed() >= limit => {
                    return Err(qmp_error(format!(
                        "QEMU's control socket `{}` did not open within {limit:?}",
                        socket.display()
                    ))(e))
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
            }
        };
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_error("QMP greeting")(std::io::Error::other(format!(
                "unexpected greeting {greeting}"
            ))));
        }
        qmp.execute("qmp_capabilities").await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value, BuildError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(qmp_error("reading from QMP"))?;
        if n == 0 {
            return Err(qmp_error("QMP")(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QEMU closed its control socket",
            )));
        }
        serde_json::from_str(&line)
            .map_err(|e| qmp_error("QMP")(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(&mut self, command: &str) -> Result<Value, BuildError> {
        self.execute_with(command, None).await
    }

    /// Presses the qcodes of `chord` together and releases them (`send-key`).
    pub async fn send_keys(&mut self, chord: &[&str]) -> Result<(), BuildError> {
        let keys: Vec<Value> = chord
            .iter()
            .map(|k| json!({ "type": "qcode", "data": k }))
            .collect();
        self.execute_with("send-key", Some(json!({ "keys": keys })))
            .await
            .map(drop)
    }

    /// Runs a command with `arguments` and returns its `return` value.
    pub async fn execute_with(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, BuildError> {
        let mut msg = match arguments {
            Some(a) => json!({ "execute": command, "arguments": a }),
            None => json!({ "execute": command }),
        }
        .to_string();
        msg.push('\n');
        self.writer
            .write_all(msg.as_bytes())
            .await
            .map_err(qmp_error(format!("sending `{command}` over QMP")))?;
        loop {
            let reply = self.read_message().await?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(qmp_error(format!("QMP `{command}`"))(
                    std::io::Error::other(
                        err.get("desc")
                            .and_then(Value::as_str)
                            .unwrap_or("error")
                            .to_string(),
                    ),
                ));
            }
            // An event (`{"event": …}`): not the reply we wait for.
        }
    }
}
