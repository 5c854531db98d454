//! One place that builds the AWS `SdkConfig` for every binary (profile, region,
//! endpoint, retries, timeouts), and an interceptor that counts the calls made, per
//! service and operation, split into reads and writes, and measures the longest chain of
//! calls that followed one another.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

pub use aws_types::SdkConfig;
pub use aws_types::region::Region;

/// What a user may set on the command line; everything else comes from the standard
/// chain (environment, profile, SSO, container credentials). `AWS_ENDPOINT_URL` is
/// honoured by the chain itself, so an emulator needs no code change.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub profile: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// Standard retries (throttling and transient errors, with jittered backoff) and
/// timeouts that bound a hung connection.
pub async fn load(options: &AwsOptions) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(5)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(10)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_mins(2))
                .build(),
        );
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Builds a service client from an `SdkConfig` with the call counter attached:
/// `aws_setup::client!(aws_sdk_ecs, &config, &counter)`.
#[macro_export]
macro_rules! client {
    ($service:ident, $config:expr, $counter:expr) => {
        $service::Client::from_conf(
            $service::config::Builder::from($config)
                .interceptor(::std::clone::Clone::clone($counter))
                .build(),
        )
    };
}

/// Whether an operation only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    /// Classifies by the operation's verb, as AWS names them.
    pub fn of(operation: &str) -> Self {
        const READ: [&str; 13] = [
            "Describe",
            "Get",
            "List",
            "Head",
            "BatchGet",
            "BatchCheck",
            "Query",
            "Scan",
            "Lookup",
            "Search",
            "Filter",
            "Test",
            "Validate",
        ];
        if READ.iter().any(|p| operation.starts_with(p)) {
            Self::Read
        } else {
            Self::Write
        }
    }
}

/// One row of the count: service, operation, access, calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCount {
    pub service: String,
    pub operation: String,
    pub access: Access,
    pub calls: u64,
}

/// Counts every operation started through a client it is attached to (once per call,
/// not per retry attempt). Cheap to clone; clones share the count.
#[derive(Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
    /// When each finished call started and ended (its retries included).
    spans: Arc<Mutex<Vec<(Instant, Instant, String)>>>,
}

/// When a call started, and its `service:Operation`, kept in its config bag until it
/// ends.
#[derive(Debug, Clone)]
struct Started(Instant, String);

impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

impl fmt::Debug for CallCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallCounter")
            .field("reads", &self.reads())
            .field("writes", &self.writes())
            .finish()
    }
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, service: &str, operation: &str) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts
            .entry((service.to_owned(), operation.to_owned()))
            .or_default() += 1;
    }

    /// Every operation called so far, sorted by service and operation.
    pub fn snapshot(&self) -> Vec<CallCount> {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts
            .iter()
            .map(|((service, operation), calls)| CallCount {
                service: service.clone(),
                operation: operation.clone(),
                access: Access::of(operation),
                calls: *calls,
            })
            .collect()
    }

    pub fn total(&self, access: Access) -> u64 {
        self.snapshot()
            .iter()
            .filter(|c| c.access == access)
            .map(|c| c.calls)
            .sum()
    }

    pub fn reads(&self) -> u64 {
        self.total(Access::Read)
    }

    pub fn writes(&self) -> u64 {
        self.total(Access::Write)
    }

    /// The longest chain of calls each of which started after the one before it ended:
    /// the round trips the run waited for one after another (calls in flight together
    /// count once). Times the latency of a call, a floor for the run's time.
    pub fn chain(&self) -> usize {
        self.chain_calls().len()
    }

    /// The calls of [`CallCounter::chain`], in order, as `service:Operation`.
    pub fn chain_calls(&self) -> Vec<String> {
        let mut spans = self
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        spans.sort();
        // longest[i]: the longest chain ending with call i, and the call before it.
        let mut longest: Vec<(usize, Option<usize>)> = Vec::with_capacity(spans.len());
        for (i, (start, _, _)) in spans.iter().enumerate() {
            let before = (0..i)
                .filter(|&j| spans[j].1 <= *start)
                .max_by_key(|&j| longest[j].0);
            longest.push((before.map_or(0, |j| longest[j].0) + 1, before));
        }
        let mut at = (0..spans.len()).max_by_key(|&i| longest[i].0);
        let mut chain = Vec::new();
        while let Some(i) = at {
            chain.push(spans[i].2.clone());
            at = longest[i].1;
        }
        chain.reverse();
        chain
    }

    /// The write operations called, as `service:Operation` (for messages and tests).
    pub fn write_operations(&self) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter(|c| c.access == Access::Write)
            .map(|c| format!("{}:{}", c.service, c.operation))
            .collect()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    // Not `read_before_execution`: client-level interceptors run that before the
    // operation's metadata is in the bag. Serialization happens once per call.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg.load::<Metadata>().map(|metadata| {
            self.record(metadata.service(), metadata.name());
            format!("{}:{}", metadata.service(), metadata.name())
        });
        cfg.interceptor_state()
            .store_put(Started(Instant::now(), name.unwrap_or_default()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Started(at, name)) = cfg.load::<Started>() {
            self.spans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((*at, Instant::now(), name.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_counts_calls_that_followed_one_another_and_overlapping_ones_once() {
        let counter = CallCounter::new();
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        // a (0-10) then b and c together (10-20, 12-22), then d (25-30): a, b|c, d.
        counter.spans.lock().unwrap().extend([
            (at(0), at(10), "a".to_owned()),
            (at(10), at(20), "b".to_owned()),
            (at(12), at(22), "c".to_owned()),
            (at(25), at(30), "d".to_owned()),
        ]);
        assert_eq!(counter.chain(), 3);
        let path = counter.chain_calls();
        assert!(
            path == ["a", "b", "d"] || path == ["a", "c", "d"],
            "{path:?}"
        );
        assert_eq!(CallCounter::new().chain(), 0);
    }

    #[test]
    fn operations_are_classified_by_their_verb() {
        for read in [
            "DescribeTasks",
            "GetSecretValue",
            "ListTagsForResource",
            "BatchGetImage",
            "Scan",
            "FilterLogEvents",
        ] {
            assert_eq!(Access::of(read), Access::Read, "{read}");
        }
        for write in [
            "CreateRole",
            "PutRetentionPolicy",
            "RegisterTaskDefinition",
            "RunTask",
            "TagResource",
            "DeleteAlarms",
        ] {
            assert_eq!(Access::of(write), Access::Write, "{write}");
        }
    }
}
