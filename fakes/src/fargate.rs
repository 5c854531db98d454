//! A local Fargate: what moto only records, this runs. The AWS proxy (`fault_proxy`)
//! hands it ECS's `RunTask`, `DescribeTasks`, `StopTask` and `ListTasks`; every other
//! call still goes to moto. A task runs its image, pulled by digest from the local
//! registry, under runc, with the rules of the Amazon ECS developer guide:
//!
//! - the image config's user, entrypoint, command, environment and working directory;
//!   the task definition's command, environment and `secrets` (each `valueFrom` read
//!   from Secrets Manager, as the execution role would), and the overrides (command,
//!   environment, cpu, memory) ("Task definition parameters", "RunTask");
//! - `readonlyRootFilesystem`; each volume a bind mount created for the task: filled
//!   from the image when the image declares the path a `VOLUME`, else an empty
//!   root-owned 0755 directory ("Bind mounts");
//! - the container's memory hard limit as a cgroup: past it the kernel kills the
//!   container (exit 137), and the container's reason is "OutOfMemoryError: Container
//!   killed due to memory usage" while the task says "Essential container in task
//!   exited" ("Stopped tasks errors");
//! - `StopTask`: SIGTERM, then SIGKILL after the container's `stopTimeout` (30 s by
//!   default); stop code `UserInitiated`;
//! - an image that cannot be pulled stops the task with stop code `TaskFailedToStart`
//!   and "CannotPullContainerError: ...";
//! - states PROVISIONING, PENDING, RUNNING, DEPROVISIONING, STOPPED ("Task lifecycle");
//! - output to the awslogs group and stream `PREFIX/CONTAINER/TASK_ID` in moto's
//!   CloudWatch Logs.
//!
//! The container shares the host's network (it reaches moto and the fakes on loopback),
//! and gets what the platform gives a task: `AWS_REGION`, and here moto's endpoint and
//! test credentials in place of the task role's (IAM is not evaluated yet).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What a task knows of itself, in the shape DescribeTasks answers.
#[derive(Debug)]
struct Task {
    json: Value,
    /// runc's id for the container, once it runs.
    runc_id: String,
    /// StopTask sent SIGKILL: a 137 is then not the memory limit's.
    killed: bool,
    stop_timeout: Duration,
}

/// The local Fargate: tasks by ARN, and where it reaches moto and the registry.
#[derive(Debug)]
pub struct Fargate {
    moto: String,
    region: String,
    root: tempfile::TempDir,
    tasks: Mutex<BTreeMap<String, Task>>,
    runc: PathBuf,
    next: Mutex<u64>,
}

/// Why a task cannot start here, with the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

