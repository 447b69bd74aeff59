//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of the bench's Garage, for tests
//! that point our binaries and scripts at a server that misbehaves the way real ones do:
//! 500s, 503s (ServiceUnavailable, SlowDown), connections reset before or after the request,
//! bodies cut off after K bytes, and requests held without an answer (stalls).
//!
//! It parses each request (head, then a Content-Length or chunked body: aws-chunked bodies
//! carry a Content-Length too) on keep-alive connections, and asks its [`Schedule`] what to
//! do with it. The schedule is deterministic: a rule picks requests by their number among
//! the matching ones, or by a seeded hash of the request's identity (method, object by the
//! order it was first seen in, query names, range) and its attempt number, so a retry gets a fresh draw and the
//! choice does not depend on the order concurrent requests arrive in.
//!
//! It counts what it did ([`FaultProxy::injected`]) so a test can assert that a fault really
//! happened, and stops every thread it started when dropped (its sockets are shut down,
//! which ends any read they block in). std only: threads and blocking sockets.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What to do with one request instead of passing it through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and an S3 XML error with this code; not forwarded. The
    /// connection stays open, as a real server's would.
    Status(u16, &'static str),
    /// Reset the connection (RST: SO_LINGER 0) once the request's head is read, before its
    /// body: the server never sees it.
    ResetBeforeBody,
    /// Reset once the whole request is read, without forwarding it.
    ResetAfterRequest,
    /// Forward the request, read the server's whole answer, then reset instead of passing it
    /// on: the server did it and the client never hears.
    ResetAfterForward,
    /// Forward, then pass on the answer's head and the first K bytes of its body, then close.
    CutBody(u64),
    /// Read the request and never answer, until the client gives up or the proxy is dropped.
    Stall,
    /// Forward, pass on the head and the first K bytes of the body, then hold like [`Stall`].
    StallBody(u64),
}

impl Fault {
    pub fn internal_error() -> Fault {
        Fault::Status(500, "InternalError")
    }

    pub fn unavailable() -> Fault {
        Fault::Status(503, "ServiceUnavailable")
    }

    pub fn slow_down() -> Fault {
        Fault::Status(503, "SlowDown")
    }

    /// The mix the fault-rate tests use: errors, resets and cut bodies, no stalls.
    pub fn transient_mix() -> Vec<Fault> {
        vec![
            Fault::internal_error(),
            Fault::unavailable(),
            Fault::slow_down(),
            Fault::ResetBeforeBody,
            Fault::ResetAfterRequest,
            Fault::CutBody(100),
        ]
    }

    /// Its name in [`FaultProxy::injected_by_kind`] and the log.
    pub fn kind(&self) -> String {
        match self {
            Fault::Status(s, code) => format!("{s} {code}"),
            Fault::ResetBeforeBody => "reset before body".into(),
            Fault::ResetAfterRequest => "reset after request".into(),
            Fault::ResetAfterForward => "reset after forward".into(),
            Fault::CutBody(_) => "cut body".into(),
            Fault::Stall => "stall".into(),
            Fault::StallBody(_) => "stall in body".into(),
        }
    }
}

/// The parts of a request a rule can look at.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, without `?` (empty when there is none).
    pub query: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A ranged GET of an object that does not start at byte 0.
    pub fn is_later_range(&self) -> bool {
        self.is_object_get() && self.header("range").is_some_and(|r| !r.starts_with("bytes=0-"))
    }

    /// An UploadPart (`PUT …?partNumber=N&uploadId=…`).
    pub fn is_upload_part(&self) -> bool {
        self.method == "PUT" && self.query.contains("partNumber=")
    }

    /// A GET of an object (not a listing: those have a query naming the list type).
    pub fn is_object_get(&self) -> bool {
        self.method == "GET" && !self.query.contains("list-type") && self.path.matches('/').count() >= 2
    }

    /// A DeleteObjects batch (`POST /bucket?delete`) or a DeleteObject.
    pub fn is_delete(&self) -> bool {
        self.method == "DELETE"
            || (self.method == "POST" && self.query.split('&').any(|q| q == "delete" || q == "delete="))
    }

    /// What a retry of this request has in common with it, and with the same request of
    /// another run of the same test: the method, the object by the order it was first seen
    /// in (keys hold guids, times and pids), the query's names (values such as upload ids
    /// and prefixes vary) but the part number's and operation's values, and the range.
    fn identity(&self, object: usize) -> String {
        let query: Vec<&str> = self
            .query
            .split('&')
            .filter(|q| !q.is_empty())
            .map(|q| match q.split_once('=') {
                Some(("partNumber" | "x-id", _)) => q,
                Some((k, _)) => k,
                None => q,
            })
            .collect();
        let range = self.header("range").map(|r| format!(" {r}")).unwrap_or_default();
        format!("{} #{object}?{}{range}", self.method, query.join("&"))
    }

    fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// Which of the requests a rule matches get which fault.
