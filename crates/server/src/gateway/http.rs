//! HTTP/1.1 on one connection: reading a request (head parsed by `httparse`, body by
//! Content-Length, both bounded) and writing a response. Keep-alive, one request at a time.
//!
//! Every size and wait is bounded: the head by `http_max_header_bytes`, the body by
//! `http_max_body_bytes` and by the broker's request memory budget (reserved before the body
//! is read, as for Kafka requests), the wait for a request by `http_idle_timeout_ms` and its
//! arrival, once started, by `request_complete_timeout_ms`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::broker::Broker;

/// Headers parsed per request; a request with more is refused (431).
const HEADERS_MAX: usize = 64;
/// What a refused connection may still send before it is closed.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes read from the socket at a time while looking for the end of the head.
const READ_CHUNK_BYTES: usize = 4096;

pub(crate) struct Request {
    pub method: String,
    /// The path without the query, as sent.
    pub path: String,
    /// The path's segments between slashes, each percent-decoded.
    pub segments: Vec<String>,
    /// The query's pairs, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client may send another request on this connection.
    pub keep_alive: bool,
    /// HTTP/1.1 (not 1.0).
    pub http11: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a header's comma-separated list holds `token` (case-insensitive).
    pub fn header_has(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Response::new(status, "application/json", body)
    }

    /// `{"error": code, "message": message}`: what every 4xx and 5xx answer carries.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
        Response::json(
            status,
            &serde_json::json!({"error": code, "message": message.into()}),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// What reading the next request gave.
pub(crate) enum Read {
    Request(Request),
    /// The peer closed, went idle past the timeout, or the server is stopping: close quietly.
    Closed,
    /// The request cannot be served: answer this, then close (the stream is out of step).
    Refuse(Response),
}

/// One client connection: the socket and the bytes read past the last request.
pub(crate) struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads one request. The body's bytes are reserved in the request memory budget while
    /// they are read and held; the permit comes back with the request.
    pub async fn read_request<'b>(
        &mut self,
        broker: &'b Broker,
    ) -> (Read, Option<tokio::sync::SemaphorePermit<'b>>) {
        let config = &broker.config;
        let idle = config.http_idle_timeout;
        let mut deadline =
            (!self.buf.is_empty()).then(|| Instant::now() + config.request_complete_timeout);
        // The head, parsed once it is whole.
        let (head_len, request) = loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
                let mut parsed = httparse::Request::new(&mut headers);
                match parsed.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) if n > config.http_max_header_bytes => {
                        return (
                            Read::Refuse(too_large_head(config.http_max_header_bytes)),
                            None,
                        )
                    }
                    Ok(httparse::Status::Complete(n)) => break (n, request_of(&parsed)),
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => {
                        return (
                            Read::Refuse(too_large_head(config.http_max_header_bytes)),
                            None,
                        )
                    }
                    Err(e) => {
                        return (
                            Read::Refuse(Response::error(
                                400,
                                "bad_request",
                                format!("malformed request: {e}"),
                            )),
                            None,
                        )
                    }
                }
                if self.buf.len() > config.http_max_header_bytes {
                    return (
                        Read::Refuse(too_large_head(config.http_max_header_bytes)),
                        None,
                    );
                }
            }
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => idle,
            };
            match read_more(&mut self.stream, &mut self.buf, wait).await {
                Some(0) | None if deadline.is_none() => return (Read::Closed, None),
                Some(0) => return (Read::Closed, None),
                None => return (Read::Refuse(late("request")), None),
                Some(_) => {}
            }
            deadline.get_or_insert_with(|| Instant::now() + config.request_complete_timeout);
        };
        let deadline = deadline.unwrap_or_else(|| Instant::now() + config.request_complete_timeout);
        let mut request = match request {
            Ok(request) => request,
            Err(refusal) => return (Read::Refuse(refusal), None),
        };
        self.buf.drain(..head_len);
        // The body.
        if request.header("transfer-encoding").is_some() {
            return (
                Read::Refuse(Response::error(
                    411,
                    "length_required",
                    "send the body with a Content-Length (chunked request bodies are not accepted)",
                )),
                None,
            );
        }
        // Every Content-Length must agree and be digits only (RFC 9110 §8.6): a request
        // that two readers could frame differently is refused.
        let lengths: Vec<&str> = request
            .headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .map(|(_, v)| v.as_str())
            .collect();
        let length = match lengths.first() {
            None => 0,
            Some(first)
                if lengths.iter().all(|l| l == first)
                    && !first.is_empty()
                    && first.bytes().all(|b| b.is_ascii_digit()) =>
            {
                match first.parse::<usize>() {
                    Ok(n) => n,
                    // More digits than any size: over every limit.
                    Err(_) => usize::MAX,
                }
            }
            Some(_) => {
                return (
                    Read::Refuse(Response::error(
                        400,
                        "bad_request",
                        "Content-Length is not one decimal number",
                    )),
                    None,
                )
            }
        };
        if length > config.http_max_body_bytes {
            return (
                Read::Refuse(Response::error(
                    413,
                    "body_too_large",
                    format!(
                        "the body has {length} bytes; at most {} are accepted (http_max_body_bytes)",
                        config.http_max_body_bytes
                    ),
                )),
                None,
            );
        }
        if length == 0 {
            return (Read::Request(request), None);
        }
        let permit = match broker.request_budget.try_reserve(length) {
            Some(permit) => permit,
            None => {
                broker
                    .metrics
                    .budget_waits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match tokio::time::timeout_at(deadline, broker.request_budget.reserve(length)).await
                {
                    Ok(Some(permit)) => permit,
                    _ => {
                        return (
                            Read::Refuse(Response::error(
                                503,
                                "busy",
                                "the broker's request memory budget stayed full; retry later",
                            )),
                            None,
                        )
                    }
                }
            }
        };
        if request.http11 && request.header_has("expect", "100-continue") && self.buf.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let sent = tokio::time::timeout(
                wait,
                self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n"),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                return (Read::Closed, None);
            }
        }
        while self.buf.len() < length {
            let wait = deadline.saturating_duration_since(Instant::now());
            match read_more(&mut self.stream, &mut self.buf, wait).await {
                Some(0) => return (Read::Closed, None),
                None => return (Read::Refuse(late("body")), None),
                Some(_) => {}
            }
        }
        request.body = self.buf.drain(..length).collect();
        (Read::Request(request), Some(permit))
    }

    /// Before closing a connection whose request was refused unread: stop sending, then read
    /// and drop what the client still sends (at most `LINGER_BYTES`, for at most
    /// `LINGER_TIME`), so it gets the refusal instead of a reset for unread data.
    pub async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        let mut left = LINGER_BYTES;
        let until = Instant::now() + LINGER_TIME;
        while left > 0 {
            match tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => return,
            }
        }
    }

    /// Writes a response; false if the peer is gone or took longer than `timeout` to take it.
    pub async fn write_response(
        &mut self,
        response: &Response,
        keep_alive: bool,
        timeout: Duration,
    ) -> bool {
        let head = head_of(response, keep_alive);
        let write = async {
            self.stream.write_all(head.as_bytes()).await?;
            self.stream.write_all(&response.body).await?;
            self.stream.flush().await
        };
        matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(())))
    }
}

