//! `kubectl exec` from kubectl before 1.30: the same session over SPDY/3.1 (the draft-3
//! framing that moby/spdystream speaks) in the `v4.channel.k8s.io` protocol. The client
//! opens one stream per channel (a SYN_STREAM whose `streamtype` header says which: error,
//! stdin, stdout, stderr, resize); we answer each with a SYN_REPLY, carry the channels as
//! data frames, end stdin at the client's FIN, write the outcome on the error stream and
//! close every stream with a FIN. Header blocks are zlib streams, one per direction, with
//! SPDY/3's preset dictionary. Flow control is not used (spdystream sends none).

use std::collections::HashMap;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use runtime::{Pod, Runtime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::{ERROR, ExecRequest, RESIZE, STDERR, STDIN, STDOUT, Session};

/// SPDY/3's zlib dictionary for header blocks (draft 3, section 2.6.10.1): 1423 bytes.
const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");

pub const PROTOCOL: &str = "v4.channel.k8s.io";

pub(super) const SYN_STREAM: u16 = 1;
pub(super) const SYN_REPLY: u16 = 2;
pub(super) const RST_STREAM: u16 = 3;
pub(super) const PING: u16 = 6;
pub(super) const GOAWAY: u16 = 7;
pub(super) const FLAG_FIN: u8 = 1;
/// Largest frame we accept (spdystream sends data in frames of at most 16 MiB − 1).
const MAX_FRAME: usize = 1 << 24;
/// kubelet's streamCreationTimeout.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, PartialEq)]
pub(super) enum Frame {
    Control { kind: u16, flags: u8, payload: Vec<u8> },
    Data { stream: u32, flags: u8, data: Vec<u8> },
}

pub(super) async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Frame> {
    let mut head = [0u8; 8];
    reader.read_exact(&mut head).await?;
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if length > MAX_FRAME {
        return Err(std::io::Error::other(format!("a SPDY frame of {length} bytes")));
    }
    let mut payload = vec![0; length];
    reader.read_exact(&mut payload).await?;
    let flags = head[4];
    if head[0] & 0x80 != 0 {
        Ok(Frame::Control { kind: u16::from_be_bytes([head[2], head[3]]), flags, payload })
    } else {
        Ok(Frame::Data { stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]), flags, data: payload })
    }
}

pub(super) fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80, 3];
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

pub(super) fn data_frame(stream: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    frame.push(flags);
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(data);
    frame
}

pub(super) fn stream_id(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) & 0x7fff_ffff)
}

/// Reads the header blocks of one direction.
pub(super) struct HeaderDecoder(Decompress);

impl HeaderDecoder {
    pub(super) fn new() -> HeaderDecoder {
        HeaderDecoder(Decompress::new(true))
    }

    pub(super) fn decode(&mut self, mut block: &[u8]) -> Option<Vec<(String, String)>> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        while !block.is_empty() {
            if plain.capacity() == plain.len() {
                plain.reserve(plain.len().max(256));
            }
            let before = self.0.total_in();
            match self.0.decompress_vec(block, &mut plain, FlushDecompress::Sync) {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0.set_dictionary(DICTIONARY).ok()?;
                }
                Err(_) => return None,
            }
            block = &block[(self.0.total_in() - before) as usize..];
        }
        parse_headers(&plain)
    }
}

/// `count, (name length, name, value length, value)...`, all lengths 32-bit big-endian.
fn parse_headers(mut plain: &[u8]) -> Option<Vec<(String, String)>> {
    let mut take = |n: usize| -> Option<&[u8]> {
        let (taken, rest) = (plain.get(..n)?, plain.get(n..)?);
        plain = rest;
        Some(taken)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let mut field = || -> Option<String> {
            let length = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
            String::from_utf8(take(length)?.to_vec()).ok()
        };
        headers.push((field()?, field()?));
    }
    Some(headers)
}

/// Writes the header blocks of the other direction.
pub(super) struct HeaderEncoder(Compress);

impl HeaderEncoder {
    pub(super) fn new() -> HeaderEncoder {
        let mut compress = Compress::new(Compression::best(), true);
        compress.set_dictionary(DICTIONARY).expect("a zlib stream takes a dictionary before any data");
        HeaderEncoder(compress)
    }

    pub(super) fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for field in [name, value] {
                plain.extend_from_slice(&(field.len() as u32).to_be_bytes());
                plain.extend_from_slice(field.as_bytes());
            }
        }
        let mut compressed = Vec::with_capacity(plain.len() + 64);
        let mut input = plain.as_slice();
        loop {
            let before = self.0.total_in();
            let status = self.0.compress_vec(input, &mut compressed, FlushCompress::Sync);
            input = &input[(self.0.total_in() - before) as usize..];
            // Done once the input is in and the flush left room to spare.
            if input.is_empty() && compressed.len() < compressed.capacity() || !matches!(status, Ok(Status::Ok)) {
                return compressed;
            }
            compressed.reserve(256);
        }
    }
}

