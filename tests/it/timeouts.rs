//! The read timeout means "no answer": a server that takes a request and goes silent fails
//! it within --read-timeout (default 20 s), while a body that is still moving on a slow link
//! is never cut by it. Fake servers on 127.0.0.1, one connection per thread.

use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a fake server does with a request once it has read its head.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads the whole body, then never answers (the connection stays open).
    Silent,
    /// Reads the body at about `bytes_per_sec`, then answers 200 like a PUT.
    SlowReader { bytes_per_sec: usize },
}

/// A fake S3 endpoint; the count is of requests whose body it read to the end.
fn fake_server(how: Behaviour) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let bodies = Arc::new(AtomicUsize::new(0));
    let counter = bodies.clone();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || serve(stream, how, &counter));
        }
    });
    (format!("http://{addr}"), bodies)
}

fn serve(stream: TcpStream, how: Behaviour, bodies: &AtomicUsize) {
    let mut r = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        let mut any = false;
        while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            any = true;
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            line.clear();
        }
        if !any {
            return;
        }
        let chunk = match how {
            Behaviour::Silent => len.max(1),
            // Pacing the reads is what makes this server slow; it is not synchronisation.
            Behaviour::SlowReader { bytes_per_sec } => (bytes_per_sec / 10).max(1),
        };
        let mut left = len;
        let mut buf = vec![0u8; chunk];
        while left > 0 {
            let n = left.min(chunk);
            if r.read_exact(&mut buf[..n]).is_err() {
                return;
            }
            left -= n;
            if let Behaviour::SlowReader { .. } = how {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        bodies.fetch_add(1, Ordering::SeqCst);
        match how {
            // Hold the connection open without a word until the client gives up.
            Behaviour::Silent => {
                let mut rest = Vec::new();
                let _ = r.read_to_end(&mut rest);
                return;
            }
            Behaviour::SlowReader { .. } => {
                let resp = "HTTP/1.1 200 OK\r\netag: \"0123456789abcdef0123456789abcdef\"\r\ncontent-length: 0\r\n\r\n";
                if r.get_mut().write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn a_silent_server_fails_a_request_within_the_default_read_timeout() {
    let ctx = Ctx::new("silent");
    let (endpoint, bodies) = fake_server(Behaviour::Silent);
    // With the old default (120 s per attempt) these would be killed by the 60 s bound
    // of `run` instead of failing on their own.
    let started = Instant::now();
    let mut put = ctx.cmd("s3put");
    put.args(["--endpoint", &endpoint, "--retries", "0"]).arg(ctx.url("k"));
    let out = run(put, Some(b"four"), Duration::from_secs(60)).fails(69, "timeout");
    assert!(out.stderr.contains("no answer"), "the message says what happened: {}", out.stderr);
    assert_eq!(bodies.load(Ordering::SeqCst), 1, "the body was sent before the timeout ran");
    let mut get = ctx.cmd("s3get");
    get.args(["--endpoint", &endpoint, "--retries", "0"]).arg(ctx.url("k"));
    run(get, None, Duration::from_secs(60)).fails(69, "timeout");
    eprintln!("both failed after {:?}", started.elapsed());
}

#[test]
fn a_silent_server_is_retried_and_then_refused() {
    let ctx = Ctx::new("silent-retried");
    let (endpoint, bodies) = fake_server(Behaviour::Silent);
    let mut put = ctx.cmd("s3put");
    put.args(["--endpoint", &endpoint, "--retries", "2", "--read-timeout", "1s"]).arg(ctx.url("k"));
    run(put, Some(b"four"), Duration::from_secs(60)).fails(69, "timeout");
    assert_eq!(bodies.load(Ordering::SeqCst), 3, "one attempt and two retries, each sent in full");
}

#[test]
fn a_body_that_is_still_moving_is_not_cut_by_the_read_timeout() {
    let ctx = Ctx::new("slow-body");
    // 64 MiB at about 16 MiB/s: twice the read timeout, and the PUT still succeeds. (The
    // sockets' buffers hold a few MiB that the server has not read when the last byte
    // leaves s3put; at this rate they drain well within the timeout.)
    // One part of 64 MiB: the fake server answers single PUTs only, and a pipe of unknown
    // size would start at 16 MiB parts.
    let (endpoint, bodies) = fake_server(Behaviour::SlowReader { bytes_per_sec: 16 * MIB });
    let mut put = ctx.cmd("s3put");
    put.args(["--endpoint", &endpoint, "--retries", "0", "--read-timeout", "2s", "--part-size", "64M"])
        .arg(ctx.url("k"));
    let started = Instant::now();
    let r = run(put, Some(&data(64 * MIB, 5)), Duration::from_secs(60)).success().json();
    assert!(started.elapsed() > Duration::from_secs(3), "the body took longer than the timeout to send");
    assert_eq!(r["bytes"], 64 * MIB as u64);
    assert_eq!(bodies.load(Ordering::SeqCst), 1, "one PUT, not retried");
}
