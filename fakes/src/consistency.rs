//! Eventual consistency as AWS documents it, for the fault proxy in front of moto (which
//! answers every read with the newest state at once):
//! - "Eventual consistency in the Amazon EC2 API" (EC2 developer guide): a resource just
//!   created may not be found yet by the next call naming it (`InvalidGroup.NotFound`).
//! - "Changes that I make are not always immediately visible" (IAM user guide,
//!   troubleshooting): a new role may answer `NoSuchEntity` for a while.
//! - ECS API reference (RunTask): "Amazon ECS API follows an eventual consistency model".
//! - CloudWatch Logs documents no consistency model; first deployments report "The
//!   specified log group does not exist" on the call after CreateLogGroup (unverified as
//!   a delay): here a group just made is not found by the calls naming it
//!   (`logGroupName`) for the window.
//! - EventBridge Scheduler: a deleted schedule group is `DELETING` for a while; creating
//!   one of the same name meanwhile is refused (`ConflictException`; message unverified).
//!
//! Reads are served stale generically: within the window after a write to a service,
//! a read that was answered before that write gets the same (older) answer again, so
//! updates and deletes stay invisible for the window. That is never kinder than AWS:
//! every answer given was true a moment ago.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::quotas::between;

/// What the proxy knows of one request.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The signing name from the Authorization header (`ec2`, `iam`, `scheduler`...).
    pub service: &'a str,
    pub operation: &'a str,
    pub read: bool,
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
}

impl Call<'_> {
    fn key(&self) -> String {
        format!(
            "{} {} {} {}",
            self.service,
            self.method,
            self.path,
            String::from_utf8_lossy(self.body)
        )
    }

    /// A form field of a query-protocol request (EC2, IAM, SNS), decoded.
    fn field(&self, name: &str) -> Option<String> {
        form(self.body)
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    /// Every value of the fields whose name `matches`.
    fn fields(&self, matches: impl Fn(&str) -> bool) -> Vec<String> {
        form(self.body)
            .into_iter()
            .filter_map(|(k, v)| matches(&k).then_some(v))
            .collect()
    }
}

/// A query-protocol body's form fields, decoded.
pub(crate) fn form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((decode(k), decode(v)))
        })
        .collect()
}

#[derive(Debug)]
pub struct Consistency {
    window: Duration,
    /// Per service, when each write through the proxy was answered.
    writes: HashMap<String, Vec<Instant>>,
    /// The last answer to each read, and when it was given.
    answers: HashMap<String, (Instant, Vec<u8>)>,
    /// `(service, id)` of what was just made, and when.
    created: HashMap<(String, String), Instant>,
    /// Schedule groups deleted, and when.
    deleted_groups: HashMap<String, Instant>,
    /// How many answers were stale or not-yet-found (for tests to show the mode bit).
    pub served: usize,
}

