//! Reading one output pipe of a command to its end: the last
//! [`TAIL_BYTES`] for the result, the whole stream (up to the cap) spooled to
//! an unlinked file, and live batches every [`FLUSH_EVERY`] or
//! [`BATCH_BYTES`]. Memory per stream stays a few buffers, whatever the
//! command prints; binary output and lines without newlines are just bytes.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use hwsched_proto::v1::OutputStream;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::live::{LiveStream, Publisher};

/// Bytes of stdout/stderr kept for the result's tails.
pub const TAIL_BYTES: usize = 4096;
/// A live batch is sent at this size...
pub const BATCH_BYTES: usize = 64 * 1024;
/// ...or this long after its first byte, whichever comes first.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Where one attempt's output goes: made by the executor, consumed by `process::start`.
#[derive(Debug)]
pub struct Capture {
    cap: u64,
    spool_dir: PathBuf,
    live: Option<(LiveStream, LiveStream, Publisher)>,
}

impl Capture {
    /// Spools up to `cap` bytes per stream in `spool_dir`; with `live`, sends batches too.
    pub fn new(cap: u64, spool_dir: &Path, live: Option<(LiveStream, LiveStream, Publisher)>) -> Self {
        Self { cap, spool_dir: spool_dir.to_path_buf(), live }
    }

    /// The two sinks (stdout, stderr) and the live publisher to drain at the end.
    pub fn split(self) -> (Sink, Sink, Option<Publisher>) {
        let (out_live, err_live, publisher) = match self.live {
            Some((o, e, p)) => (Some(o), Some(e), Some(p)),
            None => (None, None, None),
        };
        let sink = |stream, live| Sink { stream, cap: self.cap, spool_dir: self.spool_dir.clone(), live };
        (sink(OutputStream::Stdout, out_live), sink(OutputStream::Stderr, err_live), publisher)
    }
}

/// Both streams of an attempt once its command ended, and where it ran.
#[derive(Debug, Default)]
pub struct Streams {
    /// Standard output.
    pub stdout: Captured,
    /// Standard error.
    pub stderr: Captured,
    /// The live publisher, to drain before the result goes out.
    pub publisher: Option<Publisher>,
    /// The working directory it ran in (`None`: the monitor's own).
    pub workdir: Option<PathBuf>,
}

/// What one stream left once it closed.
#[derive(Debug, Default)]
pub struct Captured {
    /// Its last [`TAIL_BYTES`] (the real end of the output, also past the cap).
    pub tail: Vec<u8>,
    /// Every byte the command wrote to it.
    pub total: u64,
    /// The spool: the first `cap` bytes, then the truncation marker if any;
    /// `None` when the stream was empty (no file is made for it) or, with
    /// `error`, when it could not be written.
    pub spool: Option<std::fs::File>,
    /// Bytes in the spool.
    pub spooled: u64,
    /// Why the spool is missing or incomplete.
    pub error: Option<String>,
}

impl Captured {
    /// The tail as text (invalid UTF-8 replaced).
    pub fn tail_text(&self) -> String {
        String::from_utf8_lossy(&self.tail).into_owned()
    }
}

/// The line that ends a spool cut at `cap` bytes, `more` bytes having been left out.
pub fn truncation_marker(cap: u64, more: u64) -> String {
    format!("\n[hwsched: output truncated after {cap} bytes; {more} more bytes not kept]\n")
}

/// Reads one pipe: see the module documentation.
#[derive(Debug)]
pub struct Sink {
    stream: OutputStream,
    cap: u64,
    spool_dir: PathBuf,
    live: Option<LiveStream>,
}

/// The spool file and what went into it; the file is made on the first
/// byte, so a stream that stays empty costs no file.
struct Spool {
    dir: PathBuf,
    file: Option<tokio::fs::File>,
    written: u64,
    error: Option<String>,
}

impl Spool {
    fn new(dir: &Path) -> Self {
        Spool { dir: dir.to_path_buf(), file: None, written: 0, error: None }
    }

    async fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let f = match self.file.as_mut() {
            Some(f) => f,
            None => match tempfile::tempfile_in(&self.dir) {
                Ok(f) => self.file.insert(tokio::fs::File::from_std(f)),
                Err(e) => {
                    self.error = Some(format!("no spool file in {}: {e}", self.dir.display()));
                    return;
                }
            },
        };
        match f.write_all(data).await {
            Ok(()) => self.written += data.len() as u64,
            Err(e) => {
                self.error = Some(format!("spool write failed after {} bytes: {e}", self.written));
                self.file = None;
            }
        }
    }

    async fn close(mut self) -> (Option<std::fs::File>, u64, Option<String>) {
        let Some(mut f) = self.file.take() else { return (None, self.written, self.error) };
        if let Err(e) = f.flush().await {
            return (None, self.written, Some(format!("spool flush failed: {e}")));
        }
        (Some(f.into_std().await), self.written, self.error)
    }
}

