//! `push-image` against the local registry (Debian's docker-registry): the pushed image
//! is pulled back through the registry API, unpacked, and run with `chroot`; identical
//! builds share a digest and a second push uploads nothing.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fakes::emulators::{Moto, Registry};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{root, stderr, stdout};

/// The job's binary from this build (next to the deployer), built if missing.
pub fn job_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_deployer")).with_file_name("qbo-invoice-processor");
    if !path.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "qbo-invoice-processor"])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

fn push(registry: &Registry, binary: &Path) -> Value {
    let out = deployer_with(
        registry,
        None,
        &[
            "push-image",
            "--env",
            "local",
            "--binary",
            binary.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn deployer_with(registry: &Registry, moto: Option<&Moto>, args: &[&str]) -> Output {
    super::deployer_command(moto.map(Moto::endpoint).as_deref())
        .args(args)
        .env("DEPLOYER_REGISTRY", registry.host())
        .output()
        .unwrap()
}

/// A GET through the registry API, blocking for brevity in tests.
fn get(url: &str, accept: &str) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::Client::new()
            .get(url)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "GET {url}: {}", res.status());
        res.bytes().await.unwrap().to_vec()
    })
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

#[test]
fn pushed_image_pulled_back_and_unpacked_runs_the_job_with_nothing_else() {
    let registry = Registry::start().unwrap();
    let pushed = push(&registry, &job_binary());
    let digest = pushed["digest"].as_str().unwrap();
    assert!(stdout_line(&pushed).ends_with(digest));

    // Pull through the distribution API and check every digest.
    let base = format!("{}/v2/qbo-invoice-processor", registry.url());
    let manifest = get(
        &format!("{base}/manifests/{digest}"),
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(sha256(&manifest), digest);
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = get(&format!("{base}/blobs/{config_digest}"), "*/*");
    assert_eq!(sha256(&config), config_digest);
    let config: Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    // /tmp is declared a volume, so Fargate fills the task's /tmp bind mount from the
    // image's (mode 1777) instead of making it root-owned 0755.
    assert_eq!(config["config"]["Volumes"], serde_json::json!({"/tmp": {}}));
    assert_eq!(
        config["config"]["Entrypoint"][0],
        "/usr/local/bin/qbo-invoice-processor"
    );
    assert!(
        config["config"]["Labels"]["org.opencontainers.image.revision"]
            .as_str()
            .unwrap()
            .len()
            >= 7
    );

    let rootfs = tempfile::tempdir().unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let blob = get(&format!("{base}/blobs/{d}"), "*/*");
        assert_eq!(sha256(&blob), d);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(blob.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        archive.set_preserve_permissions(true);
        archive.unpack(rootfs.path()).unwrap();
    }
    assert!(
        rootfs
            .path()
            .join("app/assets/sent_invoices_email_template.html")
            .is_file()
    );
    assert!(
        rootfs
            .path()
            .join("etc/ssl/certs/ca-certificates.crt")
            .is_file()
    );
    let tmp = std::fs::metadata(rootfs.path().join("tmp")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&tmp.permissions()) & 0o7777,
        0o1777
    );

    // The image holds everything the binary needs: it runs with only its own files.
    let out = Command::new("chroot")
        .arg(rootfs.path())
        .args(["/usr/local/bin/qbo-invoice-processor", "--help"])
        .output()
        .expect("chroot runs (tests run as root)");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("--create-invoices"),
        "{}",
        stdout(&out)
    );
}

fn stdout_line(pushed: &Value) -> String {
    pushed["image"].as_str().unwrap().to_owned()
}

