//! Loading an image into a Docker daemon (apko's `publish --local`) through the Engine API on
//! its unix socket: `POST /images/load` with a docker-archive tarball as the body. Plain
//! HTTP/1.1 over the socket, so no HTTP client with unix-socket support is needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The daemon's default socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// A load of a large image may take a while; a daemon that says nothing for this long is gone.
const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// The daemon's answer to a load is a few JSON lines; more than this is not an answer.
const MAX_REPLY_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker daemon at {socket}: {source} (is dockerd running? DOCKER_HOST=unix:///path/to/docker.sock names another socket)"
    )]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("DOCKER_HOST={0}: only unix:// sockets are supported")]
    Host(String),
    #[error("talking to the Docker daemon at {socket}: {source}")]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Docker daemon refused the image: {0}")]
    Refused(String),
}

/// The socket named by a `DOCKER_HOST` value (`unix:///path`), or the default one.
pub fn socket_from_host(docker_host: Option<&str>) -> Result<PathBuf, DockerError> {
    match docker_host.filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(h) => h
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .ok_or_else(|| DockerError::Host(h.to_string())),
    }
}

/// What a request sends.
pub enum Body<'a> {
    None,
    Json(&'a serde_json::Value),
    /// A file sent as `application/x-tar`.
    Tar(&'a Path),
}

/// A Docker Engine reached on its unix socket; one connection per request.
#[derive(Clone, Debug)]
pub struct Engine {
    pub socket: PathBuf,
}

impl Engine {
    pub fn new(socket: PathBuf) -> Engine {
        Engine { socket }
    }

    fn io(&self) -> impl Fn(std::io::Error) -> DockerError + '_ {
        move |source| DockerError::Io {
            socket: self.socket.clone(),
            source,
        }
    }

    /// One HTTP/1.1 request; the status and the (de-chunked) body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Body,
    ) -> Result<(u16, Vec<u8>), DockerError> {
        let io = self.io();
        let mut s = UnixStream::connect(&self.socket).map_err(|source| DockerError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        s.set_read_timeout(Some(IO_TIMEOUT)).map_err(&io)?;
        s.set_write_timeout(Some(IO_TIMEOUT)).map_err(&io)?;
        let head = |ct: &str, len: u64| {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
        };
        match body {
            Body::None => s.write_all(head("text/plain", 0).as_bytes()).map_err(&io)?,
            Body::Json(v) => {
                let b = serde_json::to_vec(v).expect("JSON values serialise");
                s.write_all(head("application/json", b.len() as u64).as_bytes())
                    .map_err(&io)?;
                s.write_all(&b).map_err(&io)?;
            }
            Body::Tar(p) => {
                let mut f = std::fs::File::open(p).map_err(&io)?;
                let len = f.metadata().map_err(&io)?.len();
                s.write_all(head("application/x-tar", len).as_bytes())
                    .map_err(&io)?;
                std::io::copy(&mut f, &mut s).map_err(&io)?;
            }
        }
        s.flush().map_err(&io)?;
        read_reply(s, &io)
    }

    /// `call`, failing on any status but 2xx with the daemon's message.
    pub fn ok(&self, method: &str, path: &str, body: Body) -> Result<Vec<u8>, DockerError> {
        let (code, b) = self.call(method, path, body)?;
        if !(200..300).contains(&code) {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            let msg = v
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&b).trim().to_string());
            return Err(DockerError::Refused(format!(
                "{method} {path}: HTTP {code}: {msg}"
            )));
        }
        Ok(b)
    }
}

impl Engine {
    /// A request whose connection the daemon hands over to the caller as a raw stream
    /// (`Upgrade: tcp`), as an attached `exec` start does: the stream after the answer's head.
    pub fn hijack(&self, path: &str, body: &serde_json::Value) -> Result<UnixStream, DockerError> {
        let io = self.io();
        let mut s = UnixStream::connect(&self.socket).map_err(|source| DockerError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        let b = serde_json::to_vec(body).expect("JSON values serialise");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
            b.len()
        );
        s.write_all(head.as_bytes()).map_err(&io)?;
        s.write_all(&b).map_err(&io)?;
        s.flush().map_err(&io)?;
        // Byte by byte up to the blank line: what follows is the stream, and a buffered
        // reader would swallow its start.
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n\r\n") {
            if reply.len() > 64 << 10 || s.read(&mut byte).map_err(&io)? == 0 {
                return Err(DockerError::Refused(format!(
                    "POST {path}: the daemon closed the connection"
                )));
            }
            reply.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&reply);
        let code: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if code != 101 && code != 200 {
            return Err(DockerError::Refused(format!("POST {path}: HTTP {code}")));
        }
        Ok(s)
    }
}

