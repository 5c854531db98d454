//! `deployer push-image`: build the image without Docker (or with it, `--docker`) and
//! push it to the environment's registry; prints `REPOSITORY@sha256:...` last.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use infra::env::{Architecture, Registry};
use oci_client::secrets::RegistryAuth;
use serde_json::json;

use crate::cli::{Cli, Format, PushImageArgs};
use crate::error::{Error, Result};
use crate::image::{self, Inputs, registry::Target};
use crate::output;

pub async fn run(cli: &Cli, args: &PushImageArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let started = Instant::now();
    let root = workspace_root();
    let target = crate::deployed::target(cli, &env).await?;
    if args.docker {
        return docker(root.as_deref(), &target, args.output);
    }
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => build_release(root.as_deref())?,
    };
    let assets = args
        .assets
        .clone()
        .or_else(|| root.as_ref().map(|r| r.join("assets")))
        .unwrap_or_else(|| PathBuf::from("assets"));
    let architecture = image::host_architecture();
    let wanted = match env.file.task.architecture {
        Architecture::X86_64 => "amd64",
        Architecture::ARM64 => "arm64",
    };
    if architecture != wanted {
        return Err(Error::Prerequisite(
            format!(
                "this machine builds {architecture} binaries, but task.architecture is {}",
                env.file.task.architecture.as_str()
            ),
            "build on a matching machine, or change task.architecture".into(),
        ));
    }
    let revision = root
        .as_deref()
        .map_or_else(|| "unknown".to_owned(), image::revision);
    let base = match &args.base {
        None => image::Base::Host {
            sysroot: args.sysroot.clone(),
        },
        Some(reference) => {
            let insecure = if target.insecure {
                vec![target.host.clone()]
            } else {
                Vec::new()
            };
            let auth = if reference.starts_with(&format!("{}/", target.host)) {
                target.auth.clone()
            } else {
                RegistryAuth::Anonymous
            };
            image::Base::Pinned(
                image::registry::pull_base(reference, architecture, &insecure, &auth).await?,
            )
        }
    };
    let built = image::assemble(&Inputs {
        base,
        binary,
        assets,
        revision: revision.clone(),
        architecture: architecture.to_owned(),
    })?;

    let mut tags = vec![format!(
        "sha256-{}",
        &built.digest["sha256:".len().."sha256:".len() + 16]
    )];
    // The commit names the image only when this run built the binary from a clean tree.
    let clean = revision.len() >= 12 && !revision.ends_with("-dirty") && revision != "unknown";
    if clean && args.binary.is_none() {
        tags.insert(0, format!("git-{}", &revision[..12]));
    }
    tags.extend(args.tags.iter().cloned());
    // Tags are immutable as the repository says, in a local registry too (ECR
    // refuses to move them); `deployer-latest` moves, as it must.
    let mut mutable: Vec<String> = if env.file.repository.immutable_tags {
        Vec::new()
    } else {
        tags.clone()
    };
    if matches!(env.file.registry, Registry::Local { .. }) {
        tags.push(infra::stack::LATEST_TAG.to_owned());
        mutable.push(infra::stack::LATEST_TAG.to_owned());
    }
    let text = args.output == Format::Text;
    let progress = |what: &str, digest: &str, size: usize, uploaded: bool| {
        if text {
            let done = if uploaded {
                "uploaded"
            } else {
                "already there"
            };
            eprintln!("  {what:<6} {}  {:>9}  {done}", &digest[..19], human(size));
        }
    };
    let report = target.push(&built, &tags, &mutable, &progress).await?;
    let pinned = target.pinned(&built.digest);
    if text {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "Pushed {} ({} compressed) in {:.1}s, tags: {}",
            target.repository,
            human(built.compressed_size()),
            started.elapsed().as_secs_f64(),
            report.tags.join(", ")
        );
        output::text(&format!("{pinned}\n"))?;
    } else {
        output::json(&json!({
            "image": pinned,
            "digest": built.digest,
            "tags": report.tags,
            "warnings": report.warnings,
            "revision": revision,
            "compressed_bytes": built.compressed_size(),
            "layers": built.layers.iter().map(|(name, l)| json!({"name": name, "digest": l.digest, "bytes": l.blob.len()})).collect::<Vec<_>>(),
            "uploaded": report.uploaded.iter().map(|(what, digest, bytes)| json!({"blob": what, "digest": digest, "bytes": bytes})).collect::<Vec<_>>(),
            "skipped": report.skipped.iter().map(|(what, digest)| json!({"blob": what, "digest": digest})).collect::<Vec<_>>(),
            "seconds": started.elapsed().as_secs_f64(),
        }))?;
    }
    Ok(())
}

/// A release build of the job from the checkout this runs in.
pub fn build_release_in_checkout() -> Result<PathBuf> {
    build_release(workspace_root().as_deref())
}

/// The checkout's root: the nearest directory up from here with `app/Cargo.toml`.
fn workspace_root() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .find(|d| d.join("app/Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

/// `cargo build --release` of the job, returning the executable cargo reports.
fn build_release(root: Option<&Path>) -> Result<PathBuf> {
    let root = root.ok_or_else(|| {
        Error::Prerequisite(
            "not in the project checkout, so there is nothing to build".into(),
            "run from the checkout, or pass --binary PATH".into(),
        )
    })?;
    eprintln!("Building qbo-invoice-processor (release)...");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "qbo-invoice-processor",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| {
            Error::Prerequisite(
                format!("cannot run cargo: {e}"),
                "install Rust, or pass --binary PATH".into(),
            )
        })?;
    if !out.status.success() {
        return Err(Error::Prerequisite(
            "cargo build failed (see above)".into(),
            "fix the build, or pass --binary PATH".into(),
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "qbo-invoice-processor")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| Error::Internal("cargo reported no qbo-invoice-processor executable".into()))
}

/// `--docker`: the Dockerfile, built and pushed by a Docker engine.
fn docker(root: Option<&Path>, target: &Target, format: Format) -> Result<()> {
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    let engine = match &info {
        Ok(out) if out.status.success() => true,
        Ok(_) | Err(_) => false,
    };
    if !engine {
        let why = match info {
            Ok(out) => String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            Err(e) => e.to_string(),
        };
        return Err(Error::Prerequisite(
            format!("--docker needs a Docker engine, and none is reachable ({why})"),
            "start Docker, or leave out --docker: push-image builds the same image with no engine"
                .into(),
        ));
    }
    let root = root.unwrap_or(Path::new("."));
    let tag = format!(
        "{}/{}:docker-{}",
        target.host,
        target.repository,
        image::revision(root).chars().take(12).collect::<String>()
    );
    if let RegistryAuth::Basic(user, password) = &target.auth {
        run_docker(
            Command::new("docker").args([
                "login",
                "--username",
                user,
                "--password",
                password,
                &target.host,
            ]),
            "log in",
        )?;
    }
    run_docker(
        Command::new("docker")
            .args(["build", "--tag", &tag])
            .arg(root),
        "build",
    )?;
    run_docker(Command::new("docker").args(["push", &tag]), "push")?;
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{index .RepoDigests 0}}", &tag])
        .output()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let pinned = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match format {
        Format::Text => output::text(&format!("{pinned}\n")),
        Format::Json => output::json(&json!({"image": pinned})),
    }
}

fn run_docker(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .map_err(|e| Error::Internal(e.to_string()))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Prerequisite(
            format!("docker {what} failed (see above)"),
            "fix the Docker error above".into(),
        ))
    }
}

fn human(bytes: usize) -> String {
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    if b >= 1_048_576.0 {
        format!("{:.1} MiB", b / 1_048_576.0)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}
