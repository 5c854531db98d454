//! A loopback HTTP proxy in front of an AWS emulator that fails chosen write calls, to
//! test that a deployment interrupted half-way converges on the next run. It counts
//! write operations (by the operation name the request carries) and fails every attempt
//! of the Nth one: retries share the SDK's `amz-sdk-invocation-id`. It can also rewrite
//! one operation's responses, to show what the emulator cannot (a task's non-zero exit),
//! or hold one operation's requests for a while (a slow AWS call a signal can land in).
//! Where moto is kinder than AWS, it answers as AWS does: a security group still used by
//! a network interface cannot be deleted. With a stale window it also answers as an
//! eventually consistent AWS may (see `Consistency`), and it can give every call a
//! round trip's latency: no answer leaves sooner than that after its call arrived.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::consistency::{Call, Consistency};

#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    fail_write: usize,
    writes: AtomicUsize,
    /// `(operation, n)`: every attempt of that operation's nth call is throttled.
    throttle: Option<(String, usize)>,
    fargate: Option<Arc<crate::fargate::Fargate>>,
    /// IAM users' and role sessions' calls, authorized against their policies.
    authorizer: Arc<crate::iam_auth::Authorizer>,
    calls_of: AtomicUsize,
    failing: Mutex<Option<String>>,
    failed: Mutex<Vec<String>>,
    stop: AtomicBool,
    /// `(operation, from, to)`: text replaced in that operation's response bodies.
    rewrite: Option<(String, String, String)>,
    /// `(operation, n)`: the nth call's answer is lost after it landed.
    lose_answer: Option<(String, usize)>,
    lost_of: AtomicUsize,
    /// `(operation, how long)`: requests of that operation wait this long upstream.
    delay: Option<(String, std::time::Duration)>,
    /// The least time from a call's arrival to its answer, as a network round trip.
    latency: std::time::Duration,
    consistency: Option<Mutex<Consistency>>,
    quotas: crate::quotas::Quotas,
}

/// What a proxy does besides forwarding; `Default` forwards only (and refuses what EC2
/// refuses and what IAM's default quotas refuse, as every proxy does).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fails every attempt of the Nth write call (1-based; 0 fails nothing).
    pub fail_write: usize,
    /// `(operation, n)`: every attempt of that operation's nth call (1-based) is
    /// throttled, as DynamoDB throttles a hot key (400
    /// ProvisionedThroughputExceededException): the SDK's own retries do not get it
    /// through, so the caller sees it.
    pub throttle: Option<(String, usize)>,
    /// Runs ECS tasks for real (`RunTask`, `DescribeTasks`, `StopTask`, `ListTasks`).
    pub fargate: Option<Arc<crate::fargate::Fargate>>,
    /// `(operation, from, to)`: text replaced in that operation's response bodies.
    pub rewrite: Option<(String, String, String)>,
    /// `(operation, n)`: that operation's nth call (1-based) is done upstream, and its
    /// answer lost: the caller gets a 500 and retries a call that already landed.
    pub lose_answer: Option<(String, usize)>,
    /// `(operation, how long)`: that operation's requests wait this long first.
    pub delay: Option<(String, std::time::Duration)>,
    /// The least time from a call's arrival to its answer: a round trip that takes
    /// this long in all, upstream's own time included (a busy upstream still adds its
    /// queue beyond it). The call lands upstream at once; its answer waits.
    pub latency: std::time::Duration,
    /// The stale window of the eventual-consistency mode (`None`: off).
    pub stale: Option<std::time::Duration>,
    /// IAM's quotas (the defaults, unless a test raises one as Service Quotas would).
    pub quotas: crate::quotas::Quotas,
}

impl FaultProxy {
    /// Proxies to `upstream` (`127.0.0.1:PORT`), failing the `fail_write`-th write call
    /// (1-based; 0 fails nothing).
    pub fn start(upstream: SocketAddr, fail_write: usize) -> std::io::Result<Self> {
        Self::with(
            upstream,
            Options {
                fail_write,
                ..Options::default()
            },
        )
    }

    /// Proxies to `upstream`, replacing `from` with `to` in the bodies of `operation`'s
    /// responses (e.g. a task's `"exitCode": 0` in `DescribeTasks`).
    pub fn rewriting(
        upstream: SocketAddr,
        operation: &str,
        from: &str,
        to: &str,
    ) -> std::io::Result<Self> {
        Self::with(
            upstream,
            Options {
                rewrite: Some((operation.to_owned(), from.to_owned(), to.to_owned())),
                ..Options::default()
            },
        )
    }

