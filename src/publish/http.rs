//! Signed HTTP requests to cloud APIs: reqwest (blocking) for transport,
//! the aws-sigv4 crate for Signature Version 4, a timeout on every request,
//! and retries with exponential backoff and jitter for throttling, 5xx
//! responses and dropped or stalled connections. Credential and permission
//! errors fail at once, naming what to fix. Nothing here logs a header;
//! response text that reaches an error or a log passes the [`Redactor`].

use std::time::{Duration, Instant, SystemTime};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use rand::Rng;
use reqwest::Method;

use super::credentials::{Credentials, Redactor};

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// The first backoff; it doubles per attempt (with full jitter).
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Limit on each request, from connecting to the end of the response.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `n` (1 = the first retry): a random time up
    /// to `base * 2^(n-1)`, capped.
    pub fn delay(&self, n: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(16))
            .min(self.max_delay);
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }
}

/// A failed API call. Callers branch on the variant and on `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what}: the cloud refused the credentials ({code}: {message}); they came from {source_}: check the access key, secret key and session token there, and the region `{region}`")]
    Credentials {
        what: String,
        code: String,
        message: String,
        source_: String,
        region: String,
    },
    #[error("{what}: permission denied ({code}: {message}); the identity {access_key_id} needs permission for {action}")]
    Permission {
        what: String,
        code: String,
        message: String,
        access_key_id: String,
        action: String,
    },
    #[error("{what}: {url} answered HTTP {status}{}: {message}", fmt_code(.code))]
    Status {
        what: String,
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{what}: {url}: {message}")]
    Transport {
        what: String,
        url: String,
        message: String,
    },
    #[error("{what}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        what: String,
        attempts: u32,
        last: Box<ApiError>,
    },
}

fn fmt_code(code: &str) -> String {
    if code.is_empty() {
        String::new()
    } else {
        format!(" {code}")
    }
}

impl ApiError {
    /// The cloud's error code, if it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Credentials { code, .. }
            | ApiError::Permission { code, .. }
            | ApiError::Status { code, .. } => Some(code),
            ApiError::GaveUp { last, .. } => last.code(),
            ApiError::Transport { .. } => None,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, code, .. } => {
                *status >= 500 || *status == 429 || THROTTLING.contains(&code.as_str())
            }
            _ => false,
        }
    }
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalServerException",
];

const BAD_CREDENTIALS: &[&str] = &[
    "AuthFailure",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidToken",
    "MissingAuthenticationToken",
    "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
];

const NO_PERMISSION: &[&str] = &[
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "OptInRequired",
];

/// An AWS-style API biovm calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ec2,
    Ebs,
    S3,
}

impl Service {
    /// The name requests to it are signed with, which also names its
    /// endpoint's environment variable (`AWS_ENDPOINT_URL_EC2`).
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::Ebs => "ebs",
            Service::S3 => "s3",
        }
    }
}

/// A request to send.
pub struct Request<'a> {
    /// The API it goes to (its signing name).
    pub service: Service,
    /// The API action, for messages (`ebs:PutSnapshotBlock`).
    pub action: &'static str,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
    /// Leave the body out of the signature (`UNSIGNED-PAYLOAD`), for block
    /// data whose integrity a checksum header covers.
    pub unsigned_payload: bool,
    /// What this is, for messages: "PutSnapshotBlock 12 of snap-0abc".
    pub what: String,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Counts what went over the wire, for the benchmark and the report.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: std::sync::atomic::AtomicU64,
    pub retries: std::sync::atomic::AtomicU64,
    pub body_bytes_sent: std::sync::atomic::AtomicU64,
}

/// A client for one identity in one region.
pub struct Client {
    http: reqwest::blocking::Client,
    creds: Credentials,
    identity: Identity,
    redactor: Redactor,
    pub region: String,
    pub retry: RetryPolicy,
    pub counters: Counters,
}

