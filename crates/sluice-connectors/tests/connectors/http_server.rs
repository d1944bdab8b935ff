//! A real HTTP/1.1 server for tests and benchmarks, on std sockets and one thread per
//! connection (keep-alive, `Content-Length` bodies). It logs every request with the time it
//! arrived, and answers what the test's handler says: any status, headers and body, slowly if
//! asked. Shared by the connector tests, the HTTP benchmark and the binary's end-to-end tests.

#![allow(dead_code)] // Each includer uses part of it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When its request line arrived.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// 1 for the first request with this body, 2 for the second (a retry), ...
    pub attempt: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: String::new(), delay: Duration::ZERO }
    }

    pub fn ok() -> Self {
        Self::status(200)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

struct State {
    handler: Box<Handler>,
    /// Whether to keep requests in the log (not for benchmarks: it costs time and memory).
    keep_log: bool,
    received: AtomicUsize,
    log: Mutex<Vec<(Request, u16)>>,
    attempts: Mutex<HashMap<Vec<u8>, usize>>,
    answered: AtomicUsize,
    stop: AtomicBool,
}

/// A running server on 127.0.0.1; stops accepting when dropped.
pub struct TestServer {
    address: SocketAddr,
    state: Arc<State>,
}

impl TestServer {
    /// Starts a server answering every request with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        Self::spawn(Box::new(handler), true)
    }

    /// Starts a server that answers 200 at once and only counts requests, for benchmarks.
    pub fn counting() -> Self {
        Self::spawn(Box::new(|_| Reply::ok()), false)
    }

    fn spawn(handler: Box<Handler>, keep_log: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test HTTP server");
        let address = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            handler,
            keep_log,
            received: AtomicUsize::new(0),
            log: Mutex::default(),
            attempts: Mutex::default(),
            answered: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Self { address, state }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Every request received so far, in arrival order, with the status it was answered with.
    pub fn log(&self) -> Vec<(Request, u16)> {
        self.state.log.lock().expect("log").clone()
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log().into_iter().map(|(request, _)| request).collect()
    }

    /// Bodies answered with a 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<Request> {
        self.log().into_iter().filter(|(_, status)| (200..300).contains(status)).map(|(r, _)| r).collect()
    }

    /// Requests received so far (also by a counting server).
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::SeqCst)
    }

    /// Responses fully written (counted just before the response is sent).
    pub fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
    }
}

fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let Some(mut request) = read_request(&mut reader) {
        state.received.fetch_add(1, Ordering::SeqCst);
        if !state.keep_log {
            state.answered.fetch_add(1, Ordering::SeqCst);
            if writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err() {
                return;
            }
            continue;
        }
        request.attempt = {
            let mut attempts = state.attempts.lock().expect("attempts");
            let count = attempts.entry(request.body.clone()).or_insert(0);
            *count += 1;
            *count
        };
        let reply = (state.handler)(&request);
        state.log.lock().expect("log").push((request, reply.status));
        std::thread::sleep(reply.delay);
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-length: {}\r\n",
            reply.status,
            reason(reply.status),
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        state.answered.fetch_add(1, Ordering::SeqCst);
        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(reply.body.as_bytes())).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let at = Instant::now();
    let mut words = line.split_whitespace();
    let method = words.next()?.to_owned();
    let path = words.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { at, method, path, headers, body, attempt: 0 })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
