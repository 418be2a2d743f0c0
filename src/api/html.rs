//! HTML to plain text for URL knowledge sources: drops markup, scripts,
//! styles and comments; block elements become paragraph breaks; the common
//! entities are decoded. A linear scan, no DOM: pages are bounded in size.

const SKIP_CONTENT: &[&str] = &["script", "style", "noscript", "template", "svg", "head"];
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "nav",
    "aside",
    "blockquote",
    "pre",
    "hr",
    "dt",
    "dd",
    "title",
    "body",
    "form",
];

pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let bytes = html.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            let next = html[i..].find('<').map(|n| i + n).unwrap_or(bytes.len());
            out.push_str(&decode_entities(&html[i..next]));
            i = next;
            continue;
        }
        if lower[i..].starts_with("<!--") {
            i = lower[i..]
                .find("-->")
                .map(|n| i + n + 3)
                .unwrap_or(bytes.len());
            continue;
        }
        let end = match html[i..].find('>') {
            Some(n) => i + n + 1,
            None => break,
        };
        let tag = &lower[i + 1..end - 1];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        i = end;
        if !closing && SKIP_CONTENT.contains(&name.as_str()) {
            // Jump past the matching close tag; an unclosed one ends the text.
            let close = format!("</{name}");
            i = match lower[i..].find(&close) {
                Some(n) => lower[i + n..]
                    .find('>')
                    .map(|m| i + n + m + 1)
                    .unwrap_or(bytes.len()),
                None => bytes.len(),
            };
            continue;
        }
        if BLOCKS.contains(&name.as_str()) {
            out.push_str("\n\n");
        } else {
            out.push(' ');
        }
    }
    normalize_whitespace(&out)
}

/// Collapses runs of spaces inside lines and keeps paragraph breaks.
fn normalize_whitespace(s: &str) -> String {
    let mut paragraphs = Vec::new();
    for block in s.split("\n\n") {
        let words: Vec<&str> = block.split_whitespace().collect();
        if !words.is_empty() {
            paragraphs.push(words.join(" "));
        }
    }
    paragraphs.join("\n\n")
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_markup_and_keeps_paragraphs() {
        let html = r#"<html><head><title>T</title><style>p{color:red}</style></head>
            <body><h1>Opening hours</h1><p>We are open <b>9&nbsp;to&nbsp;5</b> &amp; closed Sundays.</p>
            <script>alert("x<p>")</script><!-- hidden --><p>Call &#43;1 555&#x2d;0100.</p></body></html>"#;
        let text = html_to_text(html);
        assert_eq!(
            text,
            "Opening hours\n\nWe are open 9 to 5 & closed Sundays.\n\nCall +1 555-0100."
        );
    }

    #[test]
    fn survives_broken_input() {
        assert_eq!(html_to_text("a < b"), "a");
        assert_eq!(html_to_text("<script>never closed"), "");
        assert_eq!(
            html_to_text("x &bogus; &#99999999; y"),
            "x &bogus; &#99999999; y"
        );
        assert_eq!(html_to_text(""), "");
    }
}
