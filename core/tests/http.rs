//! LIFETIMES.md T01–T04 on real HTTP/1.1 exchanges over 127.0.0.1, plus the motivating case on the
//! server side: take the body of a request, release the request, keep reading.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bcv_core::handle::*;

fn runtime() -> Runtime {
    Runtime::new().expect("runtime")
}

fn assert_idle(rt: &Runtime) {
    assert_eq!(rt.wait_idle(Duration::from_secs(5)), 0, "live nodes left: {:?}", rt.diagnostics());
}

fn reason(e: &Error) -> CloseReason {
    e.closed().unwrap_or_else(|| panic!("expected Closed, got {e:?}")).reason
}

/// What the raw test server saw of the client.
#[derive(Debug, PartialEq)]
enum ServerSaw {
    /// Every chunk and the trailers were written.
    Completed,
    /// The client closed the connection before the body ended (it was abandoned, not reused).
    Abandoned,
}

/// A hand-written HTTP/1.1 server: one connection, a chunked response of `chunks` chunks of `chunk_len`
/// bytes each (`pause` between them) and an `x-checksum` trailer.
fn raw_server(chunks: usize, chunk_len: usize, pause: Duration) -> (SocketAddr, mpsc::Receiver<ServerSaw>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nx-test: yes\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n";
        let write_all = |s: &mut TcpStream, b: &[u8]| s.write_all(b).and_then(|_| s.flush());
        if write_all(&mut stream, head.as_bytes()).is_err() {
            let _ = tx.send(ServerSaw::Abandoned);
            return;
        }
        for i in 0..chunks {
            let body = vec![b'a' + (i % 26) as u8; chunk_len];
            let mut frame = format!("{:x}\r\n", body.len()).into_bytes();
            frame.extend_from_slice(&body);
            frame.extend_from_slice(b"\r\n");
            if write_all(&mut stream, &frame).is_err() {
                let _ = tx.send(ServerSaw::Abandoned);
                return;
            }
            std::thread::sleep(pause);
        }
        let saw = match write_all(&mut stream, b"0\r\nx-checksum: abc123\r\n\r\n") {
            Ok(()) => ServerSaw::Completed,
            Err(_) => ServerSaw::Abandoned,
        };
        let _ = tx.send(saw);
    });
    (addr, rx)
}

#[test]
fn t01_release_response_before_body_reads_to_clean_eof() {
    let rt = runtime();
    let (addr, saw) = raw_server(20, 10_000, Duration::from_millis(2));
    let response = rt.http_request_blocking("GET", &format!("http://{addr}/data"), &[], None).unwrap();
    let head = response.head().unwrap();
    assert_eq!(head.status, Some(200));
    let (body, trailers) = response.take_body().unwrap();
    drop(response); // R released before B
    let data = body.read_to_end_blocking().unwrap();
    assert_eq!(data.len(), 200_000);
    assert!(data[..10_000].iter().all(|&b| b == b'a'));
    let t = trailers.wait_blocking(Some(Duration::from_secs(5))).unwrap().expect("trailers");
    assert_eq!(t, vec![("x-checksum".to_owned(), "abc123".to_owned())]);
    assert_eq!(saw.recv_timeout(Duration::from_secs(5)).unwrap(), ServerSaw::Completed);
    drop((body, trailers));
    assert_idle(&rt);
}

#[test]
fn t02_release_body_first_abandons_the_connection() {
    let rt = runtime();
    let (addr, saw) = raw_server(1000, 10_000, Duration::from_millis(5));
    let response = rt.http_request_blocking("GET", &format!("http://{addr}/"), &[], None).unwrap();
    let (body, trailers) = response.take_body().unwrap();
    let _ = body.read_chunk_blocking(1000, Some(Duration::from_secs(5))).unwrap();
    drop(body);
    assert_eq!(saw.recv_timeout(Duration::from_secs(5)).unwrap(), ServerSaw::Abandoned);
    // R's methods still work.
    assert_eq!(response.header("x-test").unwrap().as_deref(), Some("yes"));
    assert_eq!(reason(&trailers.wait_blocking(Some(Duration::from_secs(5))).unwrap_err()), CloseReason::Abandoned);
    drop((response, trailers));
    assert_idle(&rt);
}

#[test]
fn t03_close_response_with_buffered_body() {
    let rt = runtime();
    let (addr, _saw) = raw_server(1000, 16_384, Duration::from_millis(1));
    let response = rt.http_request_blocking("GET", &format!("http://{addr}/"), &[], None).unwrap();
    let snapshot = response.head().unwrap();
    let (body, trailers) = response.take_body().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while body.buffered() < 64 * 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(body.buffered() >= 64 * 1024 - 16_384, "buffered {}", body.buffered());
    response.close();
    assert_eq!(reason(&body.read_blocking(&mut [0; 16], None).unwrap_err()), CloseReason::Parent);
    assert_eq!(reason(&trailers.wait_blocking(Some(Duration::from_secs(1))).unwrap_err()), CloseReason::Parent);
    assert_eq!(reason(&response.head().unwrap_err()), CloseReason::SelfClosed);
    assert_eq!(snapshot.header("x-test"), Some("yes"));
    drop((response, body, trailers));
    assert_idle(&rt);
}