impl Sink {
    /// Reads `r` to its end (or until `stop`, when something outside the
    /// command's process group still holds the pipe open).
    pub async fn run<R: AsyncRead + Unpin>(mut self, r: Option<R>, stop: CancellationToken) -> Captured {
        let mut spool = Spool::new(&self.spool_dir);
        let mut tail: Vec<u8> = Vec::with_capacity(2 * TAIL_BYTES);
        let (mut total, mut kept) = (0u64, 0u64);
        let mut batch: Vec<u8> = Vec::new();
        let mut batch_offset = 0u64;
        let mut deadline: Option<Instant> = None;
        let mut buf = vec![0u8; BATCH_BYTES];
        if let Some(mut r) = r {
            loop {
                tokio::select! {
                    read = r.read(&mut buf) => {
                        let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                        let data = &buf[..n];
                        total += n as u64;
                        tail.extend_from_slice(data);
                        if tail.len() > TAIL_BYTES {
                            tail.drain(..tail.len() - TAIL_BYTES);
                        }
                        let keep = (self.cap.saturating_sub(kept)).min(n as u64) as usize;
                        if keep == 0 {
                            continue;
                        }
                        spool.write(&data[..keep]).await;
                        if self.live.is_some() {
                            if batch.is_empty() {
                                batch_offset = kept;
                                deadline = Some(Instant::now() + FLUSH_EVERY);
                            }
                            batch.extend_from_slice(&data[..keep]);
                            if batch.len() >= BATCH_BYTES {
                                self.send(batch_offset, &mut batch, &mut deadline);
                            }
                        }
                        kept += keep as u64;
                    }
                    _ = sleep_until(deadline) => self.send(batch_offset, &mut batch, &mut deadline),
                    _ = stop.cancelled() => break,
                }
            }
        }
        let marker = (total > kept).then(|| truncation_marker(self.cap, total - kept));
        if let Some(m) = &marker {
            spool.write(m.as_bytes()).await;
        }
        if let Some(live) = self.live.take() {
            if batch.is_empty() {
                batch_offset = kept;
            }
            batch.extend_from_slice(marker.as_deref().unwrap_or("").as_bytes());
            live.finish(batch_offset, batch, total).await;
        }
        let (spool, spooled, error) = spool.close().await;
        if let Some(e) = &error {
            tracing::warn!(stream = ?self.stream, error = %e, "output spool incomplete: the stored log will miss output");
        }
        Captured { tail, total, spool, spooled, error }
    }

    fn send(&mut self, offset: u64, batch: &mut Vec<u8>, deadline: &mut Option<Instant>) {
        *deadline = None;
        if let Some(live) = self.live.as_mut() {
            if !batch.is_empty() {
                live.send(offset, std::mem::take(batch));
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek};

    use super::*;

    fn spooled(c: &mut Captured) -> Vec<u8> {
        let f = c.spool.as_mut().expect("spool");
        f.rewind().expect("rewind");
        let mut v = Vec::new();
        f.read_to_end(&mut v).expect("read spool");
        v
    }

    async fn capture(cap: u64, input: Vec<u8>) -> Captured {
        let dir = tempfile::tempdir().expect("dir");
        let (out, _err, _) = Capture::new(cap, dir.path(), None).split();
        out.run(Some(&input[..]), CancellationToken::new()).await
    }

    #[tokio::test]
    async fn binary_output_is_spooled_whole_and_the_tail_kept() {
        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut c = capture(1 << 20, input.clone()).await;
        assert_eq!(c.total, 300_000);
        assert_eq!(spooled(&mut c), input);
        assert_eq!(c.tail, input[input.len() - TAIL_BYTES..]);
        assert!(c.error.is_none());
    }

    #[tokio::test]
    async fn an_empty_stream_makes_no_spool_file() {
        let dir = tempfile::tempdir().expect("dir");
        let (out, _err, _) = Capture::new(1 << 20, dir.path(), None).split();
        let c = out.run(Some(&b""[..]), CancellationToken::new()).await;
        assert_eq!((c.total, c.spooled), (0, 0));
        assert!(c.spool.is_none() && c.error.is_none(), "{:?}", c.error);
        // and one byte does make one
        let c = capture(1 << 20, b"x".to_vec()).await;
        assert!(c.spool.is_some() && c.spooled == 1);
    }

    #[tokio::test]
    async fn output_over_the_cap_is_cut_with_a_marker_and_still_counted() {
        let input = vec![b'x'; 10_000];
        let mut c = capture(1000, input).await;
        assert_eq!(c.total, 10_000);
        let s = spooled(&mut c);
        let marker = truncation_marker(1000, 9000);
        assert_eq!(s.len(), 1000 + marker.len());
        assert!(s.ends_with(b"\n[hwsched: output truncated after 1000 bytes; 9000 more bytes not kept]\n"));
        assert_eq!(c.spooled, s.len() as u64);
    }

    #[tokio::test]
    async fn live_batches_carry_every_kept_byte_in_order_then_the_end() {
        let dir = tempfile::tempdir().expect("dir");
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let live = LiveStream::for_tests(tx, OutputStream::Stdout);
        let sink = Sink { stream: OutputStream::Stdout, cap: 200_000, spool_dir: dir.path().into(), live: Some(live) };
        let input: Vec<u8> = (0..250_000u32).map(|i| (i % 7) as u8).collect();
        let c = sink.run(Some(&input[..]), CancellationToken::new()).await;
        assert_eq!(c.total, 250_000);
        let mut got = Vec::new();
        let mut last = None;
        while let Ok(chunk) = rx.try_recv() {
            assert_eq!(chunk.offset as usize, got.len().min(200_000));
            assert!(chunk.data.len() <= BATCH_BYTES + 200, "{}", chunk.data.len());
            got.extend_from_slice(&chunk.data);
            last = Some(chunk);
        }
        let last = last.expect("chunks");
        assert!(last.eof && last.total_bytes == 250_000 && last.dropped == 0, "{last:?}");
        assert_eq!(&got[..200_000], &input[..200_000]);
        assert!(got[200_000..].starts_with(b"\n[hwsched: output truncated after 200000 bytes; 50000 more"));
    }
}