    /// Proxies to `upstream`, holding each `operation` request for `delay` before it
    /// goes on (e.g. `PutSecretValue`).
    pub fn delaying(
        upstream: SocketAddr,
        operation: &str,
        delay: std::time::Duration,
    ) -> std::io::Result<Self> {
        Self::with(
            upstream,
            Options {
                delay: Some((operation.to_owned(), delay)),
                ..Options::default()
            },
        )
    }

    /// Proxies to `upstream` as eventually consistent AWS answers: see `Consistency`.
    pub fn eventually_consistent(
        upstream: SocketAddr,
        stale: std::time::Duration,
    ) -> std::io::Result<Self> {
        Self::with(
            upstream,
            Options {
                stale: Some(stale),
                ..Options::default()
            },
        )
    }

    pub fn with(upstream: SocketAddr, options: Options) -> std::io::Result<Self> {
        Self::on(("127.0.0.1", 0), upstream, options)
    }

    /// Listens on `at` (a port of one's choice for a proxy run by hand).
    pub fn on(
        at: impl std::net::ToSocketAddrs,
        upstream: SocketAddr,
        options: Options,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(at)?;
        let addr = listener.local_addr()?;
        // A task's calls come back through this proxy, as the job's to AWS would.
        if let Some(f) = &options.fargate {
            f.serve_through(&format!("http://{addr}"));
        }
        let state = Arc::new(State {
            upstream,
            fail_write: options.fail_write,
            writes: AtomicUsize::new(0),
            throttle: options.throttle,
            calls_of: AtomicUsize::new(0),
            authorizer: options.fargate.as_ref().map_or_else(
                || Arc::new(crate::iam_auth::Authorizer::new(upstream)),
                |f| f.authorizer(),
            ),
            fargate: options.fargate.clone(),
            failing: Mutex::new(None),
            failed: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            rewrite: options.rewrite,
            lose_answer: options.lose_answer,
            lost_of: AtomicUsize::new(0),
            delay: options.delay,
            latency: options.latency,
            consistency: options.stale.map(|w| Mutex::new(Consistency::new(w))),
            quotas: options.quotas,
        });
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(&shared, conn);
                });
            }
        });
        Ok(Self {
            addr,
            state,
            thread: Some(thread),
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Who may call what: every request of an IAM user or a role session is authorized
    /// by it, and each evaluation kept.
    pub fn authorizer(&self) -> Arc<crate::iam_auth::Authorizer> {
        Arc::clone(&self.state.authorizer)
    }

    /// Write operations seen so far.
    pub fn writes(&self) -> usize {
        self.state.writes.load(Ordering::SeqCst)
    }

    /// In the eventual-consistency mode, takes `id` of `service` (`ec2`: a security
    /// group) as made this moment: for the window, calls naming it do not find it, as
    /// right after its creation.
    pub fn just_created(&self, service: &str, id: &str) {
        if let Some(consistency) = &self.state.consistency {
            consistency
                .lock()
                .expect("proxy lock")
                .created_now(service, id, Instant::now());
        }
    }

    /// How many answers the eventual-consistency mode gave instead of upstream's.
    pub fn stale_answers(&self) -> usize {
        self.state
            .consistency
            .as_ref()
            .and_then(|c| c.lock().ok().map(|c| c.served))
            .unwrap_or(0)
    }

    /// The operations that were failed or throttled (one entry per failed attempt).
    pub fn failed(&self) -> Vec<String> {
        self.state
            .failed
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request per connection: read it, decide, forward or fail, close.
fn serve(state: &State, conn: TcpStream) -> std::io::Result<()> {
    let arrived = Instant::now();
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let header = |name: &str| {
        head.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let method = head[0]
        .split_whitespace()
        .next()
        .unwrap_or("GET")
        .to_owned();
    let path = head[0].split_whitespace().nth(1).unwrap_or("/").to_owned();
    // Every answer, a refusal too, leaves no sooner than the latency after the call
    // arrived: a real refusal is a round trip as well.
    let conn = Delayed {
        conn,
        until: Some(arrived + state.latency),
    };
    let service = header("authorization")
        .and_then(|a| {
            let scope = a.split("Credential=").nth(1)?;
            scope.split('/').nth(3).map(str::to_owned)
        })
        .unwrap_or_default();
    // The local Fargate's test clock: `POST /_fargate/advance?from=TIME&to=TIME` fires
    // every schedule due in between and answers the firings.
    if let (Some(fargate), Some(query)) = (&state.fargate, path.strip_prefix("/_fargate/advance?"))
    {
        let arg = |k: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse::<jiff::Timestamp>().ok())
        };
        let answer = match (arg("from"), arg("to")) {
            (Some(from), Some(to)) => match fargate.advance(from, to) {
                Ok(fired) => {
                    serde_json::json!({"fired": fired.iter().map(|(name, at, task)| serde_json::json!({
                    "schedule": name, "at": at.to_string(),
                    "task": task.as_ref().ok(), "error": task.as_ref().err(),
                })).collect::<Vec<_>>()})
                }
                Err(e) => serde_json::json!({"error": e}),
            },
            _ => serde_json::json!({"error": "from and to are RFC 3339 times"}),
        };
        return json_answer(conn, &answer);
    }
    // Its alarms' test clock: `POST /_fargate/alarms?at=TIME` evaluates every alarm at
    // TIME (now without it) and answers the changes of state.
    if let (Some(fargate), Some(query)) = (&state.fargate, path.strip_prefix("/_fargate/alarms")) {
        let at = query
            .trim_start_matches('?')
            .split('&')
            .find_map(|kv| kv.strip_prefix("at="))
            .map_or(Ok(jiff::Timestamp::now()), str::parse::<jiff::Timestamp>);
        let answer = match at {
            Ok(at) => match fargate.evaluate_alarms(at) {
                Ok(changes) => {
                    serde_json::json!({"changed": changes.iter().map(|n| serde_json::json!({
                    "alarm": n.alarm, "state": n.state,
                    "notified": n.sent.iter().map(|(topic, _)| topic).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()})
                }
                Err(e) => serde_json::json!({"error": e}),
            },
            Err(e) => serde_json::json!({"error": format!("at is an RFC 3339 time: {e}")}),
        };
        return json_answer(conn, &answer);
    }
    let operation = operation(&method, &path, header("x-amz-target").as_deref(), &body);
    if let (Some(op), Some(authorization)) = (&operation, header("authorization")) {
        let region = authorization
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').nth(2))
            .unwrap_or_default()
            .to_owned();
        let call = crate::iam_actions::Call {
            service: &service,
            operation: op,
            method: &method,
            path: &path,
            region: &region,
            body: &body,
        };
        if let Some(denied) = state.authorizer.check(&authorization, &call) {
            let mut out = conn;
            out.write_all(&denied)?;
            return out.flush();
        }
    }
    // What the service's model refuses (lengths, patterns, enums, ranges, required
    // members), refused as the service refuses it: see `service_model`.
    if let Some(models) = crate::service_model::Models::shared()
        && let Some(violation) = models.check(&crate::service_model::Request {
            service: &service,
            operation: header("x-amz-target")
                .is_some()
                .then_some(operation.as_deref())
                .flatten(),
            method: &method,
            path: &path,
            body: &body,
        })
    {
        let mut out = conn;
        out.write_all(&crate::service_model::refusal(&service, &violation))?;
        return out.flush();
    }
    let invocation = header("amz-sdk-invocation-id").unwrap_or_default();

    let mut fail = false;
    let mut throttled = false;
    if let Some(op) = &operation {
        let mut failing = state.failing.lock().expect("proxy lock");
        let nth_of = |n: usize| {
            state
                .throttle
                .as_ref()
                .is_some_and(|(o, at)| o == op && *at == n)
        };
        if failing.as_deref() == Some(invocation.as_str()) && !invocation.is_empty() {
            fail = true;
            throttled = state.throttle.as_ref().is_some_and(|(o, _)| o == op);
        } else if state.throttle.as_ref().is_some_and(|(o, _)| o == op)
            && nth_of(state.calls_of.fetch_add(1, Ordering::SeqCst) + 1)
        {
            *failing = Some(invocation.clone());
            fail = true;
            throttled = true;
        } else if is_write(op) {
            let n = state.writes.fetch_add(1, Ordering::SeqCst) + 1;
            if n == state.fail_write {
                *failing = Some(invocation.clone());
                fail = true;
            }
        }
        if fail {
            state.failed.lock().expect("proxy lock").push(op.clone());
        }
    }
    let mut out = conn;
    if throttled {
        let body = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#;
        write!(
            out,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        out.write_all(body)?;
        return out.flush();
    }
    if fail {
        return internal_failure(out, "failure injected by the test proxy");
    }
    if let Some((op, pause)) = &state.delay
        && operation.as_deref() == Some(op.as_str())
    {
        std::thread::sleep(*pause);
    }
    let op = operation.clone().unwrap_or_default();
    let call = Call {
        service: &service,
        operation: &op,
        read: !is_write(&op),
        method: &method,
        path: &path,
        body: &body,
    };
    if let Some(consistency) = &state.consistency {
        let answer = consistency
            .lock()
            .expect("proxy lock")
            .before(&call, Instant::now());
        if let Some(answer) = answer {
            out.write_all(&answer)?;
            return out.flush();
        }
    }
    if service == "ecs"
        && let (Some(fargate), Some(op)) = (&state.fargate, &operation)
        && let Some((status, answer)) = fargate.handle(op, &body)
    {
        let body = answer.to_string();
        write!(
            out,
            "HTTP/1.1 {status} {}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            if status == 200 { "OK" } else { "Bad Request" },
            body.len()
        )?;
        out.write_all(body.as_bytes())?;
        return out.flush();
    }
    if service == "iam"
        && let Some(refused) = crate::quotas::refusal(&state.quotas, &op, &body, &mut |query| {
            exchange(state.upstream, &head, query.as_bytes())
                .map(|r| String::from_utf8_lossy(&r).into_owned())
                .unwrap_or_default()
        })
    {
        out.write_all(&crate::quotas::limit_exceeded(&refused))?;
        return out.flush();
    }
    let refusal: Refusal = match service.as_str() {
        "logs" => crate::quotas::logs_refusal,
        "events" => crate::quotas::events_refusal,
        _ => |_, _, _, _| None,
    };
    if let Some(refused) = refusal(&state.quotas, &op, &body, &mut |target, query| {
        let head: Vec<String> = head
            .iter()
            .map(|l| {
                if l.to_ascii_lowercase().starts_with("x-amz-target:") {
                    format!("X-Amz-Target: {target}\r\n")
                } else {
                    l.clone()
                }
            })
            .collect();
        exchange(state.upstream, &head, query.as_bytes())
            .ok()
            .and_then(|r| {
                let text = String::from_utf8_lossy(&r).into_owned();
                text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
            })
            .unwrap_or_default()
    }) {
        out.write_all(&crate::quotas::logs_limit_exceeded(&refused))?;
        return out.flush();
    }
    if operation.as_deref() == Some("DeleteSecurityGroup")
        && let Some(refusal) = group_in_use(state, &head, &body)?
    {
        out.write_all(&refusal)?;
        return out.flush();
    }
    let mut response = exchange(state.upstream, &head, &body)?;
    // Lines ingested through the proxy meet their group's metric filters, as a task's do.
    if let Some(fargate) = &state.fargate
        && operation.as_deref() == Some("PutLogEvents")
        && response.starts_with(b"HTTP/1.1 200")
        && let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body)
    {
        let group = request["logGroupName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let events: Vec<(i64, String)> = request["logEvents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["timestamp"].as_i64()?, e["message"].as_str()?.to_owned())))
            .collect();
        let fargate = Arc::clone(fargate);
        std::thread::spawn(move || fargate.logged(&group, &events));
    }
    if let Some((op, from, to)) = &state.rewrite
        && operation.as_deref() == Some(op.as_str())
    {
        response = rewritten(&response, from, to);
    }
    if let Some((op, n)) = &state.lose_answer
        && operation.as_deref() == Some(op.as_str())
        && state.lost_of.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        state.failed.lock().expect("proxy lock").push(op.clone());
        return internal_failure(out, "the answer was lost by the test proxy");
    }
    if let Some(consistency) = &state.consistency {
        consistency
            .lock()
            .expect("proxy lock")
            .after(&call, &response, Instant::now());
    }
    out.write_all(&response)?;
    out.flush()
}

/// A 500 `InternalFailure`, which the SDK retries: an injected failure or a lost answer.
fn internal_failure(mut out: impl Write, message: &str) -> std::io::Result<()> {
    let body = serde_json::json!({"__type": "InternalFailure", "message": message}).to_string();
    write!(
        out,
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// A connection whose first write waits until `until`: the proxy's latency, counted
/// from the call's arrival, so that upstream's own time is part of it.
struct Delayed {
    conn: TcpStream,
    until: Option<Instant>,
}

impl Write for Delayed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(until) = self.until.take() {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        }
        self.conn.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush()
    }
}

/// A `200` with `answer` as JSON: the test clock's endpoints.
fn json_answer(mut out: impl Write, answer: &serde_json::Value) -> std::io::Result<()> {
    let body = answer.to_string();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

/// Sends one request upstream as it came (but closing the connection after it) and
/// returns the whole response.
pub(crate) fn exchange(
    upstream: SocketAddr,
    head: &[String],
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut upstream = TcpStream::connect(upstream)?;
    for line in head {
        let name = line.split(':').next().unwrap_or_default();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if line == "\r\n" {
            write!(
                upstream,
                "Connection: close\r\nContent-Length: {}\r\n",
                body.len()
            )?;
        }
        upstream.write_all(line.as_bytes())?;
    }
    upstream.write_all(body)?;
    upstream.flush()?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    Ok(response)
}

/// EC2 refuses to delete a security group a network interface still uses, with
/// `DependencyViolation` (EC2 API reference, DeleteSecurityGroup); moto deletes it
/// anyway. The refusal, when an interface uses the group named in `body`.
fn group_in_use(state: &State, head: &[String], body: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let form = String::from_utf8_lossy(body);
    let Some(group) = form.split('&').find_map(|kv| kv.strip_prefix("GroupId=")) else {
        return Ok(None);
    };
    let query = format!(
        "Action=DescribeNetworkInterfaces&Version=2016-11-15&Filter.1.Name=group-id&Filter.1.Value.1={group}"
    );
    let answer = exchange(state.upstream, head, query.as_bytes())?;
    if !String::from_utf8_lossy(&answer).contains("<networkInterfaceId>") {
        return Ok(None);
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>DependencyViolation</Code><Message>resource {group} has a dependent object</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
    );
    Ok(Some(
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    ))
}

/// The response with `from` replaced by `to` in its body and Content-Length fixed.
fn rewritten(response: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return response.to_vec();
    };
    let body = body.replace(from, to);
    let head: Vec<String> = head
        .split("\r\n")
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                line.to_owned()
            }
        })
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