#[test]
fn t04_close_body_abandons_trailers_quickly() {
    let rt = runtime();
    let (addr, saw) = raw_server(1000, 10_000, Duration::from_millis(5));
    let response = rt.http_request_blocking("GET", &format!("http://{addr}/"), &[], None).unwrap();
    let (body, trailers) = response.take_body().unwrap();
    let _ = body.read_chunk_blocking(1000, Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    body.close();
    let err = trailers.wait_blocking(Some(Duration::from_secs(5))).unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
    assert_eq!(reason(&err), CloseReason::Abandoned);
    assert_eq!(response.head().unwrap().status, Some(200));
    assert_eq!(saw.recv_timeout(Duration::from_secs(5)).unwrap(), ServerSaw::Abandoned);
    drop((response, body, trailers));
    assert_idle(&rt);
}

#[test]
fn server_take_body_release_request_keep_reading() {
    let rt = runtime();
    let server = rt.http_serve("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    // A raw client streams a chunked body slowly, with a trailer.
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        for i in 0..10u8 {
            let chunk = vec![b'0' + i; 5000];
            s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).unwrap();
            s.write_all(&chunk).unwrap();
            s.write_all(b"\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        s.write_all(b"0\r\nx-sum: 50000\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
    });
    let request = server.next_request_blocking(Some(Duration::from_secs(5))).unwrap();
    let head = request.head().unwrap();
    assert_eq!(head.method.as_deref(), Some("POST"));
    assert_eq!(head.uri.as_deref(), Some("/upload"));
    let reply = request.respond(200, &[("connection".into(), "close".into())]).unwrap();
    let (body, trailers) = request.take_body().unwrap();
    drop(request); // the motivating case: the request goes, the body and the response keep working
    let data = body.read_to_end_blocking().unwrap();
    assert_eq!(data.len(), 50_000);
    let t = trailers.wait_blocking(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!(t, vec![("x-sum".to_owned(), "50000".to_owned())]);
    reply.write_blocking(format!("got {} bytes", data.len()).as_bytes(), None).unwrap();
    reply.finish().unwrap();
    let response = client.join().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("got 50000 bytes"), "{response}");
    drop((body, trailers, reply, server));
    assert_idle(&rt);
}

#[test]
fn client_and_server_stream_both_ways() {
    let rt = runtime();
    let server = rt.http_serve("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/echo", server.local_addr());
    let serve = {
        let server_rt = rt.clone();
        std::thread::spawn(move || {
            let req = server.next_request_blocking(Some(Duration::from_secs(5))).unwrap();
            let (body, _t) = req.take_body().unwrap();
            let reply = req.respond(200, &[]).unwrap();
            // Echo through gzip: request body -> gzip -> response body.
            let (_g, gz) = server_rt.gzip_compress(body, 1).unwrap();
            server_rt.spawn_pipe(gz, reply);
            std::thread::sleep(Duration::from_millis(200));
            drop(server);
        })
    };
    let (w, r) = rt.pipe(64 * 1024).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_blocking(&sent, None).unwrap();
        w.finish().unwrap();
    });
    let response = rt.http_request_blocking("PUT", &url, &[("x-a".into(), "1".into())], Some(r)).unwrap();
    let (body, _t) = response.take_body().unwrap();
    let (_d, plain) = rt.gzip_decompress(body).unwrap();
    assert_eq!(plain.read_to_end_blocking().unwrap(), data);
    writer.join().unwrap();
    serve.join().unwrap();
    drop((response, _t, _d, plain));
    assert_idle(&rt);
}

#[test]
fn request_to_a_closed_port_names_the_url() {
    let rt = runtime();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = rt.http_request_blocking("GET", &format!("http://127.0.0.1:{port}/x"), &[], None).unwrap_err();
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(matches!(rt.http_request_blocking("GET", "ftp://x/", &[], None), Err(Error::InvalidArgument(_))));
    assert_idle(&rt);
}

#[test]
fn empty_responses_are_never_lost() {
    let rt = runtime();
    let server = rt.http_serve("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/", server.local_addr());
    let serve = std::thread::spawn(move || {
        for i in 0..40 {
            let req = server.next_request_blocking(Some(Duration::from_secs(5))).unwrap();
            let status = if i % 2 == 0 { 204 } else { 200 };
            // A 204 has no body: hyper may drop the (empty) body stream, so the finish can fail.
            let _ = req.respond_with(status, &[], Vec::new());
        }
        server
    });
    for i in 0..40 {
        let response = rt.http_request_blocking("GET", &url, &[], None).unwrap();
        assert_eq!(response.head().unwrap().status, Some(if i % 2 == 0 { 204 } else { 200 }));
        let (body, _t) = response.take_body().unwrap();
        assert!(body.read_to_end_blocking().unwrap().is_empty());
    }
    drop(serve.join().unwrap());
    assert_idle(&rt);
}
