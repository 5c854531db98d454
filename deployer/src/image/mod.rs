//! Builds the job's container image with no Docker engine: base layers, an app layer
//! with the binary and `assets/`, an OCI config and manifest.
//!
//! The base is either the build host's (exactly what the binary needs to run: its
//! shared libraries and loader as the dynamic linker reports them, CA certificates, a
//! non-root user, `/tmp`), so the digest depends on the host's files; or an image
//! pinned by digest (`--base REGISTRY/REPO@sha256:...`, as ko does), so the digest
//! depends only on that base and the binary.

pub mod layer;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::error::{Error, Result};
use layer::{Files, Layer};

pub const BINARY_PATH: &str = "/usr/local/bin/qbo-invoice-processor";
pub const ASSETS_PATH: &str = "/app/assets";
pub const WORKDIR: &str = "/app";
/// The non-root user the job runs as (distroless's `nonroot`).
pub const USER_ID: u64 = 65532;
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Where the base layers come from.
#[derive(Debug, Clone)]
pub enum Base {
    /// The build host's libraries and CA certificates, read under this root (`/`).
    Host { sysroot: PathBuf },
    /// An image pinned by digest, pulled from its registry.
    Pinned(Pinned),
}

/// A pulled base image.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// `REGISTRY/REPO@sha256:...` as given.
    pub reference: String,
    /// The platform manifest's digest (the index's, when given one, is in `reference`).
    pub digest: String,
    pub layers: Vec<Layer>,
    /// The image config, whose `config` (environment, user...) the job's starts from.
    pub config: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct Inputs {
    pub base: Base,
    pub binary: PathBuf,
    pub assets: PathBuf,
    /// The git commit (with `-dirty` for uncommitted changes), for the label and tag.
    pub revision: String,
    /// `amd64` or `arm64`.
    pub architecture: String,
}

#[derive(Debug, Clone)]
pub struct Image {
    /// `(name, layer)`: `base`, then `app`.
    pub layers: Vec<(&'static str, Layer)>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    /// Every blob the registry must hold: `(what, digest, bytes)`.
    pub fn blobs(&self) -> Vec<(&'static str, &str, &[u8])> {
        let mut blobs: Vec<(&'static str, &str, &[u8])> = self
            .layers
            .iter()
            .map(|(name, l)| (*name, l.digest.as_str(), l.blob.as_slice()))
            .collect();
        blobs.push(("config", &self.config_digest, &self.config));
        blobs
    }

    pub fn compressed_size(&self) -> usize {
        self.layers.iter().map(|(_, l)| l.blob.len()).sum::<usize>() + self.config.len()
    }
}

pub fn assemble(inputs: &Inputs) -> Result<Image> {
    let io = |what: String| {
        move |e: std::io::Error| {
            Error::Prerequisite(format!("cannot read {what}: {e}"), "check the path".into())
        }
    };

    let (mut layers, base_config) = match &inputs.base {
        Base::Host { sysroot } => (vec![("base", host_layer(&inputs.binary, sysroot)?)], None),
        Base::Pinned(pinned) => {
            let arch = pinned.config["architecture"].as_str().unwrap_or_default();
            if arch != inputs.architecture || pinned.config["os"] != "linux" {
                return Err(Error::Prerequisite(
                    format!(
                        "the base {} is for {}/{arch}, and the job is built for linux/{}",
                        pinned.reference, pinned.config["os"].as_str().unwrap_or("?"), inputs.architecture
                    ),
                    "pin the base image's digest for this architecture (or its multi-platform index)".into(),
                ));
            }
            let layers = pinned.layers.iter().map(|l| ("base", l.clone())).collect();
            (layers, Some(pinned))
        }
    };

    let mut app = Files::default();
    let binary = std::fs::read(&inputs.binary).map_err(io(inputs.binary.display().to_string()))?;
    app.file(BINARY_PATH, 0o755, binary);
    add_tree(&mut app, &inputs.assets, ASSETS_PATH)?;

    layers.push(("app", layer::build(&app)?));
    let mut env = vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
        format!("SSL_CERT_FILE={CA_BUNDLE}"),
    ];
    let mut labels = json!({
        "org.opencontainers.image.revision": inputs.revision,
        "org.opencontainers.image.source": env!("CARGO_PKG_REPOSITORY"),
        "org.opencontainers.image.title": "qbo-invoice-processor",
    });
    if let Some(base) = base_config {
        // The base's environment (minus what the job sets), and where it came from.
        let ours: Vec<String> = env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, _)| k.to_owned())
            .collect();
        let inherited = base.config["config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str());
        env.extend(
            inherited
                .filter(|e| {
                    !ours
                        .iter()
                        .any(|k| e.split_once('=').is_some_and(|(n, _)| n == k))
                })
                .map(str::to_owned),
        );
        labels["org.opencontainers.image.base.name"] = json!(base.reference);
        labels["org.opencontainers.image.base.digest"] = json!(base.digest);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": inputs.architecture,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": format!("{USER_ID}:{USER_ID}"),
            "Entrypoint": [BINARY_PATH],
            "WorkingDir": WORKDIR,
            // Declared a volume, Fargate fills the task's /tmp bind mount from the
            // image's /tmp (mode 1777); undeclared, it is a root-owned 0755 directory the
            // non-root job cannot write ("Bind mounts", Amazon ECS developer guide).
            "Volumes": {"/tmp": {}},
            "Env": env,
            "Labels": labels,
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|(_, l)| l.diff_id.clone()).collect::<Vec<_>>(),
        },
    }))
    .map_err(|e| Error::Internal(e.to_string()))?;
    let config_digest = layer::sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|(_, l)| json!({
            "mediaType": l.media_type, "digest": l.digest, "size": l.blob.len(),
        })).collect::<Vec<_>>(),
    }))
    .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Image {
        digest: layer::sha256(&manifest),
        layers,
        config,
        config_digest,
        manifest,
    })
}

