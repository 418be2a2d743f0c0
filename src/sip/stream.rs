//! SIP over a byte stream (TCP), sans-IO: bytes and `now` in, whole messages
//! out, and the instant the connection must close. A message must be whole,
//! head and body, within `message_deadline` of its first byte however slowly
//! it trickles (a per-read timer would let one byte every few seconds hold a
//! connection for ever); a connection with no message under way closes after
//! `idle`. The blank line that ends a head is searched for once per byte,
//! not from the start of the buffer on every read (quadratic on a drip).

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::message::{find_head_end_from, framed_size, ParseError};

/// The bounds one connection lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Largest message (head and body) accepted.
    pub max_message: usize,
    /// From a message's first byte to its last.
    pub message_deadline: Duration,
    /// With no message under way, since the last bytes arrived.
    pub idle: Duration,
}

/// Why a connection must close. Every variant ends that connection only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamClosed {
    #[error("message not whole within {0:?} of its first byte")]
    MessageDeadline(Duration),
    #[error("no message for {0:?}")]
    Idle(Duration),
    #[error("{0}")]
    Framing(#[from] ParseError),
}

/// One connection's framing state.
#[derive(Debug)]
pub struct StreamFramer {
    limits: StreamLimits,
    buf: BytesMut,
    /// Bytes at the front of `buf` already searched for the end of the head.
    scanned: usize,
    /// The whole size of the message at the front, once its head is in.
    size: Option<usize>,
    /// When the first byte of the message at the front arrived.
    started: Option<Instant>,
    last_input: Instant,
    closed: Option<StreamClosed>,
}