/// The operation a request calls: JSON protocols name it in `X-Amz-Target`, query
/// protocols in the `Action` form field, RPC v2 in the path; REST APIs by method and
/// path (EventBridge Scheduler's by name, others only as read or write).
fn operation(method: &str, path: &str, target: Option<&str>, body: &[u8]) -> Option<String> {
    if let Some(t) = target {
        return t.rsplit('.').next().map(str::to_owned);
    }
    if let Some((_, op)) = path.split_once("/operation/") {
        return Some(op.trim_end_matches('/').to_owned());
    }
    let text = String::from_utf8_lossy(body);
    if let Some(action) = text.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
        return Some(action.to_owned());
    }
    let resource = path.trim_start_matches('/').split(['/', '?']).next();
    let scheduler = match (method, resource) {
        ("POST", Some("schedule-groups")) => Some("CreateScheduleGroup"),
        ("DELETE", Some("schedule-groups")) => Some("DeleteScheduleGroup"),
        ("POST", Some("schedules")) => Some("CreateSchedule"),
        ("PUT", Some("schedules")) => Some("UpdateSchedule"),
        ("DELETE", Some("schedules")) => Some("DeleteSchedule"),
        _ => None,
    };
    Some(match (scheduler, method) {
        (Some(op), _) => op.to_owned(),
        (None, "GET" | "HEAD") => "Get".to_owned(),
        (None, other) => format!("{other}Rest"),
    })
}

