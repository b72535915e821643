use super::*;

fn ends(chunks: &[&[u8]]) -> Option<(usize, usize)> {
    let mut scan = EndScan::default();
    for (i, chunk) in chunks.iter().enumerate() {
        if let Some(at) = scan.feed(chunk) {
            return Some((i, at));
        }
    }
    None
}

#[test]
fn the_end_of_a_head_is_found_across_reads_and_line_endings() {
    assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]), Some((0, 27)));
    assert_eq!(ends(&[b"GET / HTTP/1.1\nHost: x\n\n"]), Some((0, 24)));
    assert_eq!(
        ends(&[b"GET / HTTP/1.1\r\nHost: x\n\r\nbody"]),
        Some((0, 26))
    );
    assert_eq!(
        ends(&[b"GET / HTTP/1.1\r\nHost: x\r", b"\n", b"\r", b"\nrest"]),
        Some((3, 1))
    );
    assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]), None);
    // Leading blank lines do not end a head (parsers skip them).
    assert_eq!(
        ends(&[b"\r\n\r\n\n\n", b"GET / HTTP/1.1\r\n\r\n"]),
        Some((1, 18))
    );
    assert_eq!(ends(&[b"\r\n\r\n"]), None);
    // A carriage return inside a line does not count.
    assert_eq!(ends(&[b"GET / HTTP/1.1\r\nA: b\rc\r\n"]), None);
}

/// A guard over one end of a socket pair, the test holding the other end.
async fn pair(
    limits: HeadLimits,
) -> (
    HeadGuard,
    tokio::net::TcpStream,
    Arc<std::sync::Mutex<Vec<HeadRefusal>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tell = Arc::clone(&seen);
    let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
    let guard = HeadGuard::new(
        stream,
        limits,
        Some(Arc::new(move |why| tell.lock().unwrap().push(why))),
    );
    (guard, client, seen)
}

const LIMITS: HeadLimits = HeadLimits {
    timeout: Duration::from_millis(300),
    max_bytes: 1024,
};

async fn read_some(guard: &mut HeadGuard) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0u8; 100_000];
    let n = guard.read(&mut buf).await.unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn a_trickled_head_is_handed_over_whole_and_the_body_passes_through() {
    use tokio::io::AsyncWriteExt as _;
    let (mut guard, mut client, seen) = pair(LIMITS).await;
    let writer = tokio::spawn(async move {
        for part in [
            &b"GET / HT"[..],
            b"TP/1.1\r\nHost:",
            b" x\r\nContent-Length: 4\r\n\r",
            b"\nbody",
        ] {
            client.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client
    });
    // The head comes whole (with the body bytes that arrived in its last read).
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n";
    let mut got = read_some(&mut guard).await;
    assert!(got.starts_with(head), "{got:?}");
    while got.len() < head.len() + 4 {
        got.extend(read_some(&mut guard).await);
    }
    assert_eq!(&got[head.len()..], b"body");
    let mut client = writer.await.unwrap();
    // The response starts; the next request's head is collected again.
    guard
        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        .await
        .unwrap();
    assert!(matches!(
        guard.phase,
        Phase::Body {
            response_started: false
        }
    ));
    guard
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    client.write_all(b"GET /2 HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.write_all(b"\r\n").await.unwrap();
    assert_eq!(read_some(&mut guard).await, b"GET /2 HTTP/1.1\r\n\r\n");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_head_that_does_not_arrive_in_time_ends_the_stream() {
    use tokio::io::AsyncWriteExt as _;
    let (mut guard, mut client, seen) = pair(LIMITS).await;
    client.write_all(b"GET / HTTP/1.1\r\nX: ").await.unwrap();
    let started = std::time::Instant::now();
    let keep_trickling = tokio::spawn(async move {
        for _ in 0..20 {
            if client.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(
        read_some(&mut guard).await,
        b"",
        "end of stream, nothing handed over"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_millis(800),
        "{waited:?}"
    );
    assert_eq!(*seen.lock().unwrap(), [HeadRefusal::Timeout]);
    keep_trickling.abort();
}

#[tokio::test]
async fn a_head_past_the_limit_gets_431_and_the_stream_ends() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut guard, mut client, seen) = pair(LIMITS).await;
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    head.extend(std::iter::repeat_n(b'a', 2000));
    client.write_all(&head).await.unwrap();
    assert_eq!(read_some(&mut guard).await, b"");
    drop(guard);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8(answer).unwrap();
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    assert!(text.contains("REQUEST_HEADER_TOO_LARGE"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert_eq!(*seen.lock().unwrap(), [HeadRefusal::TooLarge]);
}

#[tokio::test]
async fn a_complete_head_at_the_limit_passes() {
    use tokio::io::AsyncWriteExt as _;
    let (mut guard, mut client, _) = pair(LIMITS).await;
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 1024 - head.len() - 4));
    head.extend_from_slice(b"\r\n\r\n");
    assert_eq!(head.len(), 1024);
    client.write_all(&head).await.unwrap();
    let mut got = Vec::new();
    while got.len() < head.len() {
        got.extend(read_some(&mut guard).await);
    }
    assert_eq!(got, head);
}

#[tokio::test]
async fn after_101_the_connection_is_a_tunnel() {
    use tokio::io::AsyncWriteExt as _;
    let (mut guard, mut client, _) = pair(LIMITS).await;
    client
        .write_all(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    read_some(&mut guard).await;
    guard
        .write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        .await
        .unwrap();
    guard.write_all(b"\x81\x05hello").await.unwrap();
    // Frames without any blank line pass through at once, however long it takes.
    client.write_all(b"\x81\x85abcdefghi").await.unwrap();
    assert_eq!(read_some(&mut guard).await, b"\x81\x85abcdefghi");
    assert!(matches!(guard.phase, Phase::Tunnel));
}

#[tokio::test]
async fn first_head_waits_for_a_whole_head_or_reports_the_end() {
    use tokio::io::AsyncWriteExt as _;
    let (mut guard, mut client, _) = pair(LIMITS).await;
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"Host: x\r\n\r\n").await.unwrap();
        client
    });
    assert!(guard.first_head().await);
    assert_eq!(
        read_some(&mut guard).await,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    drop(writer.await.unwrap());

    let (mut guard, client, seen) = pair(LIMITS).await;
    drop(client);
    assert!(!guard.first_head().await, "closed before a head");
    assert!(seen.lock().unwrap().is_empty());
    let (mut guard, _client, seen) = pair(LIMITS).await;
    assert!(!guard.first_head().await, "nothing within the deadline");
    assert_eq!(*seen.lock().unwrap(), [HeadRefusal::Timeout]);
}
