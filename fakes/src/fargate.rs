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
//!   CloudWatch Logs;
//! - each change of a task's status an ECS "Task State Change" event, matched against
//!   the default bus's rules with EventBridge's pattern syntax and delivered through
//!   each target's input transformer: to a log group only where a CloudWatch Logs
//!   resource policy lets events.amazonaws.com write, to SNS as a Publish
//!   ([`Fargate::delivered`] keeps what each target was given);
//! - RunTask's refusals before any task exists (see `refusal`), and a schedule's firing
//!   that is refused counted as Scheduler's `TargetErrorCount`;
//! - every line a task writes meets its log group's metric filters, and the alarms on
//!   what they publish evaluate and notify ([`crate::cloudwatch`]).
//!
//! The container shares the host's network (it reaches moto and the fakes on loopback),
//! and gets what the platform gives a task: `AWS_REGION`, and the task role's
//! credentials from a container credentials endpoint (STS credentials of the role, once
//! its trust policy lets `ecs-tasks.amazonaws.com` assume it). Its AWS calls go through
//! the proxy, which authorizes them against the role's policies
//! ([`crate::iam_auth`]).

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
    /// Every event target invoked and every alarm notification: `(target ARN, what it
    /// was given)`, or the refusal.
    delivered: Mutex<Vec<(String, Result<String, String>)>>,
    /// Metric filters and alarms, evaluated.
    watch: crate::cloudwatch::Watch,
    /// The task roles' sessions, and their calls authorized.
    authorizer: Arc<crate::iam_auth::Authorizer>,
    /// Where a task's AWS calls go: the proxy in front of moto, once it listens.
    endpoint: std::sync::OnceLock<String>,
    /// The container credentials endpoint: credentials by task id.
    credentials: Arc<Mutex<BTreeMap<String, Value>>>,
    credentials_port: u16,
    /// RunTask's answers by `clientToken`: the same token answers the same tasks again,
    /// and starts none (ECS API reference, RunTask `clientToken`; "Ensuring idempotency").
    /// How long ECS keeps a token is UNVERIFIED: kept here for the process's life.
    answered: Mutex<BTreeMap<String, (u16, Value)>>,
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
        // runc sets up the container's mounts and its memory cgroup: root's to do.
        // (/proc/self belongs to the process's effective user.)
        let uid = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata("/proc/self")
                .map_err(|e| Unavailable(format!("cannot read /proc/self: {e}")))?,
        );
        if uid != 0 {
            return Err(Unavailable(format!(
                "tasks cannot run here: runc needs root to mount the task's filesystem and set its memory limit, and this process runs as uid {uid}; run as root (`sudo make demo`, `sudo make test`, or inside a container or VM)"
            )));
        }
        let upstream = moto
            .trim_start_matches("http://")
            .parse::<std::net::SocketAddr>()
            .map_err(|e| Unavailable(format!("moto's address {moto}: {e}")))?;
        let credentials: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
        let credentials_port = serve_credentials(Arc::clone(&credentials))
            .map_err(|e| Unavailable(format!("cannot serve task credentials: {e}")))?;
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
            delivered: Mutex::new(Vec::new()),
            watch: crate::cloudwatch::Watch::new(moto, region),
            authorizer: Arc::new(crate::iam_auth::Authorizer::new(upstream)),
            endpoint: std::sync::OnceLock::new(),
            credentials,
            credentials_port,
            answered: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Who authorizes the task roles' calls (the proxy asks it).
    pub fn authorizer(&self) -> Arc<crate::iam_auth::Authorizer> {
        Arc::clone(&self.authorizer)
    }

    /// Tasks call AWS at `endpoint` (the proxy that serves this Fargate), not moto.
    pub fn serve_through(&self, endpoint: &str) {
        let _ = self.endpoint.set(endpoint.to_owned());
    }

    /// The answer to an ECS call this Fargate serves (`None`: moto's to answer).
    pub fn handle(self: &Arc<Self>, operation: &str, body: &[u8]) -> Option<(u16, Value)> {
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        match operation {
            "RunTask" => Some(self.run_task_once(&request)),
            "DescribeTasks" => Some(self.describe(&request)),
            "StopTask" => Some(self.stop(&request)),
            "ListTasks" => Some(self.list(&request)),
            _ => None,
        }
    }

    /// RunTask, answered once per client token: a retry of a call whose answer was lost
    /// (the SDK's retries keep the token) gets the tasks the first one started.
    fn run_task_once(self: &Arc<Self>, request: &Value) -> (u16, Value) {
        let Some(token) = request["clientToken"].as_str().map(str::to_owned) else {
            return self.run_task(request);
        };
        let mut answered = self.answered.lock().expect("fargate lock");
        if let Some(answer) = answered.get(&token) {
            return answer.clone();
        }
        let answer = self.run_task(request);
        if answer.0 == 200 {
            answered.insert(token, answer.clone());
        }
        answer
    }

    fn run_task(self: &Arc<Self>, request: &Value) -> (u16, Value) {
        let runtime = runtime();
        let definition = request["taskDefinition"].as_str().unwrap_or_default();
        let described = runtime.block_on(self.task_definition(definition));
        let definition = match described {
            Ok(d) => d,
            Err(e) => return client_error("ClientException", &e),
        };
        if let Err((kind, message)) = refusal(request, &definition) {
            return client_error(kind, &message);
        }
        // ECS runs a Fargate task as its service-linked role; an account without it
        // (CreateCluster made none: its caller could not) starts nothing (CreateCluster
        // API reference; awslabs/fargatecli issue 35).
        if !self.authorizer.ecs_service_linked_role_exists() {
            return client_error(
                "InvalidParameterException",
                "Unable to assume the service linked role. Please verify that the ECS service linked role exists.",
            );
        }
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
                    (u128::from(*n) << 64) | u128::from(fastrand::u64(..))
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

    /// Changes a task; a change of its status is an ECS "Task State Change" event,
    /// delivered to the rules that match it.
    fn set(&self, arn: &str, change: impl FnOnce(&mut Value)) {
        let changed = {
            let mut tasks = self.tasks.lock().expect("fargate lock");
            let Some(t) = tasks.get_mut(arn) else { return };
            let before = t.json["lastStatus"].clone();
            change(&mut t.json);
            (t.json["lastStatus"] != before).then(|| t.json.clone())
        };
        if let Some(task) = changed {
            let event = state_change(&task, &self.region);
            if let Err(e) = runtime().block_on(self.deliver(&event)) {
                self.delivered
                    .lock()
                    .expect("fargate lock")
                    .push(("events".into(), Err(e)));
            }
        }
    }

    /// Moves the schedules' clock from `from` to `to`: every enabled EventBridge
    /// Scheduler schedule of moto fires at each of its cron times in that span, in its
    /// time zone (a local time skipped in spring does not run, one repeated in autumn
    /// runs once: "Schedule types", EventBridge Scheduler user guide), starting its
    /// task with the schedule's `Input` as the task overrides. Returns each firing:
    /// `(schedule, time, task ARN or why not)`.
    pub fn advance(
        self: &Arc<Self>,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
    ) -> Result<Vec<Firing>, String> {
        let schedules = runtime().block_on(self.schedules())?;
        let mut fired = Vec::new();
        for schedule in schedules {
            if schedule["State"] != "ENABLED" {
                continue;
            }
            let name = schedule["Name"].as_str().unwrap_or_default().to_owned();
            let expression = schedule["ScheduleExpression"].as_str().unwrap_or_default();
            let zone = schedule["ScheduleExpressionTimezone"]
                .as_str()
                .unwrap_or("UTC");
            let tz = jiff::tz::TimeZone::get(zone).map_err(|e| format!("{name}: {e}"))?;
            let cron = Cron::parse(expression).map_err(|e| format!("{name}: {e}"))?;
            for at in cron.between(from, to, &tz) {
                let target = &schedule["Target"];
                let ecs = &target["EcsParameters"];
                let overrides = target["Input"]
                    .as_str()
                    .map_or(Ok(json!({})), serde_json::from_str::<Value>);
                let outcome = match overrides {
                    // Scheduler refuses an input that is not JSON: a target error.
                    Err(e) => Err(format!("TargetErrorCount: the input is not JSON: {e}")),
                    Ok(overrides) => {
                        let request = json!({
                            "cluster": target["Arn"],
                            "taskDefinition": ecs["TaskDefinitionArn"],
                            "launchType": ecs["LaunchType"],
                            "count": ecs["TaskCount"].as_u64().unwrap_or(1),
                            "networkConfiguration": ecs["NetworkConfiguration"],
                            "overrides": overrides,
                        });
                        let allowed = self.schedule_may_run(target, &request);
                        let (status, answer) = match allowed {
                            Ok(()) => self.run_task(&request),
                            Err(e) => (403, json!({"message": e})),
                        };
                        if status == 200 {
                            answer["tasks"][0]["taskArn"]
                                .as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| "TargetErrorCount: no task".to_owned())
                        } else {
                            Err(format!("TargetErrorCount: {answer}"))
                        }
                    }
                };
                if outcome.is_err() {
                    // Scheduler counts a target's refusal as TargetErrorCount in
                    // AWS/Scheduler by ScheduleGroup ("Monitoring EventBridge Scheduler
                    // with Amazon CloudWatch"); the alarms on it evaluate a minute on.
                    let key = crate::cloudwatch::MetricKey {
                        namespace: "AWS/Scheduler".into(),
                        name: "TargetErrorCount".into(),
                        dimensions: BTreeMap::from([(
                            "ScheduleGroup".to_owned(),
                            schedule["GroupName"]
                                .as_str()
                                .unwrap_or("default")
                                .to_owned(),
                        )]),
                    };
                    let evaluated = runtime().block_on(async {
                        self.watch.publish(&key, at, 1.0).await?;
                        let then = at + jiff::SignedDuration::from_mins(1);
                        self.watch
                            .evaluate(then, Some(std::slice::from_ref(&key)))
                            .await
                    });
                    self.notified(evaluated);
                }
                fired.push((name.clone(), at, outcome));
            }
        }
        fired.sort_by_key(|(_, at, _)| *at);
        Ok(fired)
    }

    /// Whether the schedule's role lets Scheduler start this task: Scheduler assumes the
    /// role (its trust policy must let `scheduler.amazonaws.com`), which must allow
    /// `ecs:RunTask` on the task definition (with `ecs:cluster`), `iam:PassRole` of the
    /// task's roles to `ecs-tasks.amazonaws.com`, and, when tags propagate,
    /// `ecs:TagResource` on the new task (`ecs:CreateAction` RunTask) ("Using IAM roles
    /// with EventBridge Scheduler"; ECS's "Grant permission to tag resources on creation").
    fn schedule_may_run(&self, target: &Value, request: &Value) -> Result<(), String> {
        use crate::iam_policy::Request;
        let role = target["RoleArn"].as_str().unwrap_or_default();
        let named = request["taskDefinition"].as_str().unwrap_or_default();
        let definition = runtime().block_on(self.task_definition(named))?;
        let cluster = request["cluster"].as_str().unwrap_or_default();
        let mut asked = vec![
            Request::new(
                "ecs:RunTask",
                definition["taskDefinitionArn"].as_str().unwrap_or(named),
            )
            .with("ecs:cluster", cluster),
        ];
        for key in ["taskRoleArn", "executionRoleArn"] {
            if let Some(passed) = definition[key].as_str().filter(|r| !r.is_empty()) {
                asked.push(
                    Request::new("iam:PassRole", passed)
                        .with("iam:PassedToService", "ecs-tasks.amazonaws.com"),
                );
            }
        }
        if target["EcsParameters"]["PropagateTags"].is_string() {
            let cluster_name = cluster.rsplit('/').next().unwrap_or(cluster);
            let task = format!(
                "{}task/{cluster_name}/new",
                cluster.split("cluster/").next().unwrap_or_default()
            );
            asked.push(Request::new("ecs:TagResource", &task).with("ecs:CreateAction", "RunTask"));
        }
        self.authorizer
            .authorize_role(role, "scheduler.amazonaws.com", &asked)
    }

    /// Every schedule of moto's EventBridge Scheduler, whole.
    async fn schedules(&self) -> Result<Vec<Value>, String> {
        let http = reqwest::Client::new();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{}/scheduler/aws4_request, SignedHeaders=host, Signature=0",
            self.region
        );
        let get = |url: String| {
            let (http, auth) = (http.clone(), auth.clone());
            async move {
                http.get(url)
                    .header("authorization", auth)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json::<Value>()
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        let listed = get(format!("{}/schedules", self.moto)).await?;
        let mut out = Vec::new();
        for s in listed["Schedules"].as_array().into_iter().flatten() {
            let name = s["Name"].as_str().unwrap_or_default();
            let group = s["GroupName"].as_str().unwrap_or("default");
            out.push(get(format!("{}/schedules/{name}?groupName={group}", self.moto)).await?);
        }
        Ok(out)
    }

    /// Stops a task whose container never ran.
    fn never_ran(&self, arn: &str, stop_code: &str, reason: &str) {
        self.set(arn, |t| t.json_stop(stop_code, reason, None, None));
    }

    /// Every event target invoked and alarm notification sent so far, with what it was
    /// given (or why not).
    pub fn delivered(&self) -> Vec<(String, Result<String, String>)> {
        self.delivered.lock().expect("fargate lock").clone()
    }

    /// Log events ingested into `group` (by a task, or through the AWS proxy): its
    /// metric filters publish, and the alarms on those metrics evaluate now.
    pub fn logged(&self, group: &str, events: &[(i64, String)]) {
        let rt = runtime();
        let outcome = rt.block_on(async {
            let metrics = self.watch.ingest(group, events).await?;
            if metrics.is_empty() {
                return Ok(Vec::new());
            }
            self.watch
                .evaluate(jiff::Timestamp::now(), Some(&metrics))
                .await
        });
        self.notified(outcome);
    }

    /// Evaluates every alarm at `at` (a test clock's time) and returns the changes.
    pub fn evaluate_alarms(
        &self,
        at: jiff::Timestamp,
    ) -> Result<Vec<crate::cloudwatch::Notified>, String> {
        let outcome = runtime().block_on(self.watch.evaluate(at, None));
        self.notified(outcome.clone());
        outcome
    }

    fn notified(&self, outcome: Result<Vec<crate::cloudwatch::Notified>, String>) {
        let mut delivered = self.delivered.lock().expect("fargate lock");
        match outcome {
            Ok(changes) => {
                for n in changes {
                    delivered.extend(n.sent);
                }
            }
            Err(e) => delivered.push(("alarms".into(), Err(e))),
        }
    }

    /// Delivers `event` as EventBridge would: to each target of each enabled rule of
    /// the default bus whose pattern matches, through its input transformer; a log
    /// group only if its resource policy lets events.amazonaws.com write there.
    async fn deliver(&self, event: &Value) -> Result<(), String> {
        let (moto, region) = (&self.moto, &self.region);
        let rules = aws_json(moto, region, "events", "AWSEvents.ListRules", &json!({})).await?;
        for rule in rules["Rules"].as_array().into_iter().flatten() {
            if rule["State"] != "ENABLED" {
                continue;
            }
            let Some(pattern) = rule["EventPattern"]
                .as_str()
                .and_then(|p| serde_json::from_str::<Value>(p).ok())
            else {
                continue;
            };
            if !matches(&pattern, event) {
                continue;
            }
            let targets = aws_json(
                moto,
                region,
                "events",
                "AWSEvents.ListTargetsByRule",
                &json!({"Rule": rule["Name"]}),
            )
            .await?;
            for target in targets["Targets"].as_array().into_iter().flatten() {
                let arn = target["Arn"].as_str().unwrap_or_default().to_owned();
                let input = match (&target["InputTransformer"], target["Input"].as_str()) {
                    (Value::Object(t), _) => {
                        let paths: BTreeMap<String, String> = t
                            .get("InputPathsMap")
                            .and_then(Value::as_object)
                            .map(|m| {
                                m.iter()
                                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let template = t
                            .get("InputTemplate")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        transform(&paths, template, event)
                    }
                    (_, Some(fixed)) => fixed.to_owned(),
                    _ => event.to_string(),
                };
                let rule_arn = rule["Arn"].as_str().unwrap_or_default();
                let outcome = self.invoke(&arn, rule_arn, &input).await.map(|()| input);
                self.delivered
                    .lock()
                    .expect("fargate lock")
                    .push((arn, outcome));
            }
        }
        Ok(())
    }

    /// One target: a CloudWatch Logs group or an SNS topic.
    async fn invoke(&self, arn: &str, rule: &str, input: &str) -> Result<(), String> {
        let (moto, region) = (&self.moto, &self.region);
        if let Some(group) = arn.split(":log-group:").nth(1) {
            let group = group.trim_end_matches(":*");
            // EventBridge writes to a log group only where a resource policy lets
            // events.amazonaws.com do so (CloudWatch Logs, "Resource-based policies").
            let policies = aws_json(
                moto,
                region,
                "logs",
                "Logs_20140328.DescribeResourcePolicies",
                &json!({}),
            )
            .await?;
            let allowed = policies["resourcePolicies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| serde_json::from_str::<Value>(p["policyDocument"].as_str()?).ok())
                .any(|doc| allows_events(&doc, arn, rule));
            if !allowed {
                return Err(format!(
                    "no resource policy of CloudWatch Logs lets events.amazonaws.com write to {group}"
                ));
            }
            let at = jiff::Timestamp::now().as_millisecond();
            return put_logs(moto, region, group, "events", vec![(at, input.to_owned())]).await;
        }
        if arn.contains(":sns:") {
            return crate::cloudwatch::publish_sns(moto, region, arn, None, input).await;
        }
        Err(format!("targets like {arn} are not delivered here"))
    }

    fn runc(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.runc);
        c.args(args).stdin(Stdio::null());
        c
    }

    /// The task from start to STOPPED.
    fn run(self: &Arc<Self>, arn: &str, definition: &Value, request: &Value) {
        let id = arn.rsplit('/').next().unwrap_or_default().to_owned();
        let bundle = self.root.path().join(&id);
        let prepared = runtime().block_on(self.prepare(&bundle, definition, request, &id));
        let logs = match prepared {
            Ok(logs) => logs,
            Err(Failure { stop_code, reason }) => {
                self.never_ran(arn, &stop_code, &reason);
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
            self.never_ran(arn, "UserInitiated", "Task stopped before it started");
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
                let why = format!("CannotStartContainerError: runc did not start: {e}");
                self.never_ran(arn, "TaskFailedToStart", &why);
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
            let me = Arc::clone(self);
            std::thread::spawn(move || {
                let rt = runtime();
                loop {
                    let done = !shipping.load(std::sync::atomic::Ordering::SeqCst);
                    let batch: Vec<(i64, String)> =
                        std::mem::take(&mut *lines.lock().expect("lines"));
                    if !batch.is_empty()
                        && let Some((group, stream)) = &logs
                    {
                        let put = put_logs(&me.moto, &me.region, group, stream, batch.clone());
                        if rt.block_on(put).is_ok() {
                            me.logged(group, &batch);
                        }
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
            let why = format!("CannotStartContainerError: {why}");
            self.never_ran(arn, "TaskFailedToStart", &why);
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
        env.insert(
            "AWS_ENDPOINT_URL".into(),
            self.endpoint.get().unwrap_or(&self.moto).clone(),
        );
        // The task role's credentials, from the container credentials endpoint as ECS
        // gives them ("Task IAM role", ECS developer guide): STS credentials of the
        // role, once its trust policy lets ecs-tasks.amazonaws.com assume it. (ECS
        // gives a relative URI on 169.254.170.2; the SDKs take a full loopback URI
        // alike.) No task role, no credentials.
        if let Some(role) = definition["taskRoleArn"].as_str().filter(|r| !r.is_empty()) {
            let issued = self
                .authorizer
                .assume(role, "ecs-tasks.amazonaws.com", &format!("task-{id}"))
                .map_err(|e| Failure {
                    stop_code: "TaskFailedToStart".into(),
                    reason: format!("ResourceInitializationError: {e}"),
                })?;
            self.credentials
                .lock()
                .expect("fargate lock")
                .insert(id.to_owned(), issued);
            env.insert(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
                format!(
                    "http://127.0.0.1:{}/v2/credentials/{id}",
                    self.credentials_port
                ),
            );
        }
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

/// A schedule firing: the schedule, when, and the task it started (or why not).
pub type Firing = (String, jiff::Timestamp, Result<String, String>);

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

/// What ECS refuses in a RunTask before any task exists:
/// - overrides over 8,192 characters, JSON included (RunTask API reference, `overrides`;
///   the error's wording is unverified);
/// - a container override naming no container of the definition;
/// - a task size (overrides, else the definition's) that is not a Fargate pair ("Task
///   CPU and memory", ECS developer guide; the message is RegisterTaskDefinition's);
/// - a container's memory above the task's.
fn refusal(request: &Value, definition: &Value) -> Result<(), (&'static str, String)> {
    let overrides = &request["overrides"];
    if !overrides.is_null() && overrides.to_string().len() > 8192 {
        return Err((
            "InvalidParameterException",
            "Container Overrides length must be at most 8192".into(),
        ));
    }
    let containers = definition["containerDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for o in overrides["containerOverrides"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = o["name"].as_str().unwrap_or_default();
        if !containers.iter().any(|c| c["name"] == name) {
            return Err((
                "InvalidParameterException",
                format!(
                    "Override for container named {name} is not a container in the TaskDefinition."
                ),
            ));
        }
    }
    let size = |k: &str| {
        overrides[k]
            .as_str()
            .or_else(|| definition[k].as_str())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let fargate = request["launchType"]
        .as_str()
        .is_none_or(|l| l == "FARGATE");
    if fargate {
        let (cpu, memory) = (size("cpu"), size("memory"));
        let fits = match (cpu, memory) {
            // 256 takes 0.5, 1 or 2 GB: not 1.5.
            (Some(256), Some(m)) => [512, 1024, 2048].contains(&m),
            (Some(c), Some(m)) => FARGATE_SIZES.iter().any(|&(cpu, lo, hi, step)| {
                cpu == c && (lo..=hi).contains(&m) && (m - lo) % step == 0
            }),
            _ => false,
        };
        if !fits {
            let shown = |v: Option<u32>| v.map_or_else(|| "no".to_owned(), |v| v.to_string());
            return Err((
                "ClientException",
                format!(
                    "No Fargate configuration exists for given values: {} CPU, {} memory. See the Amazon ECS documentation for the valid values.",
                    shown(cpu),
                    shown(memory)
                ),
            ));
        }
        for c in &containers {
            if let (Some(m), Some(task)) = (c["memory"].as_u64(), memory)
                && m > u64::from(task)
            {
                return Err((
                    "ClientException",
                    format!(
                        "The 'memory' setting for container '{}' is greater than for the task.",
                        c["name"].as_str().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Fargate's Linux task sizes: `(cpu units, memory MiB from, to, step)` ("Task CPU and
/// memory", Amazon ECS developer guide).
const FARGATE_SIZES: [(u32, u32, u32, u32); 6] = [
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122_880, 8192),
];

/// The container credentials endpoint: `GET /v2/credentials/TASK_ID` answers the task
/// role's credentials (`AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`).
fn serve_credentials(credentials: Arc<Mutex<BTreeMap<String, Value>>>) -> std::io::Result<u16> {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(&conn);
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let id = first
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.strip_prefix("/v2/credentials/"))
                .unwrap_or_default()
                .to_owned();
            let found = credentials.lock().expect("fargate lock").get(&id).cloned();
            let (status, body) = match found {
                Some(c) => ("200 OK", c.to_string()),
                None => (
                    "404 Not Found",
                    json!({"message": "no such task"}).to_string(),
                ),
            };
            let mut out = &conn;
            let _ = write!(
                out,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(port)
}

fn client_error(kind: &str, message: &str) -> (u16, Value) {
    (400, json!({"__type": kind, "message": message}))
}

/// One JSON-protocol call to moto (unsigned: moto reads the region from the scope).
pub(crate) async fn aws_json(
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

/// EventBridge's event pattern matching, as the user guide describes it ("Event
/// patterns", "Content filtering"): every field of the pattern must match; a list of
/// values matches any of them; an event array matches when any element does; matchers
/// `prefix`, `anything-but` (a value, a list, or `{"prefix"}`), `exists` and `numeric`,
/// and `$or` of sub-patterns. An absent field matches only `{"exists": false}`.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let Some(fields) = pattern.as_object() else {
        return false;
    };
    fields.iter().all(|(key, want)| {
        if key == "$or" {
            return want
                .as_array()
                .is_some_and(|alts| alts.iter().any(|p| matches(p, event)));
        }
        let got = event.get(key);
        match want {
            Value::Object(_) => got.is_some_and(|g| match g {
                Value::Array(items) => items.iter().any(|i| matches(want, i)),
                _ => matches(want, g),
            }),
            Value::Array(values) => values.iter().any(|v| value_matches(v, got)),
            _ => false,
        }
    })
}

/// One value of a pattern's list against the event's field (absent: `None`).
fn value_matches(want: &Value, got: Option<&Value>) -> bool {
    let each = |f: &dyn Fn(&Value) -> bool| match got {
        Some(Value::Array(items)) => items.iter().any(f),
        Some(v) => f(v),
        None => false,
    };
    match want {
        Value::Object(m) => {
            if let Some(exists) = m.get("exists").and_then(Value::as_bool) {
                return got.is_some_and(|g| !g.is_null()) == exists;
            }
            if let Some(p) = m.get("prefix").and_then(Value::as_str) {
                return each(&|v| v.as_str().is_some_and(|s| s.starts_with(p)));
            }
            if let Some(but) = m.get("anything-but") {
                // An absent field is not "anything but" a value: it matches nothing.
                return got.is_some()
                    && !each(&|v| match but {
                        Value::Array(list) => list.contains(v),
                        Value::Object(o) => o
                            .get("prefix")
                            .and_then(Value::as_str)
                            .is_some_and(|p| v.as_str().is_some_and(|s| s.starts_with(p))),
                        other => v == other,
                    });
            }
            if let Some(conditions) = m.get("numeric").and_then(Value::as_array) {
                return each(&|v| {
                    let Some(x) = v.as_f64() else { return false };
                    conditions.chunks(2).all(|c| {
                        let bound = c.get(1).and_then(Value::as_f64).unwrap_or(f64::NAN);
                        match c[0].as_str() {
                            Some("<") => x < bound,
                            Some("<=") => x <= bound,
                            Some(">") => x > bound,
                            Some(">=") => x >= bound,
                            Some("=") => (x - bound).abs() < f64::EPSILON,
                            _ => false,
                        }
                    })
                });
            }
            false
        }
        exact => each(&|v| v == exact),
    }
}

/// EventBridge's input transformer: each `<name>` of the template replaced by the value
/// at its path, strings quoted and escaped as JSON (so an unquoted placeholder gives a
/// JSON string), a missing path as `null` ("Transforming target input").
pub fn transform(paths: &BTreeMap<String, String>, template: &str, event: &Value) -> String {
    let mut out = template.to_owned();
    for (name, path) in paths {
        let value = json_path(event, path);
        out = out.replace(&format!("<{name}>"), &value.to_string());
    }
    out
}

/// `$.a.b[0].c` in `event`.
fn json_path(event: &Value, path: &str) -> Value {
    let mut at = event;
    for part in path
        .trim_start_matches('$')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        at = &at[name];
        if let Some(i) = index {
            at = &at[i];
        }
    }
    at.clone()
}

/// The ECS "Task State Change" event of a task as DescribeTasks shows it (times as
/// RFC 3339, as events carry them).
fn state_change(task: &Value, region: &str) -> Value {
    let mut detail = task.clone();
    if let Some(d) = detail.as_object_mut() {
        for (_, v) in d.iter_mut() {
            if let Some(secs) = v.as_f64()
                && secs > 1_000_000_000.0
            {
                #[allow(clippy::cast_possible_truncation)]
                let ms = (secs * 1000.0) as i64;
                if let Ok(t) = jiff::Timestamp::from_millisecond(ms) {
                    *v = json!(t.to_string());
                }
            }
        }
    }
    let arn = task["taskArn"].as_str().unwrap_or_default();
    json!({
        "version": "0",
        "id": format!("{:032x}", fastrand::u64(..)),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": arn.split(':').nth(4).unwrap_or_default(),
        "time": jiff::Timestamp::now().to_string(),
        "region": region,
        "resources": [arn],
        "detail": detail,
    })
}

/// Whether a resource policy lets EventBridge (`events.amazonaws.com`) put log events
/// into the log group `arn` (an ARN with `*` wildcards in its Resource matches).
fn allows_events(doc: &Value, arn: &str, rule: &str) -> bool {
    use crate::iam_policy::{Decision, Principal, Request, evaluate};
    let stream = format!("{}:log-stream:events", arn.trim_end_matches(":*"));
    let account = rule.split(':').nth(4).unwrap_or_default();
    ["logs:CreateLogStream", "logs:PutLogEvents"]
        .iter()
        .all(|action| {
            let request = Request {
                principal: Some(Principal::Service("events.amazonaws.com".into())),
                ..Request::new(action, &stream)
            }
            .with("aws:SourceArn", rule)
            .with("aws:SourceAccount", account);
            evaluate([doc], &request) == Decision::Allow
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(exit: i64, started_by: Option<&str>) -> Value {
        let mut detail = json!({
            "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/c",
            "lastStatus": "STOPPED",
            "stopCode": "EssentialContainerExited",
            "containers": [{"name": "sidecar", "exitCode": 0}, {"name": "job", "exitCode": exit, "reason": "OutOfMemoryError: Container killed due to memory usage"}],
        });
        if let Some(s) = started_by {
            detail["startedBy"] = json!(s);
        }
        json!({"source": "aws.ecs", "detail-type": "ECS Task State Change", "detail": detail})
    }

    #[test]
    fn patterns_match_as_eventbridge_documents() {
        let failed = json!({
            "source": ["aws.ecs"],
            "detail": {
                "clusterArn": [{"prefix": "arn:aws:ecs:us-east-1:1:"}],
                "lastStatus": ["STOPPED"],
                "$or": [
                    {"containers": {"exitCode": [{"anything-but": 0}]}, "startedBy": [{"anything-but": "deployer-verify"}]},
                    {"containers": {"exitCode": [{"anything-but": 0}]}, "startedBy": [{"exists": false}]},
                ],
            },
        });
        assert!(
            matches(&failed, &stopped(137, None)),
            "no startedBy: exists false"
        );
        assert!(matches(&failed, &stopped(1, Some("deployer"))));
        assert!(
            !matches(&failed, &stopped(1, Some("deployer-verify"))),
            "anything-but"
        );
        assert!(
            !matches(&failed, &stopped(0, None)),
            "every container exited 0... but one"
        );
        let numeric =
            json!({"detail": {"containers": {"exitCode": [{"numeric": [">", 128, "<=", 255]}]}}});
        assert!(matches(&numeric, &stopped(137, None)));
        assert!(!matches(&numeric, &stopped(1, None)));
        assert!(
            !matches(&json!({"detail": {"group": ["x"]}}), &stopped(1, None)),
            "an absent field"
        );
        assert!(!matches(
            &json!({"source": [{"prefix": "aws.ec2"}]}),
            &stopped(1, None)
        ));
    }

    #[test]
    fn the_input_transformer_quotes_strings_and_reads_array_paths() {
        let paths = BTreeMap::from([
            (
                "reason".to_owned(),
                "$.detail.containers[1].reason".to_owned(),
            ),
            ("code".to_owned(), "$.detail.stopCode".to_owned()),
            ("none".to_owned(), "$.detail.missing".to_owned()),
        ]);
        let out = transform(
            &paths,
            r#"{"why": <reason>, "code": <code>, "n": <none>}"#,
            &stopped(137, None),
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["why"],
            "OutOfMemoryError: Container killed due to memory usage"
        );
        assert_eq!(v["code"], "EssentialContainerExited");
        assert!(v["n"].is_null());
    }

    #[test]
    fn only_a_policy_for_events_on_the_group_lets_eventbridge_write() {
        let group = "arn:aws:logs:us-east-1:1:log-group:/aws/events/app-tasks:*";
        let doc = |principal: &str, resource: &str| {
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Service": principal}, "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": resource}]})
        };
        let rule = "arn:aws:events:us-east-1:1:rule/app-task-events";
        assert!(allows_events(
            &doc(
                "events.amazonaws.com",
                "arn:aws:logs:us-east-1:1:log-group:/aws/events/*"
            ),
            group,
            rule
        ));
        assert!(!allows_events(
            &doc(
                "delivery.logs.amazonaws.com",
                "arn:aws:logs:us-east-1:1:log-group:/aws/events/*"
            ),
            group,
            rule
        ));
        assert!(!allows_events(
            &doc(
                "events.amazonaws.com",
                "arn:aws:logs:us-east-1:1:log-group:/other:*"
            ),
            group,
            rule
        ));
    }
}

/// An EventBridge cron expression, `cron(minutes hours day-of-month month day-of-week
/// year)` ("Cron expressions", EventBridge Scheduler user guide): numbers, `*`, `?`,
/// lists, ranges and steps, month and day names; day-of-week 1-7 is SUN-SAT. `L`, `W`
/// and `#` are refused here (the stack uses none).
#[derive(Debug)]
pub struct Cron {
    fields: [Vec<i32>; 6],
}

impl Cron {
    pub fn parse(expression: &str) -> Result<Self, String> {
        let inner = expression
            .strip_prefix("cron(")
            .and_then(|e| e.strip_suffix(')'))
            .ok_or_else(|| format!("{expression} is not cron(...)"))?;
        let parts: Vec<&str> = inner.split_whitespace().collect();
        if parts.len() != 6 {
            return Err(format!("{expression} has {} fields, not 6", parts.len()));
        }
        let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (1, 7), (1970, 2199)];
        let mut fields: [Vec<i32>; 6] = Default::default();
        for (i, part) in parts.iter().enumerate() {
            fields[i] = field(part, ranges[i], i)?;
        }
        Ok(Self { fields })
    }

    fn holds(&self, t: &jiff::civil::DateTime) -> bool {
        let dow = i32::from(t.weekday().to_sunday_one_offset());
        let values = [
            i32::from(t.minute()),
            i32::from(t.hour()),
            i32::from(t.day()),
            i32::from(t.month()),
            dow,
            i32::from(t.year()),
        ];
        values.iter().zip(&self.fields).all(|(v, f)| f.contains(v))
    }

    /// The instants in `(from, to]` whose local time in `tz` the expression names; a
    /// local time that occurs twice (autumn) counts once, one that never occurs
    /// (spring) not at all.
    pub fn between(
        &self,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Vec<jiff::Timestamp> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let minute = jiff::SignedDuration::from_mins(1);
        let start = from.as_second().div_euclid(60) * 60 + 60;
        let Ok(mut at) = jiff::Timestamp::from_second(start) else {
            return out;
        };
        while at <= to {
            let local = at.to_zoned(tz.clone()).datetime();
            if self.holds(&local) && seen.insert(local) {
                out.push(at);
            }
            at = at.checked_add(minute).unwrap_or(to + minute);
        }
        out
    }
}

fn field(part: &str, (lo, hi): (i32, i32), index: usize) -> Result<Vec<i32>, String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let number = |s: &str| -> Result<i32, String> {
        let upper = s.to_ascii_uppercase();
        let named = match index {
            3 => MONTHS.iter().position(|m| *m == upper),
            4 => DAYS.iter().position(|d| *d == upper),
            _ => None,
        };
        match named {
            Some(p) => Ok(i32::try_from(p).unwrap_or(0) + 1),
            None => s.parse().map_err(|_| format!("{s:?} is not a value here")),
        }
    };
    if part == "*" || part == "?" {
        return Ok((lo..=hi).collect());
    }
    if part.contains(['L', 'W', '#'])
        && !part
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == ',' || c == '-')
    {
        return Err(format!("{part}: L, W and # are not supported here"));
    }
    let mut out = Vec::new();
    for item in part.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<i32>()
                    .map_err(|_| format!("bad step in {item}"))?,
            ),
            None => (item, 1),
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None if item.contains('/') => (number(r)?, hi),
                None => {
                    let n = number(r)?;
                    (n, n)
                }
            },
        };
        if a < lo || b > hi || a > b || step < 1 {
            return Err(format!("{item} is outside {lo}-{hi}"));
        }
        out.extend((a..=b).step_by(usize::try_from(step).unwrap_or(1)));
    }
    Ok(out)
}

#[cfg(test)]
mod cron_tests {
    use super::*;

    fn at(t: &str) -> jiff::Timestamp {
        t.parse().unwrap()
    }

    #[test]
    fn a_daily_five_am_in_los_angeles_follows_daylight_saving() {
        let la = jiff::tz::TimeZone::get("America/Los_Angeles").unwrap();
        let cron = Cron::parse("cron(0 5 * * ? *)").unwrap();
        // 2027-03-14: clocks go from 02:00 to 03:00 in Los Angeles.
        let fired: Vec<String> = cron
            .between(at("2027-03-13T00:00:00Z"), at("2027-03-15T23:00:00Z"), &la)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            fired,
            [
                "2027-03-13T13:00:00Z",
                "2027-03-14T12:00:00Z",
                "2027-03-15T12:00:00Z"
            ]
        );
    }

    #[test]
    fn a_skipped_local_time_does_not_run_and_a_repeated_one_runs_once() {
        let la = jiff::tz::TimeZone::get("America/Los_Angeles").unwrap();
        let spring = Cron::parse("cron(30 2 * * ? *)").unwrap();
        let fired = spring.between(at("2027-03-14T00:00:00Z"), at("2027-03-15T00:00:00Z"), &la);
        assert!(
            fired.is_empty(),
            "02:30 does not exist on 2027-03-14: {fired:?}"
        );
        let autumn = Cron::parse("cron(30 1 * * ? *)").unwrap();
        // 2027-11-07: 01:00-02:00 happens twice.
        let fired = autumn.between(at("2027-11-07T00:00:00Z"), at("2027-11-08T00:00:00Z"), &la);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(
            fired[0].to_string(),
            "2027-11-07T08:30:00Z",
            "the first of the two"
        );
    }

    #[test]
    fn fields_take_lists_ranges_steps_and_names_and_refuse_what_is_not_supported() {
        let c = Cron::parse("cron(0/15 9-17 ? JAN,MAR MON-FRI *)").unwrap();
        assert_eq!(c.fields[0], [0, 15, 30, 45]);
        assert_eq!(c.fields[1], (9..=17).collect::<Vec<_>>());
        assert_eq!(c.fields[3], [1, 3]);
        assert_eq!(c.fields[4], [2, 3, 4, 5, 6]);
        assert!(Cron::parse("cron(0 5 L * ? *)").is_err());
        assert!(Cron::parse("cron(0 25 * * ? *)").is_err());
        assert!(Cron::parse("rate(5 minutes)").is_err());
    }
}
