//! Who may call what, for the AWS proxy: a request signed with credentials of a role
//! session (a task's role, handed out by the local Fargate as ECS hands them out) is
//! authorized against that role's policies, inline and attached, read from moto, with
//! IAM's evaluation logic ([`crate::iam_policy`]), on the resource AWS authorizes that
//! action on (Service Authorization Reference: DynamoDB's item and query actions on
//! `table/NAME`; Secrets Manager's on `secret:NAME-SUFFIX`, the secret's full ARN;
//! `sts:GetCallerIdentity` needs no permission). Denied, it answers as the service
//! does: `AccessDeniedException`, "User: ARN is not authorized to perform: ACTION on
//! resource: ARN because no identity-based policy allows the ACTION action".
//!
//! Other credentials (the tests' and the demo's `testing` keys) act as the account's
//! root, which IAM does not restrict. An action of a role session whose resource this
//! stand-in does not know yet is denied, naming this file: a gap shows as a failure,
//! never as a pass.
//!
//! The local Fargate also asks it whether a schedule's role may start its task
//! ([`Authorizer::authorize_role`]). Not yet: the deployer's own calls as an IAM user.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::iam_policy::{Decision, Principal, Request, evaluate};
use crate::quotas::{between, enc, members, unescape};

/// A role session: the role, and the session's own ARN (who IAM says asks).
#[derive(Debug, Clone)]
struct Session {
    role: String,
    arn: String,
}

/// Sessions by access key, and their roles' policies (read again after a moment, as
/// IAM's own changes take a moment to apply).
#[derive(Debug)]
pub struct Authorizer {
    upstream: SocketAddr,
    sessions: Mutex<HashMap<String, Session>>,
    policies: Mutex<HashMap<String, (Instant, Vec<Value>)>>,
}