/// 408: a started request that did not arrive within `request_complete_timeout_ms`.
fn late(what: &str) -> Response {
    Response::error(
        408,
        "request_timeout",
        format!("the {what} did not arrive in time (request_complete_timeout_ms)"),
    )
}

fn too_large_head(max: usize) -> Response {
    Response::error(
        431,
        "header_too_large",
        format!(
            "the request head is over {max} bytes or {HEADERS_MAX} headers (http_max_header_bytes)"
        ),
    )
}

/// Reads what the socket has into `buf`: Some(0) at end of stream, None after `wait`.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, wait: Duration) -> Option<usize> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(n)
        }
        Ok(Err(_)) => Some(0),
        Err(_) => None,
    }
}

fn request_of(parsed: &httparse::Request<'_, '_>) -> Result<Request, Response> {
    let method = parsed.method.unwrap_or_default().to_string();
    let target = parsed.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(Response::error(
            400,
            "bad_request",
            "the request target must be a path",
        ));
    }
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| {
            Response::error(
                400,
                "bad_request",
                "the path is not valid percent-encoded UTF-8",
            )
        })?;
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        match (decode(name), decode(value)) {
            (Some(name), Some(value)) => pairs.push((name, value)),
            _ => {
                return Err(Response::error(
                    400,
                    "bad_request",
                    "the query is not valid percent-encoded UTF-8",
                ))
            }
        }
    }
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| {
            Response::error(
                400,
                "bad_request",
                format!("header {} is not UTF-8", header.name),
            )
        })?;
        headers.push((header.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = Request {
        method,
        path: path.to_string(),
        segments,
        query: pairs,
        headers,
        body: Vec::new(),
        keep_alive: false,
        http11: parsed.version == Some(1),
    };
    request.keep_alive = match parsed.version {
        Some(1) => !request.header_has("connection", "close"),
        _ => request.header_has("connection", "keep-alive"),
    };
    Ok(request)
}

/// Decodes `%XX` escapes; None if one is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn head_of(response: &Response, keep_alive: bool) -> String {
    use std::fmt::Write;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    if !response.content_type.is_empty() {
        let _ = write!(head, "content-type: {}\r\n", response.content_type);
    }
    let _ = write!(head, "content-length: {}\r\n", response.body.len());
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str(if keep_alive {
        "connection: keep-alive\r\n\r\n"
    } else {
        "connection: close\r\n\r\n"
    });
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("plain"), Some("plain".into()));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn requests_parse_with_their_query_and_keep_alive() {
        let raw = b"GET /topics/a%2Fb/partitions/0/records?offset=5&max_bytes=10&x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(raw).is_ok());
        let request = request_of(&parsed).ok().expect("parsed");
        assert_eq!(
            request.segments,
            ["topics", "a/b", "partitions", "0", "records"]
        );
        assert_eq!(request.query("offset"), Some("5"));
        assert_eq!(request.query("x"), Some(""));
        assert_eq!(request.header("host"), Some("h"));
        assert!(!request.keep_alive);
    }
}
