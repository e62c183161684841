//! A SPDY/3.1 client session, as much of it as the kubelet's streaming protocols use: the API
//! server opens streams (SYN_STREAM with a header block), sends data with or without FIN,
//! resets streams, answers PINGs, and reads what the kubelet sends on each stream. Header
//! blocks travel through one zlib stream per direction, seeded with the protocol's fixed
//! dictionary. Flow control (WINDOW_UPDATE) is not kept: the Go implementation on the other
//! side (spdystream) neither enforces nor sends windows.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u8 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status codes.
const REFUSED_STREAM: u32 = 3;
const CANCEL: u32 = 5;
/// The largest payload of one frame this side sends.
const MAX_DATA: usize = 32 * 1024;
/// The largest frame accepted (the length field has 24 bits).
const MAX_FRAME: usize = 0xff_ffff;

/// The header-compression dictionary of SPDY/3 (section 2.6.10.1 of the draft): header names
/// and values as length-prefixed strings, then common text.
static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TEXT: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
        "charset=iso-8859-1,utf-,*,enq=0."
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TEXT.as_bytes());
    d
});

/// The sending half: frames are written whole, in the order their header blocks were
/// compressed (one zlib stream for the whole session).
struct Writer {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    deflate: Compress,
    next_id: u32,
}

impl Writer {
    fn compress(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut pos = 0;
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&block[pos..], &mut out, FlushCompress::Sync)
                .map_err(io::Error::other)?;
            pos += usize::try_from(self.deflate.total_in() - before).unwrap_or(0);
            if pos >= block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(256));
        }
    }

    async fn frame(&mut self, head: [u8; 4], flags: u8, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l as usize <= MAX_FRAME)
            .ok_or_else(|| io::Error::other("SPDY frame too large"))?;
        let mut buf = Vec::with_capacity(8 + payload.len());
        buf.extend_from_slice(&head);
        buf.push(flags);
        buf.extend_from_slice(&len.to_be_bytes()[1..]);
        buf.extend_from_slice(payload);
        self.io.write_all(&buf).await?;
        self.io.flush().await
    }

    async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> io::Result<()> {
        let k = kind.to_be_bytes();
        self.frame([0x80, VERSION, k[0], k[1]], flags, payload)
            .await
    }
}

fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

type Streams = Arc<Mutex<HashMap<u32, mpsc::Sender<Bytes>>>>;

/// Frames buffered per stream before the session stops reading (backpressure: a slow client
/// slows the kubelet down instead of growing memory).
const STREAM_BUFFER: usize = 64;

/// One client session over an upgraded connection. Cloning shares it.
#[derive(Clone)]
pub struct Session {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    streams: Streams,
}

