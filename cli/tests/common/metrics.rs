//! Scrapes a `/metrics` endpoint over plain HTTP and parses the Prometheus /
//! OpenMetrics text format into samples: `(name, labels) -> value`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A sample's labels, sorted by name.
pub type Labels = BTreeMap<String, String>;
pub type Samples = BTreeMap<(String, Labels), f64>;

/// GET `http://<addr>/metrics` and parse it; panics (naming the address) when the
/// endpoint does not answer 200 or the text does not parse.
pub fn scrape(addr: &str) -> Samples {
    let body =
        get(addr, "/metrics").unwrap_or_else(|e| panic!("scraping http://{addr}/metrics: {e}"));
    parse(&body).unwrap_or_else(|e| panic!("http://{addr}/metrics: {e}\n{body}"))
}

/// The body of `GET path`, when the answer is 200.
pub fn get(addr: &str, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("answered `{status}`: {body}"));
    }
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    if chunked {
        dechunk(body)
    } else {
        Ok(body.to_string())
    }
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("truncated chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .map_err(|e| format!("chunk size `{size}`: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.push_str(chunk);
        body = rest[size..]
            .strip_prefix("\r\n")
            .ok_or("chunk without CRLF")?;
    }
}

/// Parses the text format: `# …` lines are skipped, every other line is
/// `name{label="value",…} value [timestamp]`.
pub fn parse(text: &str) -> Result<Samples, String> {
    let mut out = Samples::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) =
            sample(line).map_err(|e| format!("line {}: {e}: `{line}`", n + 1))?;
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| format!("line {}: no value: `{line}`", n + 1))?;
        let value = match value {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|e| format!("line {}: value `{v}`: {e}", n + 1))?,
        };
        out.insert((name, labels), value);
    }
    Ok(out)
}

/// The name and labels of a sample line, and what follows them.
fn sample(line: &str) -> Result<(String, Labels, &str), String> {
    let end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = line[..end].to_string();
    let mut labels = Labels::new();
    let Some(mut inner) = line[end..].strip_prefix('{') else {
        return Ok((name, labels, &line[end..]));
    };
    loop {
        inner = inner.trim_start_matches([',', ' ']);
        if let Some(rest) = inner.strip_prefix('}') {
            return Ok((name, labels, rest));
        }
        let (key, after) = inner.split_once('=').ok_or("label without `=`")?;
        let quoted = after
            .strip_prefix('"')
            .ok_or_else(|| format!("label `{key}`: value not quoted"))?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let closing = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label `{key}`: unfinished escape")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("label `{key}`: unclosed value")),
            }
        };
        labels.insert(key.trim().to_string(), value);
        inner = &quoted[closing + 1..];
    }
}

/// The value of the one sample named `name` whose labels include `labels`; `None`
/// when there is none, a panic when several match.
pub fn get_one(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = matching(samples, name, labels).collect();
    assert!(
        found.len() <= 1,
        "{} samples of `{name}` have labels {labels:?}",
        found.len()
    );
    found.first().copied()
}

/// The sum of the samples named `name` whose labels include `labels` (0 when none).
pub fn sum(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(samples, name, labels).sum()
}

fn matching<'a>(
    samples: &'a Samples,
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = f64> + 'a {
    samples.iter().filter_map(move |((n, l), v)| {
        (n == name
            && labels
                .iter()
                .all(|(k, want)| l.get(*k).is_some_and(|have| have == want)))
        .then_some(*v)
    })
}