#[derive(Clone, Debug)]
pub enum Pick {
    /// Every one.
    Always(Fault),
    /// Those numbered in the list: 1-based, in the order they arrive among the matching
    /// requests this rule sees (those no earlier rule picked).
    Nth(Vec<u64>, Fault),
    /// About `percent` of them: a hash of (seed, the request's identity, its attempt number)
    /// decides whether and which of `faults`; at most `max_per_request` faults for one
    /// identity, so that enough retries always get through.
    Rate { seed: u64, percent: u64, faults: Vec<Fault>, max_per_request: u32 },
}

/// One line of a schedule: requests `when` holds for get what `pick` says.
#[derive(Clone)]
pub struct Rule {
    pub name: String,
    pub when: Arc<dyn Fn(&Request) -> bool + Send + Sync>,
    pub pick: Pick,
}

impl Rule {
    pub fn new(name: &str, when: impl Fn(&Request) -> bool + Send + Sync + 'static, pick: Pick) -> Rule {
        Rule { name: name.to_string(), when: Arc::new(when), pick }
    }

    /// `percent` of every request, faults from [`Fault::transient_mix`], at most two a request.
    pub fn rate(seed: u64, percent: u64) -> Rule {
        Rule::new(
            "any request",
            |_| true,
            Pick::Rate { seed, percent, faults: Fault::transient_mix(), max_per_request: 2 },
        )
    }
}

/// The rules, tried in order; the first that picks a request decides its fault. No rule:
/// the request passes.
#[derive(Clone, Default)]
pub struct Schedule {
    pub rules: Vec<Rule>,
}

impl Schedule {
    pub fn pass() -> Schedule {
        Schedule::default()
    }

    pub fn with(rule: Rule) -> Schedule {
        Schedule { rules: vec![rule] }
    }
}

/// What the schedule decided so far, and the per-rule counters it decides by.
#[derive(Default)]
struct State {
    schedule: Schedule,
    /// Matching requests seen, per rule index.
    matched: HashMap<usize, u64>,
    /// Attempts seen and faults injected per (rule, identity).
    attempts: HashMap<(usize, String), (u64, u32)>,
    requests: u64,
    /// Paths by the order they were first seen in.
    objects: HashMap<String, usize>,
    /// Faults applied, by kind (a cut of an answer too short to cut is not one).
    injected: BTreeMap<String, u64>,
    log: Vec<String>,
}