impl Session {
    /// Starts the session on `io` (the connection after `101 Switching Protocols`); a task
    /// reads frames until the connection ends, which ends every stream.
    pub fn start<T>(io: T) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let mut deflate = Compress::new(Compression::default(), true);
        // Only fails on a compressor already in use.
        let _ = deflate.set_dictionary(&DICTIONARY);
        let session = Session {
            writer: Arc::new(tokio::sync::Mutex::new(Writer {
                io: Box::new(write),
                deflate,
                next_id: 1,
            })),
            streams: Arc::new(Mutex::new(HashMap::new())),
        };
        let reader = session.clone();
        tokio::spawn(async move {
            if let Err(e) = reader.read_frames(read).await {
                tracing::debug!(error = %e, "SPDY session ended");
            }
            if let Ok(mut s) = reader.streams.lock() {
                s.clear();
            }
        });
        session
    }

    /// Opens a stream with `headers`; its data arrive on the receiver, which ends with the
    /// stream (FIN, reset, or the end of the session).
    pub async fn open(&self, headers: &[(&str, &str)]) -> io::Result<(u32, mpsc::Receiver<Bytes>)> {
        let mut w = self.writer.lock().await;
        let id = w.next_id;
        w.next_id += 2;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if let Ok(mut s) = self.streams.lock() {
            s.insert(id, tx);
        }
        let block = w.compress(&header_block(headers))?;
        let mut payload = Vec::with_capacity(10 + block.len());
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
        payload.extend_from_slice(&block);
        w.control(SYN_STREAM, 0, &payload).await?;
        Ok((id, rx))
    }

    /// Sends `data` on stream `id`; `fin` half-closes the stream after it.
    pub async fn send(&self, id: u32, data: &[u8], fin: bool) -> io::Result<()> {
        let mut w = self.writer.lock().await;
        let head = (id & 0x7fff_ffff).to_be_bytes();
        let mut chunks = data.chunks(MAX_DATA).peekable();
        if chunks.peek().is_none() {
            return w.frame(head, if fin { FLAG_FIN } else { 0 }, &[]).await;
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            w.frame(head, if fin && last { FLAG_FIN } else { 0 }, c)
                .await?;
        }
        Ok(())
    }

    /// Resets stream `id` (CANCEL).
    pub async fn reset(&self, id: u32) -> io::Result<()> {
        if let Ok(mut s) = self.streams.lock() {
            s.remove(&id);
        }
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&CANCEL.to_be_bytes());
        self.writer
            .lock()
            .await
            .control(RST_STREAM, 0, &payload)
            .await
    }

    /// Closes the connection (the kubelet ends every stream of it).
    pub async fn close(&self) {
        let _ = self.writer.lock().await.io.shutdown().await;
    }

    async fn deliver(&self, id: u32, data: Bytes, fin: bool) {
        let tx = self.streams.lock().ok().and_then(|mut s| {
            if fin {
                s.remove(&id)
            } else {
                s.get(&id).cloned()
            }
        });
        if let Some(tx) = tx
            && !data.is_empty()
        {
            // A receiver that is gone (a stream nobody reads) drops the data.
            let _ = tx.send(data).await;
        }
    }

    async fn read_frames<R: AsyncRead + Unpin>(&self, mut r: R) -> io::Result<()> {
        let mut inflate = Inflater(Decompress::new(true));
        loop {
            let mut head = [0u8; 8];
            match r.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let flags = head[4];
            let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            let mut payload = vec![0u8; len];
            r.read_exact(&mut payload).await?;
            let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            if head[0] & 0x80 == 0 {
                self.deliver(
                    word & 0x7fff_ffff,
                    Bytes::from(payload),
                    flags & FLAG_FIN != 0,
                )
                .await;
                continue;
            }
            let id = || {
                payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]))
                    .ok_or_else(|| io::Error::other("short SPDY control frame"))
            };
            match (word & 0xffff) as u16 {
                SYN_REPLY | HEADERS => {
                    // The header block must go through the decompressor even if unused.
                    inflate.block(payload.get(4..).unwrap_or_default())?;
                    if flags & FLAG_FIN != 0 {
                        self.deliver(id()?, Bytes::new(), true).await;
                    }
                }
                SYN_STREAM => {
                    // The kubelet never opens streams; refuse any.
                    inflate.block(payload.get(10..).unwrap_or_default())?;
                    let mut p = id()?.to_be_bytes().to_vec();
                    p.extend_from_slice(&REFUSED_STREAM.to_be_bytes());
                    self.writer.lock().await.control(RST_STREAM, 0, &p).await?;
                }
                RST_STREAM => self.deliver(id()?, Bytes::new(), true).await,
                PING => self.writer.lock().await.control(PING, 0, &payload).await?,
                GOAWAY => return Ok(()),
                _ => {}
            }
        }
    }
}

/// The receiving zlib stream of header blocks.
struct Inflater(Decompress);

impl Inflater {
    fn block(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0;
        loop {
            let before = self.0.total_in();
            let res = self
                .0
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += usize::try_from(self.0.total_in() - before).unwrap_or(0);
            match res {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {
                    if pos >= input.len() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if out.len() > MAX_FRAME {
                        return Err(io::Error::other("SPDY header block too large"));
                    }
                    out.reserve(out.capacity().max(256));
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(&DICTIONARY)
                        .map_err(io::Error::other)?;
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// Parses a header block (tests and debugging).
#[cfg(test)]
fn parse_block(b: &[u8]) -> Vec<(String, String)> {
    let count = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut out = Vec::new();
    let mut rest = &b[4..];
    for _ in 0..count {
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let k = String::from_utf8_lossy(&rest[4..4 + n]).to_string();
        rest = &rest[4 + n..];
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let v = String::from_utf8_lossy(&rest[4..4 + n]).to_string();
        rest = &rest[4 + n..];
        out.push((k, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specified_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(DICTIONARY.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn header_blocks_survive_the_shared_zlib_streams() {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(&DICTIONARY).unwrap();
        let mut w = Writer {
            io: Box::new(tokio::io::sink()),
            deflate,
            next_id: 1,
        };
        let mut inflate = Inflater(Decompress::new(true));
        for (i, kind) in ["error", "stdin", "stdout", "stderr"].iter().enumerate() {
            let n = i.to_string();
            let headers = [("streamType", *kind), ("requestID", n.as_str())];
            let wire = w.compress(&header_block(&headers)).unwrap();
            if i == 0 {
                // zlib with a preset dictionary (FDICT) as Go's spdystream expects.
                assert_eq!(wire[1] & 0x20, 0x20);
            }
            let back = parse_block(&inflate.block(&wire).unwrap());
            assert_eq!(
                back,
                vec![
                    ("streamtype".to_string(), kind.to_string()),
                    ("requestid".to_string(), n)
                ]
            );
        }
    }
}
