//! The OTLP/gRPC listener's HTTP/2 settings, read off the wire: frames and
//! flow-control windows sized so that a 100-500 KB request, even 8 of them
//! at once on one connection, arrives in one DATA frame each (the receiver
//! then takes it without a copy).

use crate::common;

use common::Sidecar;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
const ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
/// Every connection and stream starts with this window (RFC 9113 6.9.2).
const DEFAULT_WINDOW: u32 = 65_535;

/// One HTTP/2 frame: type, flags, stream id, payload.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Reads whole frames until `done` says enough or `deadline` passes.
fn read_frames(
    s: &mut TcpStream,
    deadline: Duration,
    done: impl Fn(&[Frame]) -> bool,
) -> Vec<Frame> {
    let end = Instant::now() + deadline;
    let (mut buf, mut frames) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    while !done(&frames) && Instant::now() < end {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            frames.push(Frame {
                kind: buf[3],
                flags: buf[4],
                stream,
                payload: buf[9..9 + len].to_vec(),
            });
            buf.drain(..9 + len);
        }
    }
    frames
}

/// The server's SETTINGS as (identifier, value) pairs.
fn settings(f: &Frame) -> Vec<(u16, u32)> {
    f.payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

fn is_server_settings(f: &Frame) -> bool {
    f.kind == SETTINGS && f.flags & ACK == 0
}

fn is_conn_window_update(f: &Frame) -> bool {
    f.kind == WINDOW_UPDATE && f.stream == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_listener_advertises_1_mib_frames_and_a_4_mib_connection_window() {
    let sc = Sidecar::start("").await;
    let mut s = TcpStream::connect(sc.grpc).expect("connect");
    // the client preface and an empty SETTINGS frame
    s.write_all(PREFACE).expect("preface");
    s.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])
        .expect("settings");
    let frames = read_frames(&mut s, Duration::from_secs(10), |fs| {
        fs.iter().any(is_server_settings) && fs.iter().any(is_conn_window_update)
    });
    let server = frames
        .iter()
        .find(|f| is_server_settings(f))
        .map(settings)
        .expect("the server's SETTINGS frame");
    let value = |id| server.iter().rev().find(|(k, _)| *k == id).map(|(_, v)| *v);
    assert_eq!(value(SETTINGS_MAX_FRAME_SIZE), Some(1 << 20), "{server:?}");
    assert_eq!(
        value(SETTINGS_INITIAL_WINDOW_SIZE),
        Some(1 << 20),
        "{server:?}"
    );
    // the connection window grows from the default by WINDOW_UPDATE on stream 0
    let grown: u32 = frames
        .iter()
        .filter(|f| is_conn_window_update(f))
        .map(|f| {
            let p = &f.payload;
            u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff
        })
        .sum();
    assert_eq!(DEFAULT_WINDOW + grown, 4 << 20, "connection window");
}
