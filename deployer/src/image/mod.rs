//! Builds the job's container image with no Docker engine: a base layer with exactly
//! what the binary needs to run (its shared libraries and loader as the dynamic linker
//! reports them, CA certificates, a non-root user, `/tmp`), an app layer with the
//! binary and `assets/`, an OCI config and manifest. The same inputs give the same
//! digest anywhere.

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
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Debug, Clone)]
pub struct Inputs {
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

    let mut base = Files::default();
    for lib in shared_libraries(&inputs.binary)? {
        let data = std::fs::read(&lib).map_err(io(lib.display().to_string()))?;
        base.file(&lib.to_string_lossy(), 0o755, data);
    }
    let ca = std::fs::read(CA_BUNDLE).map_err(|e| {
        Error::Prerequisite(
            format!("cannot read the CA certificates at {CA_BUNDLE}: {e}"),
            "install them (Debian: apt-get install ca-certificates)".into(),
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

    let mut app = Files::default();
    let binary = std::fs::read(&inputs.binary).map_err(io(inputs.binary.display().to_string()))?;
    app.file(BINARY_PATH, 0o755, binary);
    add_tree(&mut app, &inputs.assets, ASSETS_PATH)?;

    let layers = vec![("base", layer::build(&base)?), ("app", layer::build(&app)?)];
    let config = serde_json::to_vec(&json!({
        "architecture": inputs.architecture,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": format!("{USER_ID}:{USER_ID}"),
            "Entrypoint": [BINARY_PATH],
            "WorkingDir": WORKDIR,
            "Env": [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                format!("SSL_CERT_FILE={CA_BUNDLE}"),
            ],
            "Labels": {
                "org.opencontainers.image.revision": inputs.revision,
                "org.opencontainers.image.source": env!("CARGO_PKG_REPOSITORY"),
                "org.opencontainers.image.title": "qbo-invoice-processor",
            },
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
            "mediaType": LAYER_TYPE, "digest": l.digest, "size": l.blob.len(),
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