impl State {
    fn decide(&mut self, req: &Request) -> Option<Fault> {
        self.requests += 1;
        let next = self.objects.len() + 1;
        let object = *self.objects.entry(req.path.clone()).or_insert(next);
        let identity = req.identity(object);
        let mut chosen = None;
        for (i, rule) in self.schedule.rules.iter().enumerate() {
            if !(rule.when)(req) {
                continue;
            }
            let n = self.matched.entry(i).or_default();
            *n += 1;
            let fault = match &rule.pick {
                Pick::Always(f) => Some(f.clone()),
                Pick::Nth(which, f) => which.contains(n).then(|| f.clone()),
                Pick::Rate { seed, percent, faults, max_per_request } => {
                    let (attempt, faulted) = self.attempts.entry((i, identity.clone())).or_default();
                    *attempt += 1;
                    let h = mix(*seed ^ fnv(&identity) ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let hit = *faulted < *max_per_request && !faults.is_empty() && h % 100 < *percent;
                    hit.then(|| {
                        *faulted += 1;
                        faults[((h / 100) % faults.len() as u64) as usize].clone()
                    })
                }
            };
            if let Some(f) = fault {
                chosen = Some((rule.name.clone(), f));
                break;
            }
        }
        let line = match &chosen {
            Some((rule, f)) => format!("{} {} -> {} ({rule})", req.method, req.target(), f.kind()),
            None => format!("{} {} -> pass", req.method, req.target()),
        };
        self.log.push(line);
        chosen.map(|(_, f)| f)
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Open sockets, so dropping the proxy can shut them all down.
#[derive(Default)]
struct Sockets {
    next: u64,
    open: HashMap<u64, TcpStream>,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    state: Mutex<State>,
    sockets: Mutex<Sockets>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Requests being held by a stall right now.
    stalled: AtomicU64,
}

impl Shared {
    fn register(&self, s: &TcpStream) -> Option<u64> {
        let clone = s.try_clone().ok()?;
        let mut socks = self.sockets.lock().ok()?;
        socks.next += 1;
        let id = socks.next;
        socks.open.insert(id, clone);
        Some(id)
    }

    /// A fault was applied (or, with `applied` false, decided but had nothing to act on).
    fn count(&self, fault: &Fault, applied: bool) {
        if let Ok(mut st) = self.state.lock() {
            if applied {
                *st.injected.entry(fault.kind()).or_default() += 1;
            } else {
                st.log.push(format!("  ({} had nothing to cut: passed)", fault.kind()));
            }
        }
    }

    fn unregister(&self, id: Option<u64>) {
        if let (Some(id), Ok(mut socks)) = (id, self.sockets.lock()) {
            socks.open.remove(&id);
        }
    }
}

/// The proxy; `endpoint()` is what to give `--endpoint`.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on 127.0.0.1 (a port the OS picks) and forward to `upstream`
    /// (`http://127.0.0.1:PORT`, e.g. `Bench::get().endpoint`).
    pub fn start(upstream: &str, schedule: Schedule) -> FaultProxy {
        let hostport = upstream.strip_prefix("http://").unwrap_or(upstream).trim_end_matches('/');
        let upstream: SocketAddr = hostport.parse().unwrap_or_else(|e| panic!("upstream {hostport}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            state: Mutex::new(State { schedule, ..State::default() }),
            sockets: Mutex::new(Sockets::default()),
            threads: Mutex::new(Vec::new()),
            stalled: AtomicU64::new(0),
        });
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(listener, s));
        FaultProxy { addr, shared, acceptor: Some(acceptor) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replace the schedule (its counters start again; the totals go on).
    pub fn set(&self, schedule: Schedule) {
        let mut st = self.shared.state.lock().expect("proxy state");
        st.schedule = schedule;
        st.matched.clear();
        st.attempts.clear();
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.shared.state.lock().expect("proxy state").requests
    }

    /// Faults injected so far, all kinds.
    pub fn injected(&self) -> u64 {
        self.injected_by_kind().values().sum()
    }

    /// Faults injected so far, by [`Fault::kind`].
    pub fn injected_by_kind(&self) -> BTreeMap<String, u64> {
        self.shared.state.lock().expect("proxy state").injected.clone()
    }

    /// Requests held by a stall right now.
    pub fn stalled(&self) -> u64 {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Every request and what it got, one line each, for failure messages.
    pub fn log(&self) -> String {
        self.shared.state.lock().expect("proxy state").log.join("\n")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor, then end every read a connection thread blocks in.
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        if let Ok(socks) = self.shared.sockets.lock() {
            for s in socks.open.values() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock().expect("proxy threads"));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        // Registered here, before the acceptor can stop, so a drop shuts it down.
        let id = shared.register(&client);
        let s = shared.clone();
        let t = std::thread::spawn(move || {
            let mut conn = Conn { client, upstream: None, shared: s.clone() };
            let _ = conn.serve();
            if let Some((_, uid)) = conn.upstream.take() {
                s.unregister(uid);
            }
            s.unregister(id);
        });
        if let Ok(mut threads) = shared.threads.lock() {
            threads.retain(|t| !t.is_finished());
            threads.push(t);
        }
    }
}

/// One client connection and its (lazily opened, kept-alive) connection to the server.
struct Conn {
    client: TcpStream,
    upstream: Option<(BufReader<TcpStream>, Option<u64>)>,
    shared: Arc<Shared>,
}

/// A message head: the start line, the headers, and the raw bytes to forward.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
    raw: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> io::Result<Option<u64>> {
        self.header("content-length")
            .map(|v| v.trim().parse().map_err(|_| bad(&format!("bad Content-Length {v:?}"))))
            .transpose()
    }

    fn wants_close(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Read a head (up to the blank line); `None` at a clean end of the connection.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a head"));
        }
        raw.extend_from_slice(&line);
        if raw.len() > 256 << 10 {
            return Err(bad("head longer than 256 KiB"));
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
        if text.is_empty() {
            if lines.is_empty() {
                // Stray blank lines between messages are allowed (RFC 9112 2.2).
                raw.clear();
                continue;
            }
            break;
        }
        lines.push(text);
    }
    let start = lines.remove(0);
    let headers = lines
        .iter()
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    Ok(Some(Head { start, headers, raw }))
}

/// How a body ends.
#[derive(Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Copy a body from `r` to `w` as framed (raw: chunk framing included), stopping after
/// `limit` bytes when given. Returns whether the whole body was copied.
fn copy_body(r: &mut impl BufRead, w: &mut impl Write, framing: Framing, limit: Option<u64>) -> io::Result<bool> {
    let mut budget = limit.unwrap_or(u64::MAX);
    let put = |w: &mut dyn Write, bytes: &[u8], budget: &mut u64| -> io::Result<bool> {
        let n = (bytes.len() as u64).min(*budget) as usize;
        w.write_all(&bytes[..n])?;
        *budget -= n as u64;
        Ok(n == bytes.len())
    };
    let mut buf = vec![0u8; 64 << 10];
    match framing {
        Framing::None => Ok(true),
        Framing::Length(mut left) => {
            while left > 0 {
                let want = (buf.len() as u64).min(left) as usize;
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body ended early"));
                }
                left -= n as u64;
                if !put(w, &buf[..n], &mut budget)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Framing::UntilClose => loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(true);
            }
            if !put(w, &buf[..n], &mut budget)? {
                return Ok(false);
            }
        },
        Framing::Chunked => loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body ended early"));
            }
            if !put(w, &line, &mut budget)? {
                return Ok(false);
            }
            let text = String::from_utf8_lossy(&line);
            let size_text = text.trim().split(';').next().unwrap_or("").to_string();
            let size =
                u64::from_str_radix(&size_text, 16).map_err(|_| bad(&format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut t = Vec::new();
                    if r.read_until(b'\n', &mut t)? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "trailers ended early"));
                    }
                    if !put(w, &t, &mut budget)? {
                        return Ok(false);
                    }
                    if t == b"\r\n" || t == b"\n" {
                        return Ok(true);
                    }
                }
            }
            // The chunk and its CRLF.
            let mut left = size + 2;
            while left > 0 {
                let want = (buf.len() as u64).min(left) as usize;
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunk ended early"));
                }
                left -= n as u64;
                if !put(w, &buf[..n], &mut budget)? {
                    return Ok(false);
                }
            }
        },
    }
}

