//! The local stand-in for a container registry answers the OCI distribution API.
//! (moto's reachability through the shared SdkConfig is tested in aws-setup.)

use fakes::emulators::Registry;

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