/// A service's quota check: the refusal's message, or `None`.
type Refusal =
    fn(&crate::quotas::Quotas, &str, &[u8], &mut dyn FnMut(&str, &str) -> String) -> Option<String>;

fn is_write(operation: &str) -> bool {
    aws_setup::Access::of(operation) == aws_setup::Access::Write
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An upstream that answers every request after `takes`.
    fn upstream(takes: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        line.clear();
                    }
                    std::thread::sleep(takes);
                    let mut out = conn;
                    let _ = out.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    );
                });
            }
        });
        addr
    }

    /// How long one call through a proxy of `latency` in front of `upstream` takes.
    fn round_trip(upstream: SocketAddr, latency: Duration) -> Duration {
        let proxy = FaultProxy::with(
            upstream,
            Options {
                latency,
                ..Options::default()
            },
        )
        .unwrap();
        let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
        let started = Instant::now();
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        started.elapsed()
    }

    #[test]
    fn the_latency_is_a_round_trips_floor_with_upstreams_own_time_inside_it() {
        let latency = Duration::from_millis(400);
        // Upstream's 150 ms fall within the 400: not 550.
        let quick = round_trip(upstream(Duration::from_millis(150)), latency);
        assert!(
            quick >= latency && quick < Duration::from_millis(530),
            "{quick:?}"
        );
        // An upstream slower than the latency is answered when it answers.
        let slow = round_trip(upstream(Duration::from_millis(600)), latency);
        assert!(
            slow >= Duration::from_millis(600) && slow < Duration::from_millis(900),
            "{slow:?}"
        );
    }
}