impl Fargate {
    /// A Fargate that calls moto at `moto` (`http://127.0.0.1:PORT`) in `region`.
    /// Needs runc (Debian's `runc`, which `make tools` installs) and root.
    pub fn new(moto: &str, region: &str) -> Result<Arc<Self>, Unavailable> {
        let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                Unavailable(
                    "no OCI runtime: tasks cannot run here; install runc (`make tools` does: apt-get install runc)".into(),
                )
            })?;
        let root = tempfile::Builder::new()
            .prefix("fargate-")
            .tempdir()
            .map_err(|e| Unavailable(format!("cannot make the tasks' directory: {e}")))?;
        Ok(Arc::new(Self {
            moto: moto.to_owned(),
            region: region.to_owned(),
            root,
            tasks: Mutex::new(BTreeMap::new()),
            runc,
            next: Mutex::new(0),
        }))
    }

    /// The answer to an ECS call this Fargate serves (`None`: moto's to answer).
    pub fn handle(self: &Arc<Self>, operation: &str, body: &[u8]) -> Option<(u16, Value)> {
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        match operation {
            "RunTask" => Some(self.run_task(&request)),
            "DescribeTasks" => Some(self.describe(&request)),
            "StopTask" => Some(self.stop(&request)),
            "ListTasks" => Some(self.list(&request)),
            _ => None,
        }
    }

    fn run_task(self: &Arc<Self>, request: &Value) -> (u16, Value) {
        let runtime = runtime();
        let definition = request["taskDefinition"].as_str().unwrap_or_default();
        let described = runtime.block_on(self.task_definition(definition));
        let definition = match described {
            Ok(d) => d,
            Err(e) => return client_error("ClientException", &e),
        };
        let cluster = request["cluster"].as_str().unwrap_or("default");
        let cluster_name = cluster.rsplit('/').next().unwrap_or(cluster);
        let account = definition["taskDefinitionArn"]
            .as_str()
            .and_then(|a| a.split(':').nth(4))
            .unwrap_or("123456789012")
            .to_owned();
        let count = request["count"].as_u64().unwrap_or(1).clamp(1, 10);
        let mut tasks = Vec::new();
        for _ in 0..count {
            let id = {
                let mut n = self.next.lock().expect("fargate lock");
                *n += 1;
                format!(
                    "{:032x}",
                    (u128::from(*n) << 64) | u128::from(fastrand_u64())
                )
            };
            let arn = format!(
                "arn:aws:ecs:{}:{account}:task/{cluster_name}/{id}",
                self.region
            );
            let container = &definition["containerDefinitions"][0];
            let now = now();
            let task = json!({
                "taskArn": arn,
                "clusterArn": format!("arn:aws:ecs:{}:{account}:cluster/{cluster_name}", self.region),
                "taskDefinitionArn": definition["taskDefinitionArn"],
                "group": request["group"].as_str().map_or_else(
                    || format!("family:{}", definition["family"].as_str().unwrap_or_default()),
                    str::to_owned,
                ),
                "startedBy": request["startedBy"],
                "launchType": "FARGATE",
                "cpu": request["overrides"]["cpu"].as_str().map_or_else(|| definition["cpu"].clone(), |c| json!(c)),
                "memory": request["overrides"]["memory"].as_str().map_or_else(|| definition["memory"].clone(), |m| json!(m)),
                "lastStatus": "PROVISIONING",
                "desiredStatus": "RUNNING",
                "createdAt": now,
                "overrides": request["overrides"].clone(),
                "containers": [{
                    "name": container["name"],
                    "image": container["image"],
                    "lastStatus": "PENDING",
                    "taskArn": arn,
                }],
                "tags": request["tags"].clone(),
            });
            let stop_timeout = Duration::from_secs(container["stopTimeout"].as_u64().unwrap_or(30));
            self.tasks.lock().expect("fargate lock").insert(
                arn.clone(),
                Task {
                    json: task.clone(),
                    runc_id: format!("task-{id}"),
                    killed: false,
                    stop_timeout,
                },
            );
            let (me, definition, request) = (Arc::clone(self), definition.clone(), request.clone());
            std::thread::spawn(move || me.run(&arn, &definition, &request));
            tasks.push(task.as_object().map_or(Value::Null, |t| {
                let mut t = t.clone();
                t.remove("tags");
                Value::Object(t)
            }));
        }
        (200, json!({"tasks": tasks, "failures": []}))
    }

    fn describe(&self, request: &Value) -> (u16, Value) {
        let tasks = self.tasks.lock().expect("fargate lock");
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for arn in request["tasks"].as_array().into_iter().flatten() {
            let arn = arn.as_str().unwrap_or_default();
            // A task may be named by its ARN or by its id.
            match tasks
                .iter()
                .find(|(a, _)| a.as_str() == arn || a.ends_with(&format!("/{arn}")))
            {
                Some((_, t)) => found.push(t.json.clone()),
                None => failures.push(json!({"arn": arn, "reason": "MISSING"})),
            }
        }
        (200, json!({"tasks": found, "failures": failures}))
    }

    fn list(&self, request: &Value) -> (u16, Value) {
        let tasks = self.tasks.lock().expect("fargate lock");
        let desired = request["desiredStatus"].as_str().unwrap_or("RUNNING");
        let cluster = request["cluster"].as_str().unwrap_or("default");
        let cluster_name = cluster.rsplit('/').next().unwrap_or(cluster);
        let arns: Vec<&String> = tasks
            .iter()
            .filter(|(_, t)| t.json["desiredStatus"] == desired)
            .filter(|(_, t)| {
                t.json["clusterArn"]
                    .as_str()
                    .is_some_and(|c| c.ends_with(&format!("/{cluster_name}")))
            })
            .filter(|(_, t)| {
                request["family"].as_str().is_none_or(|f| {
                    t.json["group"].as_str() == Some(format!("family:{f}").as_str())
                })
            })
            .filter(|(_, t)| {
                request["startedBy"]
                    .as_str()
                    .is_none_or(|s| t.json["startedBy"] == s)
            })
            .map(|(a, _)| a)
            .collect();
        (200, json!({"taskArns": arns}))
    }

    fn stop(self: &Arc<Self>, request: &Value) -> (u16, Value) {
        let wanted = request["task"].as_str().unwrap_or_default();
        let reason = request["reason"].as_str().unwrap_or("Task stopped by user");
        let (runc_id, timeout, arn) = {
            let mut tasks = self.tasks.lock().expect("fargate lock");
            let Some((arn, task)) = tasks
                .iter_mut()
                .find(|(a, _)| a.as_str() == wanted || a.ends_with(&format!("/{wanted}")))
            else {
                return client_error(
                    "InvalidParameterException",
                    "The referenced task was not found.",
                );
            };
            task.json["desiredStatus"] = json!("STOPPED");
            if task.json["stopCode"].is_null() {
                task.json["stopCode"] = json!("UserInitiated");
                task.json["stoppedReason"] = json!(reason);
                task.json["stoppingAt"] = json!(now());
            }
            (task.runc_id.clone(), task.stop_timeout, arn.clone())
        };
        // SIGTERM now, SIGKILL once the stop timeout has passed.
        let me = Arc::clone(self);
        let target = arn.clone();
        std::thread::spawn(move || {
            let arn = target;
            let _ = me.runc(&["kill", &runc_id, "TERM"]).status();
            let started = Instant::now();
            while started.elapsed() < timeout {
                if me.status_of(&arn).as_deref() == Some("STOPPED") {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(t) = me.tasks.lock().expect("fargate lock").get_mut(&arn) {
                t.killed = true;
            }
            let _ = me.runc(&["kill", &runc_id, "KILL"]).status();
        });
        let tasks = self.tasks.lock().expect("fargate lock");
        (
            200,
            json!({"task": tasks.get(&arn).map(|t| t.json.clone())}),
        )
    }

    fn status_of(&self, arn: &str) -> Option<String> {
        self.tasks
            .lock()
            .expect("fargate lock")
            .get(arn)
            .and_then(|t| t.json["lastStatus"].as_str().map(str::to_owned))
    }

    fn set(&self, arn: &str, change: impl FnOnce(&mut Value)) {
        if let Some(t) = self.tasks.lock().expect("fargate lock").get_mut(arn) {
            change(&mut t.json);
        }
    }

    fn runc(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.runc);
        c.args(args).stdin(Stdio::null());
        c
    }

    /// The task from start to STOPPED.
    fn run(&self, arn: &str, definition: &Value, request: &Value) {
        let id = arn.rsplit('/').next().unwrap_or_default().to_owned();
        let bundle = self.root.path().join(&id);
        let prepared = runtime().block_on(self.prepare(&bundle, definition, request, &id));
        let logs = match prepared {
            Ok(logs) => logs,
            Err(Failure { stop_code, reason }) => {
                self.set(arn, |t| {
                    t.json_stop(&stop_code, &reason, None, None);
                });
                return;
            }
        };
        if self.status_of(arn).as_deref() == Some("STOPPED")
            || self
                .tasks
                .lock()
                .expect("fargate lock")
                .get(arn)
                .is_some_and(|t| t.json["desiredStatus"] == "STOPPED")
        {
            self.set(arn, |t| {
                t.json_stop(
                    "UserInitiated",
                    "Task stopped before it started",
                    None,
                    None,
                );
            });
            return;
        }
        self.set(arn, |t| {
            t["lastStatus"] = json!("PENDING");
            t["pullStoppedAt"] = json!(now());
        });
        let runc_id = self
            .tasks
            .lock()
            .expect("fargate lock")
            .get(arn)
            .map(|t| t.runc_id.clone())
            .unwrap_or_default();
        let child = self
            .runc(&["run", "--bundle", &bundle.to_string_lossy(), &runc_id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                self.set(arn, |t| {
                    t.json_stop(
                        "TaskFailedToStart",
                        &format!("CannotStartContainerError: runc did not start: {e}"),
                        None,
                        None,
                    );
                });
                return;
            }
        };
        self.set(arn, |t| {
            t["lastStatus"] = json!("RUNNING");
            t["startedAt"] = json!(now());
            t["containers"][0]["lastStatus"] = json!("RUNNING");
        });
        // Both streams, line by line, to the awslogs stream.
        let lines: Arc<Mutex<Vec<(i64, String)>>> = Arc::new(Mutex::new(Vec::new()));
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines
                        .lock()
                        .expect("lines")
                        .push((jiff::Timestamp::now().as_millisecond(), line));
                }
            })
        })
        .collect();
        let shipping = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let shipper = {
            let (lines, shipping, logs) = (Arc::clone(&lines), Arc::clone(&shipping), logs.clone());
            let moto = self.moto.clone();
            let region = self.region.clone();
            std::thread::spawn(move || {
                let rt = runtime();
                loop {
                    let done = !shipping.load(std::sync::atomic::Ordering::SeqCst);
                    let batch: Vec<(i64, String)> =
                        std::mem::take(&mut *lines.lock().expect("lines"));
                    if !batch.is_empty()
                        && let Some((group, stream)) = &logs
                    {
                        let _ = rt.block_on(put_logs(&moto, &region, group, stream, batch));
                    }
                    if done {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        let status = child.wait();
        for r in readers {
            let _ = r.join();
        }
        // runc's own failure to start the container (its message on stderr) is the
        // platform's, not the job's exit.
        let not_started = lines
            .lock()
            .expect("lines")
            .iter()
            .find(|(_, l)| l.contains("runc run failed"))
            .map(|(_, l)| l.clone());
        shipping.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = shipper.join();
        self.set(arn, |t| t["lastStatus"] = json!("DEPROVISIONING"));
        let _ = self.runc(&["delete", "--force", &runc_id]).status();
        let code = status.ok().and_then(|s| {
            s.code()
                .or_else(|| std::os::unix::process::ExitStatusExt::signal(&s).map(|n| 128 + n))
        });
        let killed = self
            .tasks
            .lock()
            .expect("fargate lock")
            .get(arn)
            .is_some_and(|t| t.killed);
        // A 137 this Fargate did not cause is the memory cgroup's kill.
        let container_reason = (code == Some(137) && !killed)
            .then_some("OutOfMemoryError: Container killed due to memory usage");
        let _ = std::fs::remove_dir_all(&bundle);
        if let Some(why) = not_started {
            self.set(arn, |t| {
                t.json_stop(
                    "TaskFailedToStart",
                    &format!("CannotStartContainerError: {why}"),
                    None,
                    None,
                );
            });
            return;
        }
        self.set(arn, |t| {
            let (stop_code, reason) = match t["stopCode"].as_str() {
                Some(c) => (
                    c.to_owned(),
                    t["stoppedReason"].as_str().unwrap_or_default().to_owned(),
                ),
                None => (
                    "EssentialContainerExited".to_owned(),
                    "Essential container in task exited".to_owned(),
                ),
            };
            t.json_stop(&stop_code, &reason, code, container_reason);
        });
    }

    /// The task definition, as ECS answers DescribeTaskDefinition (from moto).
    async fn task_definition(&self, name: &str) -> Result<Value, String> {
        let v = aws_json(
            &self.moto,
            &self.region,
            "ecs",
            "AmazonEC2ContainerServiceV20141113.DescribeTaskDefinition",
            &json!({"taskDefinition": name}),
        )
        .await?;
        Ok(v["taskDefinition"].clone())
    }

    /// Pulls the image and lays out the bundle: the rootfs, the volumes, runc's
    /// config. Returns the config and the awslogs `(group, stream)`.
    async fn prepare(
        &self,
        bundle: &Path,
        definition: &Value,
        request: &Value,
        id: &str,
    ) -> Result<Option<(String, String)>, Failure> {
        let container = &definition["containerDefinitions"][0];
        let name = container["name"].as_str().unwrap_or("main");
        let image = container["image"].as_str().unwrap_or_default();
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|e| Failure::start(&e.to_string()))?;
        let image_config = pull(image, &rootfs)
            .await
            .map_err(|e| Failure {
                stop_code: "TaskFailedToStart".into(),
                reason: format!("CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref {image}: {e}"),
            })?;
        let config = &image_config["config"];
        // The command: the override's, else the task definition's, else the image's.
        let overrides = request["overrides"]["containerOverrides"]
            .as_array()
            .and_then(|o| o.iter().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_default();
        let command: Vec<String> = [&overrides["command"], &container["command"], &config["Cmd"]]
            .into_iter()
            .find_map(|c| c.as_array().filter(|a| !a.is_empty()).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let mut args: Vec<String> = container["entryPoint"]
            .as_array()
            .or_else(|| config["Entrypoint"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        args.extend(command);
        // The environment: the image's, the task definition's, the secrets, the
        // overrides', then what the platform gives.
        let mut env: BTreeMap<String, String> = config["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                e.as_str()?
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        for e in container["environment"].as_array().into_iter().flatten() {
            if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        for s in container["secrets"].as_array().into_iter().flatten() {
            let (Some(k), Some(from)) = (s["name"].as_str(), s["valueFrom"].as_str()) else {
                continue;
            };
            let value = self.secret(from).await.map_err(|e| Failure {
                stop_code: "TaskFailedToStart".into(),
                reason: format!("ResourceInitializationError: unable to pull secrets or registry auth: unable to retrieve secret from asm: {e}"),
            })?;
            env.insert(k.to_owned(), value);
        }
        for e in overrides["environment"].as_array().into_iter().flatten() {
            if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        env.insert("AWS_REGION".into(), self.region.clone());
        env.insert("AWS_DEFAULT_REGION".into(), self.region.clone());
        env.insert("AWS_ENDPOINT_URL".into(), self.moto.clone());
        env.entry("AWS_ACCESS_KEY_ID".into())
            .or_insert_with(|| "testing".into());
        env.entry("AWS_SECRET_ACCESS_KEY".into())
            .or_insert_with(|| "testing".into());
        env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
        env.insert(
            "ECS_CONTAINER_METADATA_URI_V4".into(),
            format!("http://169.254.170.2/v4/{id}"),
        );

        // Volumes: a bind mount each, made for the task.
        let mut mounts = Vec::new();
        let declared = config["Volumes"].as_object().cloned().unwrap_or_default();
        for m in container["mountPoints"].as_array().into_iter().flatten() {
            let (Some(source), Some(path)) =
                (m["sourceVolume"].as_str(), m["containerPath"].as_str())
            else {
                continue;
            };
            let host = bundle.join("volumes").join(source);
            std::fs::create_dir_all(&host).map_err(|e| Failure::start(&e.to_string()))?;
            let inside = rootfs.join(path.trim_start_matches('/'));
            if declared.contains_key(path) && inside.is_dir() {
                // The image's content and permissions, as Docker fills a named volume.
                copy_tree(&inside, &host).map_err(|e| Failure::start(&e.to_string()))?;
            } else {
                set_mode(&host, 0o755);
            }
            std::fs::create_dir_all(&inside).map_err(|e| Failure::start(&e.to_string()))?;
            mounts.push(json!({
                "destination": path,
                "type": "bind",
                "source": host,
                "options": ["rbind", if m["readOnly"] == true { "ro" } else { "rw" }],
            }));
        }
        let memory_mib = overrides["memory"]
            .as_u64()
            .or_else(|| container["memory"].as_u64())
            .or_else(|| {
                request["overrides"]["memory"]
                    .as_str()
                    .or_else(|| definition["memory"].as_str())
                    .and_then(|m| m.parse().ok())
            })
            .unwrap_or(512);
        let (uid, gid) = user_of(config["User"].as_str().unwrap_or("0"), &rootfs);
        let spec = runc_config(
            &args,
            &env,
            config["WorkingDir"]
                .as_str()
                .filter(|w| !w.is_empty())
                .unwrap_or("/"),
            (uid, gid),
            container["readonlyRootFilesystem"] == true,
            mounts,
            memory_mib * 1024 * 1024,
            id,
        );
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap_or_default(),
        )
        .map_err(|e| Failure::start(&e.to_string()))?;
        let logs = container["logConfiguration"]["options"]
            .as_object()
            .and_then(|o| {
                let group = o.get("awslogs-group")?.as_str()?.to_owned();
                let prefix = o.get("awslogs-stream-prefix")?.as_str()?;
                Some((group, format!("{prefix}/{name}/{id}")))
            });
        Ok(logs)
    }

    /// A secret's value as the execution role reads it: `valueFrom` is the secret's
    /// ARN, or `ARN:json-key:version-stage:version-id` for one key of a JSON secret.
    async fn secret(&self, from: &str) -> Result<String, String> {
        let parts: Vec<&str> = from.split(':').collect();
        let (arn, key) = if parts.len() > 7 {
            (
                parts[..7].join(":"),
                parts
                    .get(7)
                    .filter(|k| !k.is_empty())
                    .map(|k| (*k).to_owned()),
            )
        } else {
            (from.to_owned(), None)
        };
        let v = aws_json(
            &self.moto,
            &self.region,
            "secretsmanager",
            "secretsmanager.GetSecretValue",
            &json!({"SecretId": arn}),
        )
        .await?;
        let text = v["SecretString"].as_str().unwrap_or_default().to_owned();
        match key {
            None => Ok(text),
            Some(k) => serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|j| j[k.as_str()].as_str().map(str::to_owned))
                .ok_or_else(|| format!("the secret {arn} has no key {k}")),
        }
    }
}

/// A task that could not start, as ECS reports it.
#[derive(Debug)]
struct Failure {
    stop_code: String,
    reason: String,
}

impl Failure {
    fn start(why: &str) -> Self {
        Self {
            stop_code: "TaskFailedToStart".into(),
            reason: format!("CannotStartContainerError: {why}"),
        }
    }
}

/// Stopping a task record.
trait Stop {
    fn json_stop(
        &mut self,
        stop_code: &str,
        reason: &str,
        exit: Option<i32>,
        container_reason: Option<&str>,
    );
}

impl Stop for Value {
    fn json_stop(
        &mut self,
        stop_code: &str,
        reason: &str,
        exit: Option<i32>,
        container_reason: Option<&str>,
    ) {
        let at = now();
        self["lastStatus"] = json!("STOPPED");
        self["desiredStatus"] = json!("STOPPED");
        self["stopCode"] = json!(stop_code);
        self["stoppedReason"] = json!(reason);
        self["stoppedAt"] = json!(at);
        self["executionStoppedAt"] = json!(at);
        self["containers"][0]["lastStatus"] = json!("STOPPED");
        if let Some(code) = exit {
            self["containers"][0]["exitCode"] = json!(code);
        }
        if let Some(r) = container_reason {
            self["containers"][0]["reason"] = json!(r);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// ECS answers times as epoch seconds.
fn now() -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let ms = jiff::Timestamp::now().as_millisecond() as f64;
    ms / 1000.0
}

fn fastrand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[allow(clippy::cast_possible_truncation)]
    let x = (t as u64) ^ u64::from(std::process::id()).rotate_left(32);
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn client_error(kind: &str, message: &str) -> (u16, Value) {
    (400, json!({"__type": kind, "message": message}))
}

/// One JSON-protocol call to moto (unsigned: moto reads the region from the scope).
async fn aws_json(
    moto: &str,
    region: &str,
    service: &str,
    target: &str,
    body: &Value,
) -> Result<Value, String> {
    let answer = reqwest::Client::new()
        .post(moto)
        .header("x-amz-target", target)
        .header("content-type", "application/x-amz-json-1.1")
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    let v: Value = answer.json().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(v)
    } else {
        Err(v["message"]
            .as_str()
            .or_else(|| v["Message"].as_str())
            .unwrap_or("refused")
            .to_owned())
    }
}

async fn put_logs(
    moto: &str,
    region: &str,
    group: &str,
    stream: &str,
    lines: Vec<(i64, String)>,
) -> Result<(), String> {
    let _ = aws_json(
        moto,
        region,
        "logs",
        "Logs_20140328.CreateLogStream",
        &json!({"logGroupName": group, "logStreamName": stream}),
    )
    .await;
    let events: Vec<Value> = lines
        .into_iter()
        .map(|(t, m)| json!({"timestamp": t, "message": m}))
        .collect();
    aws_json(
        moto,
        region,
        "logs",
        "Logs_20140328.PutLogEvents",
        &json!({"logGroupName": group, "logStreamName": stream, "logEvents": events}),
    )
    .await
    .map(drop)
}

/// Pulls `REGISTRY/REPO@sha256:...` over the distribution API, checks each digest,
/// unpacks the layers into `rootfs`, and returns the image config.
async fn pull(image: &str, rootfs: &Path) -> Result<Value, String> {
    use sha2::Digest as _;
    let (host, rest) = image
        .split_once('/')
        .ok_or("not REGISTRY/REPOSITORY@DIGEST")?;
    let (repo, digest) = rest
        .split_once('@')
        .ok_or("the image is not pinned by digest")?;
    let base = format!("http://{host}/v2/{repo}");
    let http = reqwest::Client::new();
    let get = |url: String, accept: &'static str| {
        let http = http.clone();
        async move {
            let r = http
                .get(&url)
                .header("accept", accept)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("{}: not found", r.status()));
            }
            r.bytes().await.map_err(|e| e.to_string())
        }
    };
    let check = |bytes: &[u8], want: &str| {
        let got = format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)));
        if got == want {
            Ok(())
        } else {
            Err(format!("digest mismatch: {got} is not {want}"))
        }
    };
    let manifest = get(
        format!("{base}/manifests/{digest}"),
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
    )
    .await?;
    check(&manifest, digest)?;
    let manifest: Value = serde_json::from_slice(&manifest).map_err(|e| e.to_string())?;
    let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let config = get(format!("{base}/blobs/{config_digest}"), "*/*").await?;
    check(&config, config_digest)?;
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let d = layer["digest"].as_str().unwrap_or_default();
        let blob = get(format!("{base}/blobs/{d}"), "*/*").await?;
        check(&blob, d)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_ref()));
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.unpack(rootfs).map_err(|e| e.to_string())?;
    }
    serde_json::from_slice(&config).map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `uid[:gid]` (numbers, or names from the image's /etc/passwd and /etc/group).
fn user_of(user: &str, rootfs: &Path) -> (u32, u32) {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let look = |file: &str, name: &str, field: usize| -> Option<u32> {
        std::fs::read_to_string(rootfs.join(file))
            .ok()?
            .lines()
            .find_map(|l| {
                let parts: Vec<&str> = l.split(':').collect();
                (parts.first() == Some(&name)).then(|| parts.get(field)?.parse().ok())?
            })
    };
    let uid = u
        .parse()
        .ok()
        .or_else(|| look("etc/passwd", u, 2))
        .unwrap_or(0);
    let gid = if g.is_empty() {
        look("etc/passwd", u, 3).unwrap_or(uid)
    } else {
        g.parse()
            .ok()
            .or_else(|| look("etc/group", g, 2))
            .unwrap_or(uid)
    };
    (uid, gid)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Copies `from`'s content into `to`, with modes and owners.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other("cp -a failed"));
    }
    let meta = std::fs::metadata(from)?;
    std::fs::set_permissions(to, meta.permissions())
}

/// runc's config for the task's container: the host's network (loopback reaches moto
/// and the fakes), a memory cgroup at the hard limit, the task's mounts.
#[allow(clippy::too_many_arguments)]
fn runc_config(
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: &str,
    (uid, gid): (u32, u32),
    readonly: bool,
    volumes: Vec<Value>,
    memory: u64,
    id: &str,
) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    mounts.extend(volumes);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": cwd,
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            },
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": readonly},
        "hostname": "fargate",
        "mounts": mounts,
        "linux": {
            "resources": {"memory": {"limit": memory}},
            "cgroupsPath": format!("/qbo-fargate/{id}"),
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}
