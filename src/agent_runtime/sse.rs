//! A sans-IO Server-Sent Events reader: bytes in (as the HTTP body arrives,
//! split anywhere), complete events out. Lines and events are bounded so a
//! provider that never sends a newline, or sends data lines and never ends
//! the event, cannot grow memory without limit.

/// Longest SSE line accepted.
const MAX_LINE: usize = 1 << 20;
/// Most data one event may carry (all its `data:` lines together).
const MAX_EVENT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with newlines.
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseReader {
    line: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    data_bytes: usize,
    saw_cr: bool,
}

impl SseReader {
    pub fn new() -> SseReader {
        SseReader::default()
    }

    /// Feeds body bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        for &b in bytes {
            // CR, LF and CRLF all end a line (the SSE spec allows each).
            if b == b'\n' && self.saw_cr {
                self.saw_cr = false;
                continue;
            }
            self.saw_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                if let Some(ev) = self.line_done(&line) {
                    out.push(ev);
                }
                if self.data_bytes > MAX_EVENT {
                    return Err("SSE event too long".into());
                }
            } else {
                if self.line.len() >= MAX_LINE {
                    return Err("SSE line too long".into());
                }
                self.line.push(b);
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_none() {
                return None;
            }
            self.data_bytes = 0;
            let ev = SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data).join("\n"),
            };
            return Some(ev);
        }
        let text = String::from_utf8_lossy(line);
        if text.starts_with(':') {
            return None; // comment / keep-alive
        }
        let (field, value) = match text.find(':') {
            Some(i) => (
                &text[..i],
                text[i + 1..].strip_prefix(' ').unwrap_or(&text[i + 1..]),
            ),
            None => (&text[..], ""),
        };
        match field {
            "data" => {
                self.data_bytes += value.len() + 1;
                self.data.push(value.to_string());
            }
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere() {
        let body = b": ping\r\nevent: delta\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        for split in 1..body.len() {
            let mut r = SseReader::new();
            let mut got = r.push(&body[..split]).unwrap();
            got.extend(r.push(&body[split..]).unwrap());
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(
                got[0],
                SseEvent {
                    event: Some("delta".into()),
                    data: "{\"a\":1}".into()
                }
            );
            assert_eq!(got[1].data, "x\ny");
            assert_eq!(got[2].data, "[DONE]");
        }
    }

    #[test]
    fn an_event_that_never_ends_is_refused() {
        let mut r = SseReader::new();
        let line = format!("data: {}\n", "a".repeat(1000));
        let mut result = Ok(Vec::new());
        for _ in 0..(MAX_EVENT / 1000 + 2) {
            result = r.push(line.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err(), "data lines without an event end were kept");
        // Events of ordinary size go on being read.
        let mut r = SseReader::new();
        for _ in 0..3000 {
            assert_eq!(r.push(b"data: x\n\n").unwrap().len(), 1);
        }
    }

    #[test]
    fn endless_line_is_refused() {
        let mut r = SseReader::new();
        assert!(r.push(&vec![b'a'; MAX_LINE + 1]).is_err());
    }
}