impl Authorizer {
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            sessions: Mutex::new(HashMap::new()),
            policies: Mutex::new(HashMap::new()),
        }
    }

    /// Credentials of `role` for `service` (`ecs-tasks.amazonaws.com`), as STS gives
    /// them once the role's trust policy lets that service assume it for `account`:
    /// the container credentials endpoint's JSON.
    pub fn assume(&self, role: &str, service: &str, session: &str) -> Result<Value, String> {
        let name = role.rsplit('/').next().unwrap_or(role);
        let account = role.split(':').nth(4).unwrap_or_default();
        self.trusts(role, service).map_err(|_| {
            format!(
                "ECS was unable to assume the role '{role}' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions"
            )
        })?;
        let answer = self.query(
            "sts",
            &format!(
                "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName={}",
                enc(role),
                enc(session)
            ),
        )?;
        let field = |k: &str| {
            between(&answer, &format!("<{k}>"), &format!("</{k}>"))
                .map(str::to_owned)
                .ok_or_else(|| format!("STS answered no {k}: {answer}"))
        };
        let key = field("AccessKeyId")?;
        self.sessions.lock().expect("auth lock").insert(
            key.clone(),
            Session {
                role: role.to_owned(),
                arn: format!("arn:aws:sts::{account}:assumed-role/{name}/{session}"),
            },
        );
        Ok(json!({
            "AccessKeyId": key,
            "SecretAccessKey": field("SecretAccessKey")?,
            "Token": field("SessionToken")?,
            "Expiration": field("Expiration")?,
            "RoleArn": role,
        }))
    }

    /// Whether `service` may act as `role` (its trust policy) and the role may do each
    /// of `asked`: `Err` with what AWS would say, naming the first refusal.
    pub fn authorize_role(
        &self,
        role: &str,
        service: &str,
        asked: &[Request],
    ) -> Result<(), String> {
        let name = role.rsplit('/').next().unwrap_or(role);
        let account = role.split(':').nth(4).unwrap_or_default();
        self.trusts(role, service)?;
        let policies = self.policies_of(role);
        for request in asked {
            if evaluate(policies.iter(), request) != Decision::Allow {
                return Err(format!(
                    "AccessDeniedException: User: arn:aws:sts::{account}:assumed-role/{name}/{service} is not authorized to perform: {} on resource: {} because no identity-based policy allows the {} action",
                    request.action, request.resource, request.action
                ));
            }
        }
        Ok(())
    }

    /// Whether `role`'s trust policy lets `service` assume it for the role's account
    /// (`aws:SourceAccount`, as the stack's trust policies require).
    fn trusts(&self, role: &str, service: &str) -> Result<(), String> {
        let name = role.rsplit('/').next().unwrap_or(role);
        let account = role.split(':').nth(4).unwrap_or_default();
        let got = self.query(
            "iam",
            &format!("Action=GetRole&Version=2010-05-08&RoleName={}", enc(name)),
        )?;
        let trust = between(
            &got,
            "<AssumeRolePolicyDocument>",
            "</AssumeRolePolicyDocument>",
        )
        .ok_or_else(|| format!("the role {role} does not exist"))?;
        let assume = Request {
            principal: Some(Principal::Service(service.to_owned())),
            ..Request::new("sts:AssumeRole", role)
        }
        .with("aws:SourceAccount", account);
        if evaluate([&decode_document(trust)], &assume) == Decision::Allow {
            Ok(())
        } else {
            Err(format!(
                "AccessDeniedException: {service} is not authorized to perform: sts:AssumeRole on resource: {role}"
            ))
        }
    }

    /// The answer to give instead of forwarding, when the caller may not make this call.
    pub fn check(
        &self,
        authorization: &str,
        service: &str,
        operation: &str,
        region: &str,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let key = authorization
            .split("Credential=")
            .nth(1)?
            .split('/')
            .next()?;
        let session = self.sessions.lock().expect("auth lock").get(key).cloned()?;
        let prefix = match service {
            "monitoring" => "cloudwatch",
            other => other,
        };
        let action = format!("{prefix}:{operation}");
        if action == "sts:GetCallerIdentity" {
            return None;
        }
        let account = session.role.split(':').nth(4).unwrap_or_default();
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        let resource = match prefix {
            "dynamodb" => request["TableName"]
                .as_str()
                .map(|t| format!("arn:aws:dynamodb:{region}:{account}:table/{t}")),
            "secretsmanager" => request["SecretId"]
                .as_str()
                .map(|id| self.secret_arn(id, region, account)),
            _ => None,
        };
        let Some(resource) = resource else {
            return Some(denied(
                service,
                &format!(
                    "User: {} is not authorized to perform: {action}: the AWS stand-in knows no resource for it yet (add it to fakes/src/iam_auth.rs)",
                    session.arn
                ),
            ));
        };
        let policies = self.policies_of(&session.role);
        let asked = Request::new(&action, &resource);
        match evaluate(policies.iter(), &asked) {
            Decision::Allow => None,
            decision => Some(denied(
                service,
                &format!(
                    "User: {} is not authorized to perform: {action} on resource: {resource} because {}",
                    session.arn,
                    if decision == Decision::ExplicitDeny {
                        format!(
                            "an explicit deny in an identity-based policy denies the {action} action"
                        )
                    } else {
                        format!("no identity-based policy allows the {action} action")
                    }
                ),
            )),
        }
    }

    /// A secret's full ARN (IAM authorizes on it, suffix included), or the name's
    /// ARN without one when moto does not know it.
    fn secret_arn(&self, id: &str, region: &str, account: &str) -> String {
        if id.starts_with("arn:") {
            return id.to_owned();
        }
        let answer = self.json_call(
            "secretsmanager",
            "secretsmanager.DescribeSecret",
            &json!({"SecretId": id}),
        );
        answer
            .ok()
            .and_then(|v| v["ARN"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("arn:aws:secretsmanager:{region}:{account}:secret:{id}"))
    }

    /// The role's policy documents: inline and attached.
    fn policies_of(&self, role: &str) -> Vec<Value> {
        if let Some((at, docs)) = self.policies.lock().expect("auth lock").get(role)
            && at.elapsed() < Duration::from_secs(1)
        {
            return docs.clone();
        }
        let name = role.rsplit('/').next().unwrap_or(role);
        let mut docs = Vec::new();
        if let Ok(listed) = self.query(
            "iam",
            &format!(
                "Action=ListRolePolicies&Version=2010-05-08&RoleName={}",
                enc(name)
            ),
        ) {
            for policy in members(&listed) {
                if let Ok(got) = self.query(
                    "iam",
                    &format!(
                        "Action=GetRolePolicy&Version=2010-05-08&RoleName={}&PolicyName={}",
                        enc(name),
                        enc(&policy)
                    ),
                ) && let Some(doc) = between(&got, "<PolicyDocument>", "</PolicyDocument>")
                {
                    docs.push(decode_document(doc));
                }
            }
        }
        if let Ok(attached) = self.query(
            "iam",
            &format!(
                "Action=ListAttachedRolePolicies&Version=2010-05-08&RoleName={}",
                enc(name)
            ),
        ) {
            for arn in attached
                .split("<PolicyArn>")
                .skip(1)
                .filter_map(|s| s.split("</PolicyArn>").next())
            {
                let Ok(policy) = self.query(
                    "iam",
                    &format!("Action=GetPolicy&Version=2010-05-08&PolicyArn={}", enc(arn)),
                ) else {
                    continue;
                };
                let version =
                    between(&policy, "<DefaultVersionId>", "</DefaultVersionId>").unwrap_or("v1");
                if let Ok(got) = self.query(
                    "iam",
                    &format!("Action=GetPolicyVersion&Version=2010-05-08&PolicyArn={}&VersionId={version}", enc(arn)),
                ) && let Some(doc) = between(&got, "<Document>", "</Document>")
                {
                    docs.push(decode_document(doc));
                }
            }
        }
        self.policies
            .lock()
            .expect("auth lock")
            .insert(role.to_owned(), (Instant::now(), docs.clone()));
        docs
    }

    /// A query-protocol call to moto; the body of its answer.
    fn query(&self, service: &str, form: &str) -> Result<String, String> {
        let (status, body) = self.call(service, None, "application/x-www-form-urlencoded", form)?;
        if status.contains(" 200 ") {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    }

    /// A JSON-protocol call to moto.
    fn json_call(&self, service: &str, target: &str, body: &Value) -> Result<Value, String> {
        let (status, text) = self.call(
            service,
            Some(target),
            "application/x-amz-json-1.1",
            &body.to_string(),
        )?;
        if status.contains(" 200 ") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            Err(format!("{status}: {text}"))
        }
    }

    fn call(
        &self,
        service: &str,
        target: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> Result<(String, String), String> {
        let mut head = vec![
            "POST / HTTP/1.1\r\n".to_owned(),
            format!("Host: {}\r\n", self.upstream),
            format!("Content-Type: {content_type}\r\n"),
            format!(
                "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\n"
            ),
        ];
        if let Some(t) = target {
            head.push(format!("X-Amz-Target: {t}\r\n"));
        }
        head.push("\r\n".to_owned());
        let response = crate::fault_proxy::exchange(self.upstream, &head, body.as_bytes())
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((
            head.lines().next().unwrap_or_default().to_owned() + " ",
            body.to_owned(),
        ))
    }
}

/// A service's refusal of an unauthorized call, in its protocol.
fn denied(service: &str, message: &str) -> Vec<u8> {
    let (status, content_type, body) = match service {
        "iam" | "sts" | "sns" | "ec2" | "monitoring" => (
            "403 Forbidden",
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{}</Message></Error><RequestId>iam-stand-in</RequestId></ErrorResponse>",
                message.replace('&', "&amp;").replace('<', "&lt;")
            ),
        ),
        _ => (
            "400 Bad Request",
            "application/x-amz-json-1.1",
            json!({"__type": "AccessDeniedException", "message": message, "Message": message})
                .to_string(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nx-amzn-ErrorType: AccessDeniedException\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A policy document as IAM's XML answers carry it: escaped, and URL-encoded (moto may
/// leave it plain).
fn decode_document(raw: &str) -> Value {
    let text = unescape(raw);
    serde_json::from_str(&text).unwrap_or_else(|_| {
        let decoded = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
        serde_json::from_str(&decoded).unwrap_or_default()
    })
}
