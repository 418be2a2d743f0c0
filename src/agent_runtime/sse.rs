//! A sans-IO Server-Sent Events reader: bytes in (as the HTTP body arrives,
//! split anywhere), complete events out. Lines are bounded so a provider
//! that never sends a newline cannot grow memory without limit.

/// Longest SSE line accepted.
const MAX_LINE: usize = 1 << 20;

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
            "data" => self.data.push(value.to_string()),
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
    fn endless_line_is_refused() {
        let mut r = SseReader::new();
        assert!(r.push(&vec![b'a'; MAX_LINE + 1]).is_err());
    }
}
