//! The `deployer` binary as a user runs it, and the local emulators it deploys to.

mod cli;
mod consistency;
mod docs;
mod emulators;
mod engine;
mod fargate;
mod iam;
mod image;
mod layers;
mod operate;
mod verify;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (where `infra/envs` lives).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `deployer ARGS` in `dir` with no AWS configuration from the machine.
fn deployer_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(args)
        .current_dir(dir)
        .env_remove("DEPLOYER_ENV_DIR")
        .env("NO_COLOR", "1")
        .output()
        .expect("deployer runs")
}

/// The deployer as the AWS tests run it: from the checkout, with moto's dummy
/// credentials, no terminal and nothing of this machine's AWS setup; `endpoint` is the
/// emulator every call goes to.
fn deployer_command(endpoint: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deployer"));
    c.current_dir(root())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("DEPLOYER_ENV_DIR")
        // The layer cache of this test run, not the user's.
        .env(
            "DEPLOYER_CACHE_DIR",
            std::env::temp_dir().join(format!("deployer-test-cache-{}", std::process::id())),
        );
    if let Some(endpoint) = endpoint {
        c.env("AWS_ENDPOINT_URL", endpoint);
    }
    c
}

fn deployer(args: &[&str]) -> Output {
    deployer_in(&root(), args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The shared loader pointed at an emulator, with the dummy credentials moto accepts
/// (tests must not depend on whatever credentials the machine has).
async fn moto_config(endpoint: &str) -> aws_setup::SdkConfig {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    aws_setup::load(&aws_setup::AwsOptions {
        profile: None,
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.to_owned()),
    })
    .await
    .into_builder()
    .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
        "testing", "testing", None, None, "moto",
    )))
    .build()
}

/// Image `n` put in the ECR repository with the ECR API, as a push would put it (ECR's
/// registry has no stand-in here), tagged `build-N`: its digest.
async fn put_ecr_image(ecr: &aws_sdk_ecr::Client, n: u32) -> String {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{n:064}"), "size": 2},
        // moto names an image by its layers' digests (ECR: by the manifest's), so
        // each image has its own layer.
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{:064}", n + 10), "size": 2}],
    });
    let out = ecr
        .put_image()
        .repository_name("qbo-invoice-processor")
        .image_manifest(manifest.to_string())
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
        .image_tag(format!("build-{n}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put image {n}: {e:?}"));
    out.image()
        .and_then(|i| i.image_id())
        .and_then(|i| i.image_digest())
        .unwrap()
        .to_owned()
}

/// Waits (up to a minute) for `child` to print `needle` on stderr, then runs `then`, then
/// waits for the child: whether it said it, its output, and all it said on stderr.
async fn when_said(
    mut child: std::process::Child,
    needle: &'static str,
    then: impl std::future::Future<Output = ()>,
) -> (bool, std::process::Output, String) {
    let pipe = child.stderr.take().unwrap();
    let (told, heard) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut all = String::new();
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = told.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut said = false;
    for _ in 0..600 {
        if heard.try_recv().is_ok() {
            said = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    then.await;
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    (said, output, reader.join().unwrap())
}
