//! Starts moto and the registry as child processes on free loopback ports, waits until
//! they accept connections, and kills them on drop. Binaries are found through an
//! environment override, the workspace's `.venv/`, then the system.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_mins(1);

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("{what} not found (looked at {looked}); run `make tools` to install it")]
    NotInstalled { what: &'static str, looked: String },
    #[error("{what} failed to start: {reason}\n--- its log ---\n{log}")]
    Failed {
        what: &'static str,
        reason: String,
        log: String,
    },
    #[error("cannot prepare {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// A running server process; killed and reaped on drop.
#[derive(Debug)]
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Server {
    /// Spawns `command` (built for a port) until one attempt is listening: a port taken
    /// between choosing and binding is retried with another.
    fn start(
        what: &'static str,
        probe: &'static str,
        dir: TempDir,
        mut command: impl FnMut(u16, &Path) -> Command,
    ) -> Result<Self, EmulatorError> {
        let io = |source| EmulatorError::Io { what, source };
        let log = dir.path().join("server.log");
        let mut last = None;
        for _ in 0..3 {
            let port = free_port().map_err(io)?;
            let out = File::create(&log).map_err(io)?;
            let err = out.try_clone().map_err(io)?;
            let mut child = command(port, dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(io)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_ready(what, probe, &mut child, addr, &log) {
                Ok(()) => {
                    return Ok(Self { child, addr, dir });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = Some(e);
                }
            }
        }
        Err(last.expect("the loop ran"))
    }

    fn log(&self) -> String {
        read_log(&self.dir.path().join("server.log"))
    }
}

/// Waits until `GET probe` answers 200, from our child: the child is checked first, so
/// another process that took the port is never mistaken for it.
fn wait_ready(
    what: &'static str,
    probe: &str,
    child: &mut Child,
    addr: SocketAddr,
    log: &Path,
) -> Result<(), EmulatorError> {
    let failed = |reason: String| EmulatorError::Failed {
        what,
        reason,
        log: read_log(log),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!("exited with {status}")));
        }
        if answers_ok(addr, probe) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(failed(format!(
                "not listening on {addr} after {START_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.0 GET: whether the status line says 200.
fn answers_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// The workspace root, where `make tools` puts `.venv/`.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fakes lives in the workspace")
        .to_path_buf()
}

/// `$OVERRIDE`, then each candidate, then `name` on PATH.
fn find_binary(
    what: &'static str,
    override_var: &str,
    candidates: &[PathBuf],
    name: &str,
) -> Result<PathBuf, EmulatorError> {
    if let Some(path) = std::env::var_os(override_var) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let looked: Vec<PathBuf> = candidates.iter().cloned().chain(on_path).collect();
    looked
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| EmulatorError::NotInstalled {
            what,
            looked: format!(
                "${override_var}, {}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ) + &format!(" and {name} on PATH"),
        })
}

/// A moto server (the AWS emulator) with AWS managed policies loaded.
#[derive(Debug)]
pub struct Moto {
    server: Server,
}

/// moto's server, with a task's container `cpu` and `memory` given as strings, RunTask
/// refusing a task-level memory override below a container's hard limit (ECS
/// ContainerDefinition, memory; the message is unverified); with
/// `MOTO_SNS_EMAIL_PENDING` set, email subscriptions stay pending, as SNS keeps them
/// until the recipient confirms (ListSubscriptionsByTopic then gives
/// `PendingConfirmation` for their ARN; moto confirms them at once).
const MOTO_AS_ECS_ANSWERS: &str = r"
import sys
import moto.ecs.models as ecs
_init = ecs.Container.__init__
def _as_ecs(self, task_def):
    _init(self, task_def)
    self.cpu = str(self.cpu)
    if self.memory is not None:
        self.memory = str(self.memory)
ecs.Container.__init__ = _as_ecs
import moto.ecs.exceptions as ecs_errors
_run_task = ecs.EC2ContainerServiceBackend.run_task
def _checked_run_task(self, cluster_str, task_definition_str, count, overrides, *args, **kwargs):
    memory = (overrides or {}).get('memory')
    if memory is not None:
        td = self.describe_task_definition(task_definition_str)
        limits = {o.get('name'): o.get('memory') for o in (overrides or {}).get('containerOverrides', [])}
        for c in td.container_definitions:
            limit = limits.get(c.get('name')) or c.get('memory')
            if limit is not None and int(limit) > int(memory):
                raise ecs_errors.InvalidParameterException(
                    'Container.memory should not be greater than Task.memory')
    return _run_task(self, cluster_str, task_definition_str, count, overrides, *args, **kwargs)
ecs.EC2ContainerServiceBackend.run_task = _checked_run_task
import os
if os.environ.get('MOTO_SNS_EMAIL_PENDING'):
    import moto.sns.models as sns
    sns.Subscription.SubscriptionArn = property(
        lambda self: 'PendingConfirmation' if self.protocol in ('email', 'email-json') else self.arn)
from moto.server import main
sys.exit(main())
";

impl Moto {
    pub fn start() -> Result<Self, EmulatorError> {
        Self::start_with(false)
    }

    /// As [`Moto::start`], with email subscriptions left pending confirmation.
    pub fn start_with_pending_email_subscriptions() -> Result<Self, EmulatorError> {
        Self::start_with(true)
    }

    fn start_with(pending_email: bool) -> Result<Self, EmulatorError> {
        let bin = find_binary(
            "moto_server",
            "MOTO_SERVER",
            &[workspace_root().join(".venv/bin/moto_server")],
            "moto_server",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("moto-")
            .tempdir()
            .map_err(|source| EmulatorError::Io {
                what: "moto_server",
                source,
            })?;
        // moto answers a task's Container.cpu and memory as JSON numbers; ECS gives
        // strings (ECS API reference, "Container": cpu, memory: String), and the SDK
        // refuses numbers there. moto runs with that one answer made as ECS makes it.
        let python = bin.with_file_name("python");
        let server = Server::start("moto_server", "/moto-api/", dir, |port, _| {
            let mut c = if python.is_file() {
                let mut c = Command::new(&python);
                c.args(["-c", MOTO_AS_ECS_ANSWERS]);
                c
            } else {
                Command::new(&bin)
            };
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true");
            if pending_email {
                c.env("MOTO_SNS_EMAIL_PENDING", "1");
            }
            c
        })?;
        Ok(Self { server })
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// Debian's docker-registry (CNCF distribution), storing blobs in a temp directory.
#[derive(Debug)]
pub struct Registry {
    server: Server,
}

impl Registry {
    pub fn start() -> Result<Self, EmulatorError> {
        let bin = find_binary(
            "docker-registry",
            "DOCKER_REGISTRY",
            &[PathBuf::from("/usr/bin/docker-registry")],
            "docker-registry",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("registry-")
            .tempdir()
            .map_err(|source| EmulatorError::Io {
                what: "docker-registry",
                source,
            })?;
        let server = Server::start("docker-registry", "/v2/", dir, |port, dir| {
            let config = dir.join("config.yml");
            let yaml = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            );
            // A failed write shows up as the registry failing to start, with its log.
            let _ = std::fs::write(&config, yaml);
            let mut c = Command::new(&bin);
            c.arg("serve").arg(config);
            c
        })?;
        Ok(Self { server })
    }

    /// `127.0.0.1:PORT`, as image references name it.
    pub fn host(&self) -> String {
        self.server.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The registry's log, including one access-log line per request.
    pub fn log(&self) -> String {
        self.server.log()
    }
}