/// The base layer from the build host: the binary's libraries and loader, CA
/// certificates, a non-root user and `/tmp`, each read under `sysroot`.
fn host_layer(binary: &Path, sysroot: &Path) -> Result<Layer> {
    let io = |what: String| {
        move |e: std::io::Error| {
            Error::Prerequisite(format!("cannot read {what}: {e}"), "check the path".into())
        }
    };
    let under = |path: &Path| sysroot.join(path.strip_prefix("/").unwrap_or(path));
    let libraries = shared_libraries(binary)?;
    if let Some(libc) = libraries.iter().find(|l| {
        l.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
    }) {
        let data = std::fs::read(under(libc)).map_err(io(under(libc).display().to_string()))?;
        check_glibc(&data)?;
    }
    let mut base = Files::default();
    for lib in libraries {
        let data = std::fs::read(under(&lib)).map_err(io(under(&lib).display().to_string()))?;
        base.file(&lib.to_string_lossy(), 0o755, data);
    }
    let ca = std::fs::read(under(Path::new(CA_BUNDLE))).map_err(|e| {
        Error::Prerequisite(
            format!("cannot read the CA certificates at {CA_BUNDLE}: {e}"),
            "install them (Debian: apt-get install ca-certificates), or pass --base".into(),
        )
    })?;
    base.file(CA_BUNDLE, 0o644, ca);
    base.file(
        "/etc/passwd",
        0o644,
        format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER_ID}:{USER_ID}:nonroot:/home/nonroot:/sbin/nologin\n").into_bytes(),
    );
    base.file(
        "/etc/group",
        0o644,
        format!("root:x:0:\nnonroot:x:{USER_ID}:\n").into_bytes(),
    );
    base.dir("/tmp", 0o1777, 0);
    base.dir("/home/nonroot", 0o700, USER_ID);

    Ok(layer::build(&base)?)
}

/// The oldest glibc whose name resolution is inside libc.so.6: before 2.34, `getaddrinfo`
/// loads `libnss_dns`/`libnss_files` at run time, which `ldd` does not list, so an image
/// built from such a host cannot resolve any name (glibc 2.34 NEWS: the NSS modules
/// "files" and "dns" are built into libc).
const GLIBC_MIN: (u32, u32) = (2, 34);

/// Refuses a host glibc older than [`GLIBC_MIN`], read from libc's own version banner
/// ("... release version 2.36."); a libc with no banner (musl) passes.
fn check_glibc(libc: &[u8]) -> Result<()> {
    let marker = b"release version ";
    let Some(at) = libc.windows(marker.len()).position(|w| w == marker) else {
        return Ok(());
    };
    let tail = &libc[at + marker.len()..libc.len().min(at + marker.len() + 16)];
    let text: String = tail
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .map(|b| char::from(*b))
        .collect();
    let mut parts = text.trim_end_matches('.').split('.').map(str::parse::<u32>);
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    if (major, minor) < GLIBC_MIN {
        return Err(Error::Prerequisite(
            format!(
                "this host's glibc is {major}.{minor}: before {}.{} name resolution needs libraries ldd does not list, so the image could not resolve any host name",
                GLIBC_MIN.0, GLIBC_MIN.1
            ),
            "build on a host with glibc 2.34 or newer (Debian 12, Ubuntu 22.04, Amazon Linux 2023, RHEL 9), or pass --base REGISTRY/REPO@sha256:... (e.g. gcr.io/distroless/cc-debian12 by digest)".into(),
        ));
    }
    Ok(())
}

/// The libraries and loader the binary needs, as `ldd` (the dynamic linker) lists them;
/// none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().map_err(|e| {
        Error::Prerequisite(
            format!("cannot run ldd: {e}"),
            "install libc-bin (it ships ldd)".into(),
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable")
        || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
    {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(Error::Prerequisite(
            format!(
                "ldd cannot read {}: {}",
                binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "pass a Linux executable built for this machine with --binary".into(),
        ));
    }
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some((name, rest)) = line.split_once("=>") {
            let path = rest.trim().split(" (").next().unwrap_or_default().trim();
            if path == "not found" {
                return Err(Error::Prerequisite(
                    format!(
                        "{} needs {}, which is not on this machine",
                        binary.display(),
                        name.trim()
                    ),
                    "install the library, or build a binary that does not need it".into(),
                ));
            }
            if path.starts_with('/') {
                libs.push(PathBuf::from(path));
            }
        } else if let Some(path) = line.split(" (").next().filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// Adds every file under `dir` at `at`, keeping the relative layout.
fn add_tree(files: &mut Files, dir: &Path, at: &str) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Prerequisite(
            format!("cannot read the assets directory {}: {e}", dir.display()),
            "run from the project checkout or pass --assets DIR".into(),
        )
    })?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let target = format!("{at}/{name}");
        if path.is_dir() {
            add_tree(files, &path, &target)?;
        } else {
            files.file(&target, 0o644, std::fs::read(&path)?);
        }
    }
    files.dir(at, 0o755, 0);
    Ok(())
}

/// `git rev-parse HEAD`, with `-dirty` when the tree has uncommitted changes.
pub fn revision(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            }
        }
        None => "unknown".into(),
    }
}

/// The image architecture of this machine's binaries.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}