impl Consistency {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            writes: HashMap::new(),
            answers: HashMap::new(),
            created: HashMap::new(),
            deleted_groups: HashMap::new(),
            served: 0,
        }
    }

    fn recent(&self, at: Instant, now: Instant) -> bool {
        now.duration_since(at) < self.window
    }

    /// Takes `id` of `service` as made at `now`.
    pub fn created_now(&mut self, service: &str, id: &str, now: Instant) {
        self.created
            .insert((service.to_owned(), id.to_owned()), now);
    }

    /// The answer to give instead of asking upstream, if any.
    pub fn before(&mut self, call: &Call<'_>, now: Instant) -> Option<Vec<u8>> {
        let answer = self.not_yet(call, now).or_else(|| {
            if !call.read {
                return self.deleting(call, now);
            }
            let (at, answer) = self.answers.get(&call.key())?;
            let first_write_since = self
                .writes
                .get(call.service)?
                .iter()
                .filter(|w| *w > at)
                .min()?;
            self.recent(*first_write_since, now).then(|| answer.clone())
        });
        if answer.is_some() {
            self.served += 1;
        }
        answer
    }

    /// Records what upstream answered.
    pub fn after(&mut self, call: &Call<'_>, response: &[u8], now: Instant) {
        if call.read {
            self.answers.insert(call.key(), (now, response.to_vec()));
            return;
        }
        if !response.starts_with(b"HTTP/1.1 2") {
            return;
        }
        self.writes
            .entry(call.service.to_owned())
            .or_default()
            .push(now);
        match (call.service, call.operation) {
            ("iam", "CreateRole") => {
                if let Some(role) = call.field("RoleName") {
                    self.created.insert(("iam".into(), role), now);
                }
            }
            ("ec2", "CreateSecurityGroup") => {
                let text = String::from_utf8_lossy(response);
                if let Some(id) = between(&text, "<groupId>", "</groupId>") {
                    self.created.insert(("ec2".into(), id.to_owned()), now);
                }
            }
            ("logs", "CreateLogGroup") => {
                let request: serde_json::Value =
                    serde_json::from_slice(call.body).unwrap_or_default();
                if let Some(group) = request["logGroupName"].as_str() {
                    self.created.insert(("logs".into(), group.to_owned()), now);
                }
            }
            ("scheduler", "DeleteScheduleGroup") => {
                if let Some(name) = resource_name(call.path) {
                    self.deleted_groups.insert(name.to_owned(), now);
                }
            }
            _ => {}
        }
    }

    /// A call naming a resource made a moment ago, answered as "not found".
    fn not_yet(&self, call: &Call<'_>, now: Instant) -> Option<Vec<u8>> {
        let fresh = |service: &str, id: &str| {
            self.created
                .get(&(service.to_owned(), id.to_owned()))
                .is_some_and(|at| self.recent(*at, now))
        };
        match call.service {
            "iam" if call.operation != "CreateRole" => {
                let role = call.field("RoleName")?;
                fresh("iam", &role).then(|| {
                    xml(
                        "404 Not Found",
                        &format!(
                            "<ErrorResponse><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>The role with name {role} cannot be found.</Message></Error><RequestId>consistency</RequestId></ErrorResponse>"
                        ),
                    )
                })
            }
            "ec2" => {
                let named = call.fields(|k| {
                    k == "GroupId"
                        || (k.starts_with("GroupId.") || k.starts_with("ResourceId."))
                        || (k.starts_with("Resource.") && !k.contains("Type"))
                });
                let id = named.into_iter().find(|id| fresh("ec2", id))?;
                Some(xml(
                    "400 Bad Request",
                    &format!(
                        "<Response><Errors><Error><Code>InvalidGroup.NotFound</Code><Message>The security group '{id}' does not exist</Message></Error></Errors><RequestID>consistency</RequestID></Response>"
                    ),
                ))
            }
            "logs" if call.operation != "CreateLogGroup" => {
                let request: serde_json::Value =
                    serde_json::from_slice(call.body).unwrap_or_default();
                let group = request["logGroupName"].as_str()?;
                fresh("logs", group).then(|| {
                    let body = serde_json::json!({
                        "__type": "ResourceNotFoundException",
                        "message": "The specified log group does not exist.",
                    })
                    .to_string();
                    format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                })
            }
            // ECS reads a task's security groups from EC2's copies too: a group made a
            // moment ago is not found by RunTask (ECS API reference, RunTask: "eventual
            // consistency"; the message is the one ECS relays from EC2, wording
            // UNVERIFIED).
            "ecs" if call.operation == "RunTask" => {
                let request: serde_json::Value =
                    serde_json::from_slice(call.body).unwrap_or_default();
                let groups =
                    request["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"]
                        .as_array()?;
                let id = groups
                    .iter()
                    .filter_map(serde_json::Value::as_str)
                    .find(|id| fresh("ec2", id))?;
                let body = serde_json::json!({
                    "__type": "InvalidParameterException",
                    "message": format!("Error retrieving security group information for [{id}]: The security group '{id}' does not exist (Service: AmazonEC2; Status Code: 400; Error Code: InvalidGroup.NotFound)"),
                })
                .to_string();
                Some(
                    format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes(),
                )
            }
            _ => None,
        }
    }

    /// Creating a schedule group while one of its name is still being deleted.
    fn deleting(&self, call: &Call<'_>, now: Instant) -> Option<Vec<u8>> {
        if call.service != "scheduler" || call.operation != "CreateScheduleGroup" {
            return None;
        }
        let name = resource_name(call.path)?;
        let at = self.deleted_groups.get(name)?;
        self.recent(*at, now).then(|| {
            let body = format!(
                r#"{{"Message":"Schedule group {name} is being deleted. Try again later."}}"#
            );
            format!(
                "HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nx-amzn-ErrorType: ConflictException\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
    }
}

/// The last path segment, without the query: a REST API's resource name.
fn resource_name(path: &str) -> Option<&str> {
    path.split('?').next()?.rsplit('/').next()
}

fn xml(status: &str, body: &str) -> Vec<u8> {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(service: &'a str, operation: &'a str, body: &'a [u8]) -> Call<'a> {
        Call {
            service,
            operation,
            read: operation.starts_with("Get") || operation.starts_with("Describe"),
            method: "POST",
            path: "/",
            body,
        }
    }

    #[test]
    fn a_read_answered_before_a_write_is_answered_the_same_for_the_window() {
        let mut c = Consistency::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let get = call("iam", "GetRole", b"Action=GetRole&RoleName=r");
        c.after(&get, b"HTTP/1.1 200 OK\r\n\r\nold", t0);
        let put = call("iam", "UpdateRole", b"Action=UpdateRole&RoleName=r");
        c.after(
            &put,
            b"HTTP/1.1 200 OK\r\n\r\n",
            t0 + Duration::from_millis(10),
        );
        assert_eq!(
            c.before(&get, t0 + Duration::from_secs(1)).as_deref(),
            Some(&b"HTTP/1.1 200 OK\r\n\r\nold"[..])
        );
        assert_eq!(c.before(&get, t0 + Duration::from_secs(3)), None);
    }

    #[test]
    fn a_new_log_group_is_not_found_by_the_calls_naming_it_for_the_window() {
        let mut c = Consistency::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let create = call("logs", "CreateLogGroup", br#"{"logGroupName":"/ecs/x"}"#);
        c.after(&create, b"HTTP/1.1 200 OK\r\n\r\n{}", t0);
        let filter = call(
            "logs",
            "PutMetricFilter",
            br#"{"logGroupName":"/ecs/x","filterName":"f"}"#,
        );
        let refused = c.before(&filter, t0 + Duration::from_secs(1)).unwrap();
        assert!(String::from_utf8_lossy(&refused).contains("ResourceNotFoundException"));
        let other = call("logs", "PutMetricFilter", br#"{"logGroupName":"/ecs/y"}"#);
        assert_eq!(c.before(&other, t0 + Duration::from_secs(1)), None);
        assert_eq!(c.before(&filter, t0 + Duration::from_secs(2)), None);
    }

    #[test]
    fn a_new_role_is_not_found_by_the_calls_after_it_for_the_window() {
        let mut c = Consistency::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let create = call(
            "iam",
            "CreateRole",
            b"Action=CreateRole&RoleName=job%2Drole",
        );
        c.after(&create, b"HTTP/1.1 200 OK\r\n\r\n", t0);
        let put = call(
            "iam",
            "PutRolePolicy",
            b"Action=PutRolePolicy&RoleName=job-role",
        );
        let refused = c.before(&put, t0 + Duration::from_secs(1)).unwrap();
        assert!(String::from_utf8_lossy(&refused).contains("NoSuchEntity"));
        assert_eq!(c.before(&put, t0 + Duration::from_secs(2)), None);
    }
}
