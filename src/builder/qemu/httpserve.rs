//! The build's HTTP server (`http_directory`, `http_content`): serves the
//! listed files to the guest on 127.0.0.1 (the guest reaches it at the
//! slirp host address 10.0.2.2) for the build's duration, logs every
//! request, and refuses anything outside the listed content (`..`,
//! symlinks leading out of the directory, other methods).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Bytes;
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::builder::BuildError;

/// Where the guest reaches the host's loopback under QEMU's user network.
pub const GUEST_HOST_IP: &str = "10.0.2.2";
pub const DEFAULT_PORT_MIN: u16 = 8000;
pub const DEFAULT_PORT_MAX: u16 = 9000;

/// What is served: a directory and/or in-memory files (URL path → content).
pub struct Content {
    pub directory: Option<PathBuf>,
    pub files: BTreeMap<String, String>,
}

/// A running server; stops when dropped.
pub struct HttpServer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, std::io::Error>;
type Log = Arc<dyn Fn(String) + Send + Sync>;

impl HttpServer {
    /// Binds the first free port of `min..=max` on 127.0.0.1 and serves
    /// `content`, reporting each request (method, path, status) to `log`.
    pub async fn start(
        content: Content,
        min: u16,
        max: u16,
        log: Log,
    ) -> Result<HttpServer, BuildError> {
        if min > max || min == 0 {
            return Err(BuildError::Config(format!(
                "`http_port_min` ({min}) must be above 0 and at most `http_port_max` ({max})"
            )));
        }
        let root = match &content.directory {
            Some(d) => Some(
                fs_err::canonicalize(d)
                    .map_err(|e| BuildError::Config(format!("`http_directory`: {e}")))?,
            ),
            None => None,
        };
        if let Some(r) = &root {
            if !r.is_dir() {
                return Err(BuildError::Config(format!(
                    "`http_directory` `{}` is not a directory",
                    r.display()
                )));
            }
        }
        let mut listener = None;
        for port in min..=max {
            if let Ok(l) =
                tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
            {
                listener = Some(l);
                break;
            }
        }
        let listener = listener.ok_or_else(|| {
            BuildError::Config(format!(
                "no free port for the HTTP server between `http_port_min` {min} and `http_port_max` {max}"
            ))
        })?;
        let port = listener
            .local_addr()
            .map_err(BuildError::io("HTTP server address"))?
            .port();
        let shared = Arc::new((root, content.files));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (shared, log) = (shared.clone(), log.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let (shared, log) = (shared.clone(), log.clone());
                        async move {
                            let (root, files) = &*shared;
                            let resp = respond(root.as_deref(), files, &req).await;
                            log(format!(
                                "http: {} {} {}",
                                req.method(),
                                req.uri().path(),
                                resp.status().as_u16()
                            ));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(HttpServer { port, task })
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(
            code.canonical_reason().unwrap_or("").to_string(),
        ))
        .map_err(|e| match e {})
        .boxed(),
    );
    *r.status_mut() = code;
    r
}

/// The URL path as a relative path of plain components, or `None` when it
/// tries to leave the root (`..`, a drive, an encoded NUL).
pub fn relative_path(url_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(url_path)
        .decode_utf8()
        .ok()?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(decoded.trim_start_matches('/')).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

async fn respond<B>(
    root: Option<&Path>,
    files: &BTreeMap<String, String>,
    req: &Request<B>,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Some(rel) = relative_path(req.uri().path()) else {
        return status(StatusCode::FORBIDDEN);
    };
    let key = rel.to_string_lossy().into_owned();
    if let Some(body) = files.get(&key).or_else(|| files.get(&format!("/{key}"))) {
        return Response::new(
            Full::new(Bytes::from(body.clone()))
                .map_err(|e| match e {})
                .boxed(),
        );
    }
    let Some(root) = root else {
        return status(StatusCode::NOT_FOUND);
    };
    // Symlinks are followed only where they stay inside the root.
    let Ok(real) = fs_err::tokio::canonicalize(root.join(&rel)).await else {
        return status(StatusCode::NOT_FOUND);
    };
    if !real.starts_with(root) {
        return status(StatusCode::FORBIDDEN);
    }
    let Ok(file) = tokio::fs::File::open(&real).await else {
        return status(StatusCode::NOT_FOUND);
    };
    let Ok(meta) = file.metadata().await else {
        return status(StatusCode::NOT_FOUND);
    };
    if !meta.is_file() {
        return status(StatusCode::NOT_FOUND);
    }
    let body: Body = if req.method() == Method::HEAD {
        Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
    } else {
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 16).map_ok(Frame::data);
        BodyExt::boxed(StreamBody::new(stream))
    };
    let mut r = Response::new(body);
    if let Ok(v) = meta.len().to_string().parse() {
        r.headers_mut().insert(hyper::header::CONTENT_LENGTH, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_paths_cannot_leave_the_root() {
        assert_eq!(relative_path("/a/b.txt"), Some(PathBuf::from("a/b.txt")));
        assert_eq!(relative_path("/./a"), Some(PathBuf::from("a")));
        assert_eq!(relative_path("/../etc/passwd"), None);
        assert_eq!(relative_path("/a/%2e%2e/%2e%2e/etc/passwd"), None);
        assert_eq!(relative_path("/a%00b"), None);
        assert_eq!(relative_path("/a%5c..%5cb"), None);
    }

    async fn get(port: u16, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A raw request: reqwest would normalise `..` away before sending.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (code, body)
    }

    #[tokio::test]
    async fn http_serves_only_the_listed_content_and_logs_requests() {
        let tmp = std::env::temp_dir().join(format!("kiln-http-{}", uuid::Uuid::new_v4()));
        let root = tmp.join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/answer.txt"), "forty-two").unwrap();
        std::fs::write(tmp.join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(tmp.join("secret.txt"), root.join("leak")).unwrap();
        std::os::unix::fs::symlink("sub/answer.txt", root.join("inside")).unwrap();
        let logged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let l = logged.clone();
        let server = HttpServer::start(
            Content {
                directory: Some(root.clone()),
                files: [("ks.cfg".to_string(), "inline".to_string())].into(),
            },
            DEFAULT_PORT_MIN,
            DEFAULT_PORT_MAX,
            Arc::new(move |m| l.lock().unwrap().push(m)),
        )
        .await
        .unwrap();
        let p = server.port;
        assert!((DEFAULT_PORT_MIN..=DEFAULT_PORT_MAX).contains(&p));
        assert_eq!(get(p, "/sub/answer.txt").await, (200, "forty-two".into()));
        assert_eq!(get(p, "/ks.cfg").await, (200, "inline".into()));
        assert_eq!(get(p, "/inside").await, (200, "forty-two".into()));
        // Hostile requests: traversal, encoded traversal, a symlink out.
        assert_eq!(get(p, "/../secret.txt").await.0, 403);
        assert_eq!(get(p, "/sub/%2e%2e/%2e%2e/secret.txt").await.0, 403);
        let (code, body) = get(p, "/leak").await;
        assert_eq!(code, 403);
        assert!(!body.contains("outside"));
        assert_eq!(get(p, "/missing").await.0, 404);
        assert_eq!(get(p, "/sub").await.0, 404);
        let log = logged.lock().unwrap().clone();
        assert!(
            log.contains(&"http: GET /sub/answer.txt 200".to_string()),
            "{log:?}"
        );
        assert!(log.contains(&"http: GET /leak 403".to_string()), "{log:?}");
        drop(server);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[tokio::test]
    async fn http_port_range_is_respected() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = HttpServer::start(
            Content {
                directory: None,
                files: BTreeMap::new(),
            },
            port,
            port,
            Arc::new(|_| {}),
        )
        .await
        .err()
        .unwrap();
        assert!(e.to_string().contains("no free port"), "{e}");
    }
}
