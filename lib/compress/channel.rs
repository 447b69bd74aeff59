//! A bounded byte pipe between threads: the downloader writes ranges in order into one
//! end, a decoder thread reads a plain `Read` from the other. Used by s3get and by
//! zsnap-health --deep, which both decode while downloading.

use std::io::{Read, Write};
use std::sync::mpsc;

/// The two ends of a pipe holding at most `depth` chunks in flight.
pub fn channel(depth: usize) -> (ChannelWriter, ChannelReader) {
    let (tx, rx) = mpsc::sync_channel(depth);
    (ChannelWriter { tx }, ChannelReader { rx, cur: Vec::new(), at: 0 })
}

/// The largest piece sent at once: what the pipe holds is at most `depth` of these (plus
/// the one being read), whatever size the writer's writes are (s3get writes whole ranges).
pub const PIECE: usize = 1 << 20;

/// The download side. A gone decoder looks like a closed pipe (BrokenPipe) to the
/// downloader, which then stops; the decoder's own error says why.
pub struct ChannelWriter {
    tx: mpsc::SyncSender<Vec<u8>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(PIECE);
        self.tx
            .send(data[..n].to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "decoder stopped"))?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The decoder side: the chunks in order, ending when the writer is dropped.
pub struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    /// The next piece whole, as the writer sent it (what is left of it after reads);
    /// `None` at the end.
    pub fn next_piece(&mut self) -> Option<Vec<u8>> {
        if self.at < self.cur.len() {
            let rest = std::mem::take(&mut self.cur).split_off(self.at);
            self.at = 0;
            return Some(rest);
        }
        self.rx.recv().ok()
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.cur = next;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = (self.cur.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_a_gone_reader_is_a_broken_pipe() {
        let (mut w, mut r) = channel(4);
        w.write_all(b"abc").unwrap();
        w.write_all(b"de").unwrap();
        drop(w);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abcde");
        let (mut w, mut r) = channel(4);
        w.write_all(b"abc").unwrap();
        w.write_all(b"de").unwrap();
        drop(w);
        let mut one = [0u8; 1];
        r.read_exact(&mut one).unwrap();
        assert_eq!(
            (r.next_piece(), r.next_piece(), r.next_piece()),
            (Some(b"bc".to_vec()), Some(b"de".to_vec()), None)
        );
        let (mut w, r) = channel(1);
        drop(r);
        assert_eq!(w.write(b"x").unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    }
}
