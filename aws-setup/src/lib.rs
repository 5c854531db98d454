//! One place that builds the AWS `SdkConfig` for every binary (profile, region,
//! endpoint, retries, timeouts), and an interceptor that counts the calls made, per
//! service and operation, split into reads and writes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

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
        if let Some(metadata) = cfg.load::<Metadata>() {
            self.record(metadata.service(), metadata.name());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