fn read_reply(
    s: UnixStream,
    io: &dyn Fn(std::io::Error) -> DockerError,
) -> Result<(u16, Vec<u8>), DockerError> {
    let mut r = BufReader::new(s.take(MAX_REPLY_BYTES));
    let mut status = String::new();
    r.read_line(&mut status).map_err(io)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(io)? == 0 || h.trim().is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).map_err(io)?;
            let n =
                usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n];
            r.read_exact(&mut chunk).map_err(io)?;
            body.extend_from_slice(&chunk);
            let mut crlf = String::new();
            r.read_line(&mut crlf).map_err(io)?;
        }
    } else {
        r.read_to_end(&mut body).map_err(io)?;
    }
    Ok((code, body))
}

/// The JSON-lines answer of a load or an import: the `stream` lines, or the `error`.
fn progress(body: &[u8]) -> Result<Vec<String>, DockerError> {
    let text = String::from_utf8_lossy(body);
    let mut lines = vec![];
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return Err(DockerError::Refused(e.to_string()));
        }
        if let Some(s) = v.get("stream").or(v.get("status")).and_then(|e| e.as_str()) {
            lines.push(s.trim().to_string());
        }
    }
    Ok(lines)
}

/// `docker load < tarball`, through the API. Returns the daemon's progress lines (`Loaded
/// image: …`).
pub fn load(socket: &Path, tarball: &Path) -> Result<Vec<String>, DockerError> {
    let e = Engine::new(socket.to_path_buf());
    progress(&e.ok("POST", "/images/load?quiet=1", Body::Tar(tarball))?)
}

/// `docker import tarball repo:tag`: a one-layer image of a root filesystem tar.
pub fn import(socket: &Path, tarball: &Path, repo: &str, tag: &str) -> Result<(), DockerError> {
    let e = Engine::new(socket.to_path_buf());
    progress(&e.ok(
        "POST",
        &format!("/images/create?fromSrc=-&repo={repo}&tag={tag}"),
        Body::Tar(tarball),
    )?)
    .map(|_| ())
}

/// The text of a container's multiplexed log stream (8-byte frame headers).
pub fn demux(mut b: &[u8]) -> String {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let n = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        let end = (8 + n).min(b.len());
        out.extend_from_slice(&b[8..end]);
        b = &b[end..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            socket_from_host(None).unwrap(),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_from_host(Some("unix:///tmp/d.sock")).unwrap(),
            PathBuf::from("/tmp/d.sock")
        );
        assert!(socket_from_host(Some("tcp://127.0.0.1:2375")).is_err());
    }

    /// A scripted daemon on a socket: the request arrives whole, a chunked answer is read,
    /// and an `error` line is an error.
    #[test]
    fn loads_through_the_socket() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("d.sock");
        let tar = d.path().join("i.tar");
        std::fs::write(&tar, vec![7u8; 5000]).unwrap();
        for (reply, ok) in [
            ("{\"stream\":\"Loaded image: x:1\\n\"}\n", true),
            ("{\"errorDetail\":{},\"error\":\"bad archive\"}\n", false),
        ] {
            let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
            let reply = reply.to_string();
            let t = std::thread::spawn(move || {
                let (mut c, _) = l.accept().unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                assert_eq!(body.len(), 5000);
                write!(
                    c,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{reply}\r\n0\r\n\r\n",
                    reply.len()
                )
                .unwrap();
            });
            let r = load(&sock, &tar);
            t.join().unwrap();
            std::fs::remove_file(&sock).unwrap();
            if ok {
                assert_eq!(r.unwrap(), ["Loaded image: x:1"]);
            } else {
                assert!(r.unwrap_err().to_string().contains("bad archive"));
            }
        }
    }
}