#[test]
fn identical_builds_share_a_digest_and_a_second_push_uploads_no_blob() {
    let registry = Registry::start().unwrap();
    let binary = job_binary();
    let first = push(&registry, &binary);
    assert_eq!(first["uploaded"].as_array().unwrap().len(), 3, "{first}");
    let uploads = |log: &str| {
        log.matches("\"POST /v2/qbo-invoice-processor/blobs/uploads/")
            .count()
    };
    let before = uploads(&registry.log());
    assert_eq!(before, 3, "{}", registry.log());

    let second = push(&registry, &binary);
    assert_eq!(
        second["digest"], first["digest"],
        "same inputs, same digest"
    );
    assert!(
        second["uploaded"].as_array().unwrap().is_empty(),
        "{second}"
    );
    assert_eq!(second["skipped"].as_array().unwrap().len(), 3);
    assert_eq!(
        uploads(&registry.log()),
        before,
        "the registry saw no new upload"
    );
}

#[test]
fn a_changed_binary_uploads_only_the_app_layer_and_its_config() {
    let registry = Registry::start().unwrap();
    let binary = job_binary();
    let first = push(&registry, &binary);
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("qbo-invoice-processor");
    let mut bytes = std::fs::read(&binary).unwrap();
    bytes.extend_from_slice(b"a change");
    std::fs::write(&changed, bytes).unwrap();
    let second = push(&registry, &changed);
    assert_ne!(second["digest"], first["digest"]);
    let uploaded: Vec<&str> = second["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["blob"].as_str().unwrap())
        .collect();
    assert_eq!(uploaded, ["app", "config"]);
    let skipped: Vec<&str> = second["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["blob"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["base"]);
}

#[test]
fn up_runs_the_newest_pushed_image_when_none_is_given() {
    let registry = Registry::start().unwrap();
    let moto = Moto::start().unwrap();
    let out = deployer_with(&registry, Some(&moto), &["diff", "--env", "local"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no image of qbo-invoice-processor has been pushed yet"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("run `deployer push-image --env local` first"),
        "{}",
        stderr(&out)
    );

    let pushed = push(&registry, &job_binary());
    let out = deployer_with(
        &registry,
        Some(&moto),
        &["up", "--env", "local", "--yes", "--output", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let image = pushed["image"].as_str().unwrap();
    let diff = deployer_with(
        &registry,
        Some(&moto),
        &["diff", "--env", "local", "--image", image, "--exit-code"],
    );
    assert_eq!(
        diff.status.code(),
        Some(0),
        "the deployed task runs {image}: {}{}",
        stdout(&diff),
        stderr(&diff)
    );
}

#[test]
fn docker_flag_without_an_engine_says_what_to_do() {
    let registry = Registry::start().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_deployer"));
    let out = c
        .args(["push-image", "--env", "local", "--docker"])
        .current_dir(root())
        .env("DEPLOYER_REGISTRY", registry.host())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--docker needs a Docker engine, and none is reachable"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("leave out --docker"),
        "{}",
        stderr(&out)
    );
}

fn push_with(registry: &Registry, binary: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "push-image",
        "--env",
        "local",
        "--binary",
        binary.to_str().unwrap(),
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    deployer_with(registry, None, &args)
}

fn pushed(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A copy of this host's root as the base layer reads it (the binary's libraries and
/// the CA bundle), with `edit` applied: another build host.
fn other_host(binary: &Path, edit: impl Fn(&Path)) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    let mut files: Vec<PathBuf> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    files.push("/etc/ssl/certs/ca-certificates.crt".into());
    for f in files {
        let to = root.path().join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
    edit(root.path());
    root
}

#[test]
fn a_pinned_base_gives_the_same_digest_whatever_the_build_host_and_old_glibc_is_refused() {
    let registry = Registry::start().unwrap();
    let binary = job_binary();
    let host = other_host(&binary, |root| {
        let ca = root.join("etc/ssl/certs/ca-certificates.crt");
        let mut text = std::fs::read(&ca).unwrap();
        text.extend_from_slice(b"# this host's bundle differs\n");
        std::fs::write(ca, text).unwrap();
    });
    let sysroot = host.path().to_str().unwrap();

    // From the hosts' own libraries, the digest follows the host.
    let here = pushed(&push_with(&registry, &binary, &[]));
    let there = pushed(&push_with(&registry, &binary, &["--sysroot", sysroot]));
    assert_ne!(here["digest"], there["digest"]);

    // A base in the registry, pinned by digest: both hosts build the same image.
    let base = format!(
        "{}/qbo-invoice-processor@{}",
        registry.host(),
        here["digest"].as_str().unwrap()
    );
    let here = pushed(&push_with(&registry, &binary, &["--base", &base]));
    let there = pushed(&push_with(
        &registry,
        &binary,
        &["--base", &base, "--sysroot", sysroot],
    ));
    assert_eq!(here["digest"], there["digest"]);
    let names: Vec<&str> = here["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["base", "base", "app"],
        "the base's layers, then ours"
    );
    let url = format!("{}/v2/qbo-invoice-processor", registry.url());
    let manifest: Value = serde_json::from_slice(&get(
        &format!("{url}/manifests/{}", here["digest"].as_str().unwrap()),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    let config: Value = serde_json::from_slice(&get(
        &format!(
            "{url}/blobs/{}",
            manifest["config"]["digest"].as_str().unwrap()
        ),
        "*/*",
    ))
    .unwrap();
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.base.name"],
        base.as_str()
    );
    // Every blob went up in one request: ECR refuses parts under 5 MiB.
    assert!(
        !registry.log().contains("\"PATCH /v2/"),
        "{}",
        registry.log()
    );

    // A base given by tag is refused: it would not pin anything.
    let out = push_with(
        &registry,
        &binary,
        &[
            "--base",
            &format!("{}/qbo-invoice-processor:deployer-latest", registry.host()),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not pinned by digest"),
        "{}",
        stderr(&out)
    );

    // A host whose glibc loads name resolution at run time is refused, with the fix.
    let old = other_host(&binary, |root| {
        let ldd = Command::new("ldd").arg(&binary).output().unwrap();
        let text = String::from_utf8_lossy(&ldd.stdout).into_owned();
        let libc = text
            .split_whitespace()
            .find(|w| w.starts_with('/') && w.contains("/libc.so"))
            .unwrap();
        std::fs::write(
            root.join(libc.trim_start_matches('/')),
            b"\x7fELF...GNU C Library (Ubuntu GLIBC 2.31-0ubuntu9.16) stable release version 2.31.\n",
        )
        .unwrap();
    });
    let out = push_with(
        &registry,
        &binary,
        &["--sysroot", old.path().to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("glibc is 2.31"), "{err}");
    assert!(err.contains("--base REGISTRY/REPO@sha256:"), "{err}");
}

#[test]
fn a_tag_naming_another_image_is_left_with_a_warning_and_the_image_is_stored() {
    let registry = Registry::start().unwrap();
    let binary = job_binary();
    let first = pushed(&push_with(&registry, &binary, &["--tag", "v1"]));
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("qbo-invoice-processor");
    let mut bytes = std::fs::read(&binary).unwrap();
    bytes.extend_from_slice(b"a rebuild");
    std::fs::write(&changed, bytes).unwrap();
    let out = push_with(&registry, &changed, &["--tag", "v1"]);
    let second = pushed(&out);
    assert_ne!(second["digest"], first["digest"]);
    assert!(
        second["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("tag v1 already names"),
        "{second}"
    );
    let url = format!("{}/v2/qbo-invoice-processor/manifests", registry.url());
    let accept = "application/vnd.oci.image.manifest.v1+json";
    assert_eq!(
        sha256(&get(&format!("{url}/v1"), accept)),
        first["digest"].as_str().unwrap(),
        "v1 still names the first image"
    );
    let stored = get(
        &format!("{url}/{}", second["digest"].as_str().unwrap()),
        accept,
    );
    assert_eq!(sha256(&stored), second["digest"].as_str().unwrap());
}