impl Client {
    pub fn new(creds: Credentials, region: &str, retry: RetryPolicy) -> anyhow::Result<Client> {
        let http = reqwest::blocking::Client::builder()
            .timeout(retry.request_timeout)
            .connect_timeout(retry.request_timeout.min(Duration::from_secs(20)))
            .user_agent(concat!("biovm/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let identity: Identity = aws_credential_types::Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.expose().to_string(),
            creds.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "biovm",
        )
        .into();
        Ok(Client {
            http,
            redactor: creds.redactor(),
            identity,
            creds,
            region: region.to_string(),
            retry,
            counters: Counters::default(),
        })
    }

    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// Send with retries; a non-2xx answer is an error.
    pub fn send(&self, req: &Request<'_>) -> Result<Response, ApiError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.counters.requests.fetch_add(1, Relaxed);
            self.counters
                .body_bytes_sent
                .fetch_add(req.body.len() as u64, Relaxed);
            let started = Instant::now();
            let result = self.send_once(req);
            match result {
                Ok(r) => {
                    log::trace!(
                        "{} {} -> {} in {:.0} ms",
                        req.method,
                        req.url,
                        r.status,
                        started.elapsed().as_secs_f64() * 1000.0
                    );
                    return Ok(r);
                }
                Err(e) if e.retryable() && attempt < self.retry.attempts => {
                    self.counters.retries.fetch_add(1, Relaxed);
                    let wait = self.retry.delay(attempt);
                    log::warn!(
                        "{e}; retrying in {:.1} s (attempt {}/{})",
                        wait.as_secs_f64(),
                        attempt + 1,
                        self.retry.attempts
                    );
                    std::thread::sleep(wait);
                }
                Err(e) if e.retryable() => {
                    return Err(ApiError::GaveUp {
                        what: req.what.clone(),
                        attempts: attempt,
                        last: Box::new(e),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn sign(&self, req: &Request<'_>) -> Result<Vec<(String, String)>, ApiError> {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        if req.service == Service::S3 {
            // S3 signs the path as sent: no double encoding, no normalising.
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        }
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(req.service.signing_name())
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| self.transport(req, format!("cannot sign the request: {e}")))?
            .into();
        let body = if req.unsigned_payload {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Bytes(req.body)
        };
        let signable = SignableRequest::new(
            req.method.as_str(),
            &req.url,
            req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            body,
        )
        .map_err(|e| self.transport(req, format!("cannot sign the request: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| self.transport(req, format!("cannot sign the request: {e}")))?
            .into_parts();
        let (headers, _) = instructions.into_parts();
        Ok(headers
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect())
    }

    fn transport(&self, req: &Request<'_>, message: String) -> ApiError {
        ApiError::Transport {
            what: req.what.clone(),
            url: req.url.clone(),
            message: self.redact(&message),
        }
    }

    fn send_once(&self, req: &Request<'_>) -> Result<Response, ApiError> {
        let signed = self.sign(req)?;
        let mut rb = self
            .http
            .request(req.method.clone(), &req.url)
            .body(req.body.to_vec());
        for (k, v) in req.headers.iter().chain(signed.iter()) {
            rb = rb.header(k.as_str(), v.as_str());
        }
        let resp = rb.send().map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "connection failed"
            };
            self.transport(req, format!("{kind}: {}", error_chain(&e)))
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .map_err(|e| {
                self.transport(
                    req,
                    format!("reading the answer failed: {}", error_chain(&e)),
                )
            })?
            .to_vec();
        let r = Response {
            status,
            headers,
            body,
        };
        if (200..300).contains(&status) {
            return Ok(r);
        }
        Err(self.classify(req, &r))
    }

    fn classify(&self, req: &Request<'_>, r: &Response) -> ApiError {
        let (code, message) = error_code_and_message(r);
        let code = self.redact(&code);
        let message = self.redact(&message);
        let what = req.what.clone();
        if BAD_CREDENTIALS.contains(&code.as_str()) || (r.status == 401 && code.is_empty()) {
            return ApiError::Credentials {
                what,
                code: if code.is_empty() { "401".into() } else { code },
                message,
                source_: self.creds.source.clone(),
                region: self.region.clone(),
            };
        }
        if NO_PERMISSION.contains(&code.as_str()) || (r.status == 403 && code.is_empty()) {
            return ApiError::Permission {
                what,
                code: if code.is_empty() { "403".into() } else { code },
                message,
                access_key_id: self.creds.access_key_id.clone(),
                action: req.action.to_string(),
            };
        }
        ApiError::Status {
            what,
            url: req.url.clone(),
            status: r.status,
            code,
            message,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The error code and message of a failed call: EC2 and S3 answer XML
/// (`<Code>`, `<Message>`), EBS answers JSON with the code in the
/// `x-amzn-ErrorType` header or a `__type`/`code` field.
pub fn error_code_and_message(r: &Response) -> (String, String) {
    let text = r.text();
    let mut code = r
        .header("x-amzn-errortype")
        .map(|c| c.split(':').next().unwrap_or(c).to_string())
        .unwrap_or_default();
    let mut message = String::new();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) {
        if code.is_empty() {
            for k in ["__type", "code", "Code"] {
                if let Some(c) = v.get(k).and_then(|c| c.as_str()) {
                    code = c.rsplit('#').next().unwrap_or(c).to_string();
                    break;
                }
            }
        }
        for k in ["message", "Message"] {
            if let Some(m) = v.get(k).and_then(|m| m.as_str()) {
                message = m.to_string();
                break;
            }
        }
    } else if text.trim_start().starts_with('<') {
        let doc = super::xml::Doc::parse(&text);
        if let Some(c) = doc.as_ref().and_then(|d| d.first("Code")) {
            code = c.to_string();
        }
        if let Some(m) = doc.as_ref().and_then(|d| d.first("Message")) {
            message = m.to_string();
        }
    }
    if message.is_empty() {
        // An HTML error page or the like: its words, on one line.
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let t: String = words.chars().take(300).collect();
        message = if t.is_empty() {
            "(no message)".to_string()
        } else {
            t
        };
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            request_timeout: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(p.delay(30) <= Duration::from_millis(1000));
        }
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Response {
            status,
            headers: h,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn error_codes_from_each_protocol() {
        let ec2 = resp(
            401,
            &[],
            "<?xml version=\"1.0\"?><Response><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able to validate the provided access credentials</Message></Error></Errors><RequestID>x</RequestID></Response>",
        );
        assert_eq!(
            error_code_and_message(&ec2),
            (
                "AuthFailure".to_string(),
                "AWS was not able to validate the provided access credentials".to_string()
            )
        );
        let ebs = resp(
            400,
            &[("x-amzn-ErrorType", "ThrottlingException:http://internal")],
            "{\"message\":\"Rate exceeded\"}",
        );
        assert_eq!(
            error_code_and_message(&ebs),
            ("ThrottlingException".into(), "Rate exceeded".into())
        );
        let s3 = resp(
            404,
            &[],
            "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>b</BucketName></Error>",
        );
        assert_eq!(error_code_and_message(&s3).0, "NoSuchBucket");
        let empty = resp(502, &[], "");
        assert_eq!(
            error_code_and_message(&empty),
            (String::new(), "(no message)".into())
        );
    }

    #[test]
    fn retryable_errors() {
        let st = |status, code: &str| ApiError::Status {
            what: "x".into(),
            url: "u".into(),
            status,
            code: code.into(),
            message: "m".into(),
        };
        assert!(st(500, "").retryable());
        assert!(st(503, "SlowDown").retryable());
        assert!(st(400, "ThrottlingException").retryable());
        assert!(st(400, "RequestLimitExceeded").retryable());
        assert!(!st(400, "InvalidParameterValue").retryable());
        assert!(!st(404, "NoSuchBucket").retryable());
        assert!(ApiError::Transport {
            what: "x".into(),
            url: "u".into(),
            message: "reset".into()
        }
        .retryable());
    }
}