/// Serves the exec over an upgraded connection until the command has exited and its
/// output and outcome are sent, or the client goes away.
pub async fn serve<T>(io: T, runtime: Runtime, pod: Pod, container: String, request: ExecRequest)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let (frames_tx, mut frames) = mpsc::channel::<Frame>(64);
    let reading = tokio::spawn(async move {
        while let Ok(frame) = read_frame(&mut reader).await {
            if frames_tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let mut decoder = HeaderDecoder::new();
    let mut encoder = HeaderEncoder::new();
    let mut wanted = vec![ERROR];
    wanted.extend(request.stdin.then_some(STDIN));
    wanted.extend(request.stdout.then_some(STDOUT));
    wanted.extend((request.stderr && !request.tty).then_some(STDERR));
    wanted.extend(request.tty.then_some(RESIZE));
    // Stream id → channel, and back.
    let mut channels: HashMap<u32, u8> = HashMap::new();
    let streams_ready = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while !wanted.iter().all(|c| channels.values().any(|v| v == c)) {
            let Some(frame) = frames.recv().await else { return false };
            if let Frame::Control { kind: SYN_STREAM, payload, .. } = &frame {
                let (Some(stream), Some(headers)) =
                    (stream_id(payload), payload.get(10..).and_then(|b| decoder.decode(b)))
                else {
                    return false;
                };
                let kind = headers.iter().find(|(n, _)| n == "streamtype").map(|(_, v)| v.as_str());
                let Some(channel) = kind.and_then(channel_of) else { return false };
                channels.insert(stream, channel);
                let mut reply = stream.to_be_bytes().to_vec();
                reply.extend_from_slice(&encoder.encode(&[]));
                if writer.write_all(&control_frame(SYN_REPLY, 0, &reply)).await.is_err() {
                    return false;
                }
            } else if answer_ping(&frame, &mut writer).await.is_err() {
                return false;
            }
        }
        true
    })
    .await;
    if streams_ready != Ok(true) {
        reading.abort();
        return;
    }
    let stream_of = |channel: u8| channels.iter().find(|(_, c)| **c == channel).map(|(s, _)| *s);
    let mut session = Session::start(runtime, pod, container, request);
    let input = session.stdin_queue();
    let mut resizes = Vec::new();
    loop {
        tokio::select! {
            message = session.to_client.recv() => match message {
                Some(message) => {
                    let Some(stream) = message.first().and_then(|c| stream_of(*c)) else { continue };
                    if writer.write_all(&data_frame(stream, 0, &message[1..])).await.is_err() {
                        break;
                    }
                }
                None => {
                    // Every stream ends with a FIN: the client reads the outcome to its end.
                    for stream in channels.keys() {
                        let _ = writer.write_all(&data_frame(*stream, FLAG_FIN, &[])).await;
                    }
                    let last = channels.keys().max().copied().unwrap_or(0);
                    let _ = writer.write_all(&control_frame(GOAWAY, 0, &[last.to_be_bytes(), [0; 4]].concat())).await;
                    let _ = writer.shutdown().await;
                    break;
                }
            },
            () = input.drained(), if !input.has_room() => {}
            frame = frames.recv(), if input.has_room() => match frame {
                Some(Frame::Data { stream, flags, data }) => match channels.get(&stream) {
                    Some(&STDIN) => {
                        session.stdin(&data);
                        if flags & FLAG_FIN != 0 {
                            session.close_stdin();
                        }
                    }
                    Some(&RESIZE) => {
                        // remotecommand sends one JSON object per line.
                        resizes.extend_from_slice(&data);
                        while let Some(end) = resizes.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = resizes.drain(..=end).collect();
                            session.resize(&line);
                        }
                    }
                    _ => {}
                },
                Some(Frame::Control { kind: RST_STREAM | GOAWAY, .. }) | None => break,
                Some(frame) => if answer_ping(&frame, &mut writer).await.is_err() { break },
            },
        }
    }
    reading.abort();
    session.finish();
}

/// The client's PINGs come back as they were.
pub(super) async fn answer_ping(frame: &Frame, writer: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
    match frame {
        Frame::Control { kind: PING, payload, .. } => writer.write_all(&control_frame(PING, 0, payload)).await,
        _ => Ok(()),
    }
}

fn channel_of(stream_type: &str) -> Option<u8> {
    match stream_type {
        "error" => Some(ERROR),
        "stdin" => Some(STDIN),
        "stdout" => Some(STDOUT),
        "stderr" => Some(STDERR),
        "resize" => Some(RESIZE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options") && DICTIONARY.ends_with(b",*,enq=0."));
    }

    /// Header blocks round-trip through one stream per direction, the second block
    /// compressed against the first as SPDY's shared context wants.
    #[test]
    fn header_blocks_round_trip() {
        let (mut encoder, mut decoder) = (HeaderEncoder::new(), HeaderDecoder::new());
        for stream_type in ["error", "stdin", "stdout"] {
            let block = encoder.encode(&[("streamtype", stream_type), ("port", "")]);
            let headers = decoder.decode(&block).unwrap();
            assert_eq!(headers, [("streamtype".to_string(), stream_type.to_string()), ("port".into(), "".into())]);
        }
        assert!(decoder.decode(b"not zlib").is_none());
    }

    #[tokio::test]
    async fn frames_read_as_written() {
        let mut wire = control_frame(SYN_REPLY, 0, &[0, 0, 0, 3]);
        wire.extend(data_frame(3, FLAG_FIN, b"hello"));
        let mut reader = wire.as_slice();
        let control = read_frame(&mut reader).await.unwrap();
        assert_eq!(control, Frame::Control { kind: SYN_REPLY, flags: 0, payload: vec![0, 0, 0, 3] });
        let data = read_frame(&mut reader).await.unwrap();
        assert_eq!(data, Frame::Data { stream: 3, flags: FLAG_FIN, data: b"hello".to_vec() });
        assert!(read_frame(&mut reader).await.is_err(), "the end of the wire is an error");
    }
}
