//! The local emulators answer through the same code paths as production: moto through
//! the shared SdkConfig (with the call counter), the registry through its OCI API.

use aws_setup::{Access, CallCounter};
use fakes::emulators::{Moto, Registry};

use super::moto_config;

#[tokio::test]
async fn local_registry_speaks_the_distribution_api_and_logs_requests() {
    let registry = Registry::start().expect("docker-registry starts");
    let http = reqwest::Client::new();
    let base = registry.url();

    let v2 = http.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(v2.status(), 200);
    assert_eq!(
        v2.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    // Monolithic blob upload, then HEAD finds it by digest.
    let blob = b"hello registry";
    let digest = "sha256:84b358610dfe0f22ccaed0d75a78dec48c14b6cb5f58d26e215cb98dfa828f74";
    let start = http
        .post(format!("{base}/v2/smoke/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 202);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    let status = put.status();
    assert_eq!(status, 201, "{}", put.text().await.unwrap());
    let head = http
        .head(format!("{base}/v2/smoke/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        blob.len().to_string().as_str()
    );

    assert!(
        registry.log().contains("HEAD /v2/smoke/blobs/"),
        "{}",
        registry.log()
    );
}

#[tokio::test]
async fn sdk_config_reaches_moto_and_counter_splits_reads_from_writes() {
    let moto = Moto::start().expect("moto starts");
    let config = moto_config(&moto.endpoint()).await;
    let counter = CallCounter::new();
    let sts = aws_setup::client!(aws_sdk_sts, &config, &counter);

    let me = sts
        .get_caller_identity()
        .send()
        .await
        .expect("moto answers");
    assert_eq!(me.account(), Some("123456789012"));
    sts.assume_role()
        .role_arn("arn:aws:iam::123456789012:role/any")
        .role_session_name("test")
        .send()
        .await
        .expect("moto assumes any role");
    sts.get_caller_identity().send().await.unwrap();

    let rows = counter.snapshot();
    assert_eq!(counter.reads(), 2, "{rows:?}");
    assert_eq!(counter.writes(), 1, "{rows:?}");
    assert_eq!(counter.write_operations(), vec!["STS:AssumeRole"]);
    assert!(
        rows.iter().any(|r| r.operation == "GetCallerIdentity"
            && r.access == Access::Read
            && r.calls == 2)
    );
}