fn is_keepalive_byte(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

impl StreamFramer {
    pub fn new(now: Instant, limits: StreamLimits) -> StreamFramer {
        StreamFramer {
            limits,
            buf: BytesMut::with_capacity(4096),
            scanned: 0,
            size: None,
            started: None,
            last_input: now,
            closed: None,
        }
    }

    /// Bytes read from the connection at `now`. The caller polls messages
    /// after each input, so the buffer holds at most one message plus one
    /// read (a head that grows past the limit is refused at the next poll).
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.closed.is_some() || data.is_empty() {
            return;
        }
        self.last_input = now;
        // CRLF keep-alives (RFC 5626 §4.4.1) between messages start nothing.
        if self.started.is_none() && !data.iter().all(|b| is_keepalive_byte(*b)) {
            self.started = Some(now);
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, or why the connection must close (once; then
    /// `None` for ever). `None` while a message is still incomplete.
    pub fn poll_message(&mut self) -> Option<Result<Bytes, StreamClosed>> {
        if self.closed.is_some() {
            return None;
        }
        match self.next_message() {
            Ok(Some(message)) => Some(Ok(message)),
            Ok(None) => None,
            Err(e) => {
                let closed = StreamClosed::Framing(e);
                self.closed = Some(closed.clone());
                Some(Err(closed))
            }
        }
    }

    fn next_message(&mut self) -> Result<Option<Bytes>, ParseError> {
        if self.size.is_none() && self.scanned == 0 {
            let skip = self
                .buf
                .iter()
                .take_while(|b| is_keepalive_byte(**b))
                .count();
            self.buf.advance(skip);
        }
        if self.buf.is_empty() {
            self.started = None;
            return Ok(None);
        }
        let size = match self.size {
            Some(size) => size,
            None => match find_head_end_from(&self.buf, self.scanned) {
                Some(head_end) => {
                    let size = framed_size(&self.buf[..head_end], self.limits.max_message)?;
                    self.size = Some(size);
                    size
                }
                None => {
                    self.scanned = self.buf.len();
                    if self.buf.len() > self.limits.max_message {
                        return Err(ParseError::TooLarge(self.limits.max_message));
                    }
                    return Ok(None);
                }
            },
        };
        if self.buf.len() < size {
            return Ok(None);
        }
        let message = self.buf.split_to(size).freeze();
        self.size = None;
        self.scanned = 0;
        // Bytes after it arrived with the last read at the latest: the next
        // message's clock starts there.
        self.started = self
            .buf
            .iter()
            .any(|b| !is_keepalive_byte(*b))
            .then_some(self.last_input);
        Ok(Some(message))
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    pub fn poll_timeout(&self) -> Instant {
        match self.started {
            Some(first_byte) => first_byte + self.limits.message_deadline,
            None => self.last_input + self.limits.idle,
        }
    }

    /// Closes the connection when its deadline has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<StreamClosed> {
        if let Some(closed) = &self.closed {
            return Some(closed.clone());
        }
        if now < self.poll_timeout() {
            return None;
        }
        let closed = match self.started {
            Some(_) => StreamClosed::MessageDeadline(self.limits.message_deadline),
            None => StreamClosed::Idle(self.limits.idle),
        };
        self.closed = Some(closed.clone());
        Some(closed)
    }

    /// Bytes held for an incomplete message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StreamLimits = StreamLimits {
        max_message: 4096,
        message_deadline: Duration::from_secs(10),
        idle: Duration::from_secs(120),
    };

    fn options(body: &str) -> String {
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\n\
             Call-ID: x\r\nCSeq: 1 OPTIONS\r\nl: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn drain(f: &mut StreamFramer) -> Vec<Result<Bytes, StreamClosed>> {
        std::iter::from_fn(|| f.poll_message()).collect()
    }

    #[test]
    fn pipelined_messages_and_keepalives_come_out_whole_and_in_order() {
        let t0 = Instant::now();
        let mut f = StreamFramer::new(t0, LIMITS);
        let (a, b) = (options(""), options("v=0\r\n"));
        let input = format!("\r\n\r\n{a}\r\n{b}{}", &a[..10]);
        f.handle_input(t0, input.as_bytes());
        let out = drain(&mut f);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].as_ref().unwrap().as_ref(), a.as_bytes());
        assert_eq!(out[1].as_ref().unwrap().as_ref(), b.as_bytes());
        assert_eq!(f.buffered(), 10);
        f.handle_input(t0, &a.as_bytes()[10..]);
        let out = drain(&mut f);
        assert_eq!(out[0].as_ref().unwrap().as_ref(), a.as_bytes());
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn a_message_dripped_a_byte_at_a_time_is_framed_once_whole() {
        let t0 = Instant::now();
        let mut f = StreamFramer::new(t0, LIMITS);
        let m = options("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n");
        for (i, b) in m.as_bytes().iter().enumerate() {
            assert!(f.poll_message().is_none(), "framed early at byte {i}");
            f.handle_input(t0 + Duration::from_millis(i as u64), &[*b]);
        }
        let out = drain(&mut f);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap().as_ref(), m.as_bytes());
    }

    #[test]
    fn the_head_scan_looks_at_each_byte_once() {
        // A head that never ends, one byte per read: the scan resumes where
        // it stopped (less three bytes of overlap) instead of restarting.
        let t0 = Instant::now();
        let mut f = StreamFramer::new(t0, LIMITS);
        f.handle_input(t0, b"OPTIONS sip:a@b SIP/2.0\r\n");
        for _ in 0..1000 {
            f.handle_input(t0, b"X");
            assert!(f.poll_message().is_none());
            assert_eq!(f.scanned, f.buffered());
        }
        // The blank line split over three reads is still found.
        f.handle_input(t0, b": 1\r\nContent-Length: 0\r");
        assert!(f.poll_message().is_none());
        f.handle_input(t0, b"\n\r");
        assert!(f.poll_message().is_none());
        f.handle_input(t0, b"\n");
        assert!(matches!(f.poll_message(), Some(Ok(_))));
    }

    #[test]
    fn a_trickle_is_cut_at_the_deadline_from_its_first_byte() {
        let t0 = Instant::now();
        let mut f = StreamFramer::new(t0, LIMITS);
        let m = options("");
        // One byte a second: every read is "recent", but the message is not.
        for s in 0..10u64 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(f.handle_timeout(now), None, "closed early at {s} s");
            f.handle_input(now, &m.as_bytes()[s as usize..s as usize + 1]);
            assert!(f.poll_message().is_none());
        }
        assert_eq!(f.poll_timeout(), t0 + LIMITS.message_deadline);
        assert_eq!(
            f.handle_timeout(t0 + Duration::from_secs(10)),
            Some(StreamClosed::MessageDeadline(LIMITS.message_deadline))
        );
        // Closed: nothing more comes out, whatever arrives.
        f.handle_input(t0 + Duration::from_secs(11), &m.as_bytes()[10..]);
        assert!(f.poll_message().is_none());
    }

    #[test]
    fn each_message_gets_its_own_deadline_and_a_quiet_connection_idles() {
        let t0 = Instant::now();
        let mut f = StreamFramer::new(t0, LIMITS);
        let m = options("");
        let at = |s| t0 + Duration::from_secs(s);
        f.handle_input(at(0), &m.as_bytes()[..5]);
        f.handle_input(at(9), &m.as_bytes()[5..]);
        assert_eq!(drain(&mut f).len(), 1);
        // Nothing under way: the idle bound, from the last bytes.
        assert_eq!(f.poll_timeout(), at(9) + LIMITS.idle);
        // Keep-alives keep it open and start no message clock.
        f.handle_input(at(100), b"\r\n\r\n");
        assert!(f.poll_message().is_none());
        assert_eq!(f.handle_timeout(at(200)), None);
        f.handle_input(at(200), &m.as_bytes()[..5]);
        assert_eq!(f.poll_timeout(), at(210));
        f.handle_input(at(209), &m.as_bytes()[5..]);
        assert_eq!(drain(&mut f).len(), 1);
        assert_eq!(
            f.handle_timeout(at(209) + LIMITS.idle),
            Some(StreamClosed::Idle(LIMITS.idle))
        );
    }

    #[test]
    fn bytes_after_a_message_start_the_next_clock_at_their_read() {
        let t0 = Instant::now();
        let mut f = StreamFramer::new(t0, LIMITS);
        let m = options("");
        f.handle_input(t0, m.as_bytes());
        f.handle_input(t0 + Duration::from_secs(5), format!("{m}INV").as_bytes());
        assert_eq!(drain(&mut f).len(), 2);
        assert_eq!(f.poll_timeout(), t0 + Duration::from_secs(15));
    }

    #[test]
    fn broken_frames_close_the_connection_once() {
        let t0 = Instant::now();
        for (input, want) in [
            (
                "OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n".to_string(),
                ParseError::BadContentLength,
            ),
            (
                "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n".to_string(),
                ParseError::BadContentLength,
            ),
            (
                "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999\r\n\r\n".to_string(),
                ParseError::TooLarge(4096),
            ),
            (
                format!("OPTIONS sip:a@b SIP/2.0\r\nX: {}", "y".repeat(5000)),
                ParseError::TooLarge(4096),
            ),
            (
                "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 18446744073709551615\r\n\r\n"
                    .to_string(),
                ParseError::TooLarge(4096),
            ),
        ] {
            let mut f = StreamFramer::new(t0, LIMITS);
            f.handle_input(t0, input.as_bytes());
            assert_eq!(
                f.poll_message(),
                Some(Err(StreamClosed::Framing(want))),
                "{input:.60}"
            );
            assert_eq!(f.poll_message(), None);
            f.handle_input(t0, options("").as_bytes());
            assert_eq!(f.poll_message(), None);
        }
    }

    #[test]
    fn agrees_with_the_whole_buffer_framer() {
        // Random cuts of a pipelined stream frame exactly as `frame` does.
        let stream = format!("{}{}\r\n{}", options("a"), options(""), options("v=0\r\n"));
        let bytes = stream.as_bytes();
        let mut expected = Vec::new();
        let mut rest = bytes;
        loop {
            let skip = rest.iter().take_while(|b| is_keepalive_byte(**b)).count();
            rest = &rest[skip..];
            match super::super::message::frame(rest, 4096) {
                Ok(Some(n)) => {
                    expected.push(rest[..n].to_vec());
                    rest = &rest[n..];
                }
                _ => break,
            }
        }
        let mut seed = 7u64;
        for _ in 0..200 {
            let t0 = Instant::now();
            let mut f = StreamFramer::new(t0, LIMITS);
            let mut got = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = 1 + (seed >> 33) as usize % 40;
                let end = (at + n).min(bytes.len());
                f.handle_input(t0, &bytes[at..end]);
                at = end;
                while let Some(m) = f.poll_message() {
                    got.push(m.unwrap().to_vec());
                }
            }
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn damaged_input_frames_as_the_whole_buffer_framer_says() {
        // Random bytes overwritten and random cuts (the fuzz target's check):
        // the first message, or none, is the same either way; never a panic.
        let base = format!("{}{}", options("v=0\r\n"), options(""));
        let mut seed = 11u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..2000 {
            let mut data = base.clone().into_bytes();
            for _ in 0..next() % 4 {
                let i = next() % data.len();
                data[i] = b"\r\n:0123456789 Lx"[next() % 16];
            }
            data.truncate(next() % (data.len() + 1));
            if data.first().is_some_and(|b| is_keepalive_byte(*b)) {
                continue;
            }
            let expected = match super::super::message::frame(&data, 4096) {
                Ok(Some(n)) => Some(data[..n].to_vec()),
                _ => None,
            };
            let t0 = Instant::now();
            let mut f = StreamFramer::new(t0, LIMITS);
            let mut got = None;
            for piece in data.chunks(1 + next() % 31) {
                f.handle_input(t0, piece);
                match f.poll_message() {
                    Some(Ok(m)) => {
                        got = Some(m.to_vec());
                        break;
                    }
                    Some(Err(_)) => break,
                    None => {}
                }
            }
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(&data));
        }
    }
}
