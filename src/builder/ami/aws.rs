//! AWS clients for one region: credentials from aws-config's standard chain
//! (environment, profiles, SSO, web identity for CI, instance roles), an
//! optional endpoint override for AWS-compatible emulators, the SDK's
//! standard retry with backoff on throttling and 5xx answers, and
//! [`wait_for`], the bounded, growing-delay poll every waiter here uses.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};

/// How many times one call is tried before its error counts (throttling and
/// 5xx answers are retried with exponential backoff and jitter).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// Where and how to reach AWS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub region: String,
    /// An AWS-compatible endpoint (emulators). `None`: AWS itself, or what
    /// the standard `AWS_ENDPOINT_URL*` variables say.
    pub endpoint: Option<String>,
    pub max_attempts: u32,
}

impl Target {
    pub fn new(region: &str, endpoint: Option<&str>) -> Target {
        Target {
            region: region.to_string(),
            endpoint: endpoint.map(str::to_string),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// The same endpoint in another region.
    pub fn in_region(&self, region: &str) -> Target {
        Target {
            region: region.to_string(),
            ..self.clone()
        }
    }
}

/// EC2 and SSM clients of one region.
#[derive(Clone, Debug)]
pub struct Clients {
    pub target: Target,
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
}

impl Clients {
    /// The clients of `target`, made once per process: loading the
    /// configuration (credential chain, TLS roots) costs more than most
    /// calls.
    pub async fn connect(target: &Target) -> Clients {
        static MADE: std::sync::OnceLock<
            std::sync::Mutex<std::collections::HashMap<Target, Clients>>,
        > = std::sync::OnceLock::new();
        let made = MADE.get_or_init(Default::default);
        if let Some(c) = made.lock().ok().and_then(|m| m.get(target).cloned()) {
            return c;
        }
        let c = Self::load(target).await;
        if let Ok(mut m) = made.lock() {
            m.insert(target.clone(), c.clone());
        }
        c
    }

    async fn load(target: &Target) -> Clients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(target.region.clone()))
            .retry_config(retry(target.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(ep) = &target.endpoint {
            loader = loader.endpoint_url(ep);
        }
        let conf = loader.load().await;
        let mut ec2 = aws_sdk_ec2::config::Builder::from(&conf);
        let mut ssm = aws_sdk_ssm::config::Builder::from(&conf);
        if target.endpoint.is_some() {
            ec2 = ec2.retry_classifier(EmulatorGaps);
            ssm = ssm.retry_classifier(EmulatorGaps);
        }
        Clients {
            target: target.clone(),
            ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
            ssm: aws_sdk_ssm::Client::from_conf(ssm.build()),
        }
    }
}

/// With an emulator endpoint: a call it does not implement (see
/// [`not_implemented`]) fails at once instead of being retried as a 5xx.
#[derive(Debug)]
struct EmulatorGaps;

impl ClassifyRetry for EmulatorGaps {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.response() {
            Some(r) if r.status().as_u16() == 501 || (r.status().as_u16() == 500 && is_html(r)) => {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "kiln: the emulator does not implement this call"
    }
}

fn is_html(r: &aws_smithy_runtime_api::http::Response) -> bool {
    r.headers()
        .get("content-type")
        .is_some_and(|c| c.starts_with("text/html"))
}

/// Standard retry mode: exponential backoff with jitter from 200 ms to
/// 20 s on throttling, transient and 5xx answers.
pub fn retry(max_attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(max_attempts.max(1))
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(20))
}

/// One line for an SDK error: the service's code and message when it gave
/// them, the transport's reason otherwise.
pub fn describe<E>(e: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> String
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    match (e.code(), e.message(), e.raw_response()) {
        (Some(code), Some(msg), _) => format!("{code}: {msg}"),
        (Some(code), None, _) => code.to_string(),
        (None, _, Some(raw)) if not_implemented(e) => format!(
            "HTTP {} with an HTML page instead of an AWS error (an emulator answers so for a call it does not implement)",
            raw.status().as_u16()
        ),
        (None, _, Some(raw)) => format!(
            "HTTP {} without an AWS error code",
            raw.status().as_u16()
        ),
        // Transport errors: the reason chain, never the request.
        _ => aws_sdk_ec2::error::DisplayErrorContext(e).to_string(),
    }
}

/// The service's error code, if the error came from the service.
pub fn code<E, R>(e: &SdkError<E, R>) -> Option<&str>
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata,
{
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    e.code()
}

/// True when an endpoint answered that it does not implement the call at
/// all. moto raises `NotImplementedError` for APIs it lacks (SSM
/// DescribeInstanceInformation among them), and its Flask server turns
/// that into its generic HTML "500 Internal Server Error" page — not an
/// AWS error document, so the SDK cannot even parse it. AWS answers its
/// JSON and query APIs with error documents (throttling and 5xx included,
/// which the SDK retries); kiln asks this only with `endpoint` set.
pub fn not_implemented<E>(e: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> bool {
    let Some(raw) = e.raw_response() else {
        return false;
    };
    let status = raw.status().as_u16();
    status == 501 || (status == 500 && is_html(raw))
}

/// Polls `check` until it yields a value, with delays growing from 50 ms
/// to 10 s, for at most `limit`. `check` returns `Ok(None)` to keep
/// waiting and `Err` to stop at once.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() + delay > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_gives_up_after_its_limit_and_returns_what_check_found() {
        let mut n = 0;
        let got = wait_for("three tries", Duration::from_secs(5), || {
            n += 1;
            let v = n;
            async move { Ok((v == 3).then_some(v)) }
        })
        .await;
        assert_eq!(got, Ok(3));
        let err = wait_for::<(), _, _>("never", Duration::from_millis(300), || async { Ok(None) })
            .await
            .unwrap_err();
        assert!(err.contains("timed out") && err.contains("never"), "{err}");
    }
}