/// Close with RST instead of FIN: SO_LINGER on with a zero timeout.
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        l_onoff: i32,
        l_linger: i32,
    }
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
    }
    // Linux's SOL_SOCKET and SO_LINGER.
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let l = Linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid fd we own, and a pointer to a live struct of the size given.
    unsafe {
        setsockopt(
            s.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            &l as *const Linger as *const std::ffi::c_void,
            std::mem::size_of::<Linger>() as u32,
        );
    }
    // Shutting down the read side alone sends nothing; the RST goes when the last fd closes.
    let _ = s.shutdown(Shutdown::Read);
}

fn error_xml(status: u16, code: &str) -> Vec<u8> {
    let reason = match status {
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the test's fault proxy</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    let mut v = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: fault-proxy\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body.as_bytes());
    v
}

impl Conn {
    /// Serve requests until the client closes, a fault ends the connection, or an error.
    fn serve(&mut self) -> io::Result<()> {
        let mut reader = BufReader::new(self.client.try_clone()?);
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let Some(head) = read_head(&mut reader)? else { return Ok(()) };
            let mut words = head.start.split_whitespace();
            let method = words.next().unwrap_or("").to_string();
            let target = words.next().unwrap_or("").to_string();
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (target.clone(), String::new()),
            };
            let req = Request { method: method.clone(), path, query, headers: head.headers.clone() };
            let fault = self.shared.state.lock().map_err(|_| bad("proxy state poisoned"))?.decide(&req);
            if let Some(f @ Fault::ResetBeforeBody) = &fault {
                self.shared.count(f, true);
                reset(&self.client);
                return Ok(());
            }
            let framing = if head.chunked() {
                Framing::Chunked
            } else {
                match head.content_length()? {
                    Some(n) => Framing::Length(n),
                    None => Framing::None,
                }
            };
            if head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
                self.client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let mut body = Vec::new();
            copy_body(&mut reader, &mut body, framing, None)?;
            if let Some(f @ (Fault::Status(..) | Fault::ResetAfterRequest | Fault::Stall)) = &fault {
                self.shared.count(f, true);
            }
            match fault {
                Some(Fault::Status(status, code)) => {
                    self.client.write_all(&error_xml(status, code))?;
                    if head.wants_close() {
                        return Ok(());
                    }
                    continue;
                }
                Some(Fault::ResetAfterRequest) => {
                    reset(&self.client);
                    return Ok(());
                }
                Some(Fault::Stall) => {
                    self.hold();
                    return Ok(());
                }
                _ => {}
            }
            let keep = self.forward(&head, &body, method == "HEAD", fault)?;
            if !keep || head.wants_close() {
                return Ok(());
            }
        }
    }

    /// Hold the connection: read (and drop) whatever the client sends until it closes, or
    /// the proxy shuts the socket down.
    fn hold(&mut self) {
        self.shared.stalled.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.client.read(&mut buf) {
            if n == 0 || self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
        }
        self.shared.stalled.fetch_sub(1, Ordering::SeqCst);
    }

    fn connect_upstream(&mut self) -> io::Result<()> {
        let s = TcpStream::connect(self.shared.upstream)?;
        let id = self.shared.register(&s);
        if self.shared.stop.load(Ordering::SeqCst) {
            self.shared.unregister(id);
            return Err(io::Error::other("the proxy is stopping"));
        }
        if let Some((_, old)) = self.upstream.replace((BufReader::new(s), id)) {
            self.shared.unregister(old);
        }
        Ok(())
    }

    fn drop_upstream(&mut self) {
        if let Some((_, id)) = self.upstream.take() {
            self.shared.unregister(id);
        }
    }

    /// Send the request to the server and read its answer's head, reconnecting once when a
    /// kept-alive connection turns out closed before any answer.
    fn exchange(&mut self, head: &Head, body: &[u8]) -> io::Result<Head> {
        let fresh = self.upstream.is_none();
        if fresh {
            self.connect_upstream()?;
        }
        match self.try_exchange(head, body) {
            Ok(Some(h)) => Ok(h),
            Ok(None) | Err(_) if !fresh => {
                self.connect_upstream()?;
                self.try_exchange(head, body)?
                    .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed without an answer"))
            }
            Ok(None) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed without an answer")),
            Err(e) => Err(e),
        }
    }

    fn try_exchange(&mut self, head: &Head, body: &[u8]) -> io::Result<Option<Head>> {
        let (r, _) = self.upstream.as_mut().ok_or_else(|| bad("no upstream"))?;
        {
            let w = r.get_mut();
            w.write_all(&head.raw)?;
            w.write_all(body)?;
            w.flush()?;
        }
        loop {
            let Some(h) = read_head(r)? else { return Ok(None) };
            // Interim answers (100 Continue): the client had ours already.
            if h.start.split_whitespace().nth(1).is_some_and(|s| s.starts_with('1')) {
                continue;
            }
            return Ok(Some(h));
        }
    }

    /// Forward one request and pass its answer on as `fault` says. Returns whether the
    /// client connection can serve another request.
    fn forward(&mut self, head: &Head, body: &[u8], is_head: bool, fault: Option<Fault>) -> io::Result<bool> {
        let answer = self.exchange(head, body)?;
        let status: u16 = answer.start.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let framing = if is_head || status == 204 || status == 304 {
            Framing::None
        } else if answer.chunked() {
            Framing::Chunked
        } else {
            match answer.content_length()? {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        let upstream_reusable = !answer.wants_close() && !matches!(framing, Framing::UntilClose);
        // An answer no longer than the cut passes whole: nothing to cut.
        let short = |k: u64| match framing {
            Framing::None => true,
            Framing::Length(n) => n <= k,
            _ => false,
        };
        let fault = match fault {
            Some(f @ (Fault::CutBody(k) | Fault::StallBody(k))) if short(k) => {
                self.shared.count(&f, false);
                None
            }
            Some(f) => {
                self.shared.count(&f, true);
                Some(f)
            }
            None => None,
        };
        let (r, _) = self.upstream.as_mut().ok_or_else(|| bad("no upstream"))?;
        match fault {
            Some(Fault::ResetAfterForward) => {
                copy_body(r, &mut io::sink(), framing, None)?;
                if !upstream_reusable {
                    self.drop_upstream();
                }
                reset(&self.client);
                Ok(false)
            }
            Some(Fault::CutBody(k)) | Some(Fault::StallBody(k)) => {
                self.client.write_all(&answer.raw)?;
                copy_body(r, &mut self.client, framing, Some(k))?;
                self.client.flush()?;
                // The rest of the answer is still on the server's connection: not reusable.
                self.drop_upstream();
                if matches!(fault, Some(Fault::StallBody(_))) {
                    self.hold();
                } else {
                    let _ = self.client.shutdown(Shutdown::Write);
                }
                Ok(false)
            }
            _ => {
                self.client.write_all(&answer.raw)?;
                copy_body(r, &mut self.client, framing, None)?;
                self.client.flush()?;
                if !upstream_reusable {
                    self.drop_upstream();
                }
                Ok(upstream_reusable)
            }
        }
    }
}
