//! Who may call what, for the AWS proxy. A request signed with the access key of an IAM
//! user (found with `GetAccessKeyLastUsed`, as IAM knows its keys) or of a role session
//! (a task's role, handed out by the local Fargate as ECS hands them out) is
//! authorized against that identity's policies, inline and attached, read from moto,
//! with IAM's evaluation logic ([`crate::iam_policy`]), for each action and resource
//! [`crate::iam_actions`] says AWS evaluates for that call. Denied, it answers as the
//! service does (`AccessDeniedException`, EC2's `UnauthorizedOperation`, SNS's
//! `AuthorizationError`): "User: ARN is not authorized to perform: ACTION on resource:
//! ARN because no identity-based policy allows the ACTION action".
//!
//! Other credentials (the tests' and the demo's `testing` keys, which IAM does not
//! know) act as the account's root, which IAM does not restrict. A call of a user or
//! session whose resource this stand-in does not know is denied, naming the file to
//! extend: a gap shows as a failure, never as a pass.
//!
//! `CreateCluster` makes the ECS service-linked role when the account has none and the
//! caller may `iam:CreateServiceLinkedRole` it (CreateCluster API reference); without
//! it the cluster is made anyway, and the local Fargate then refuses every task, as ECS
//! does ("Unable to assume the service linked role").
//!
//! The local Fargate also asks it whether a schedule's role may start its task
//! ([`Authorizer::authorize_role`]). Every request evaluated for a user or a session is
//! kept ([`Authorizer::evaluated`]), so a test can show that each action of a policy is
//! needed by some call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::iam_actions::{Call, Lookup};
use crate::iam_policy::{Decision, Principal, Request, evaluate};
use crate::quotas::{between, enc, members, unescape};

/// Who signed a request: the identity whose policies decide (`Role` or `User`, and its
/// name), and its ARN as IAM names the caller.
#[derive(Debug, Clone)]
struct Identity {
    kind: &'static str,
    name: String,
    arn: String,
    account: String,
}

/// One request evaluated for a user or a session: who asked, what, and the decision.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub caller: String,
    pub request: Request,
    pub allowed: bool,
}

/// Identities by access key (`None`: a key IAM does not know, the account's root), and
/// their policies (read again after a moment, as IAM's own changes take a moment to
/// apply).
#[derive(Debug)]
pub struct Authorizer {
    upstream: SocketAddr,
    identities: Mutex<HashMap<String, Option<Identity>>>,
    policies: Mutex<HashMap<String, (Instant, Vec<Value>)>>,
    evaluated: Mutex<std::collections::VecDeque<Evaluated>>,
}

/// The evaluations kept, the newest: enough for a test's whole cycle (a few thousand),
/// bounded for a stand-in left running for days.
const KEPT: usize = 200_000;

impl Authorizer {
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            identities: Mutex::new(HashMap::new()),
            policies: Mutex::new(HashMap::new()),
            evaluated: Mutex::new(std::collections::VecDeque::new()),
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
        self.identities.lock().expect("auth lock").insert(
            key.clone(),
            Some(Identity {
                kind: "Role",
                name: name.to_owned(),
                arn: format!("arn:aws:sts::{account}:assumed-role/{name}/{session}"),
                account: account.to_owned(),
            }),
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
        let policies = self.policies_of("Role", name);
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

    /// Every request evaluated so far for a user or a role session, in order.
    pub fn evaluated(&self) -> Vec<Evaluated> {
        self.evaluated
            .lock()
            .expect("auth lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Who signed with `key`: a role session handed out here, an IAM user's key, or
    /// `None` for a key IAM does not know (the account's root).
    fn identity(&self, key: &str) -> Option<Identity> {
        if let Some(known) = self.identities.lock().expect("auth lock").get(key) {
            return known.clone();
        }
        let user = self
            .query(
                "iam",
                &format!(
                    "Action=GetAccessKeyLastUsed&Version=2010-05-08&AccessKeyId={}",
                    enc(key)
                ),
            )
            .ok()
            .and_then(|got| between(&got, "<UserName>", "</UserName>").map(str::to_owned))
            .and_then(|name| {
                let got = self
                    .query(
                        "iam",
                        &format!("Action=GetUser&Version=2010-05-08&UserName={}", enc(&name)),
                    )
                    .ok()?;
                let arn = between(&got, "<Arn>", "</Arn>")?.to_owned();
                Some(Identity {
                    kind: "User",
                    account: arn.split(':').nth(4).unwrap_or_default().to_owned(),
                    name,
                    arn,
                })
            });
        self.identities
            .lock()
            .expect("auth lock")
            .insert(key.to_owned(), user.clone());
        user
    }

    /// The answer to give instead of forwarding `call`, signed with `authorization`,
    /// when the caller may not make it.
    pub fn check(&self, authorization: &str, call: &Call<'_>) -> Option<Vec<u8>> {
        let key = authorization
            .split("Credential=")
            .nth(1)?
            .split('/')
            .next()?;
        let creates_cluster = call.service == "ecs" && call.operation == "CreateCluster";
        let Some(who) = self.identity(key) else {
            if creates_cluster {
                self.ensure_ecs_service_linked_role(None);
            }
            return None;
        };
        let lookup = Moto {
            authorizer: self,
            region: call.region,
            account: &who.account,
        };
        let asked = match crate::iam_actions::requests(call, &who.account, &lookup) {
            Ok(asked) => asked,
            Err(gap) => {
                return Some(denied(
                    call.service,
                    &format!(
                        "User: {} is not authorized: {gap} in the AWS stand-in (add it to fakes/src/iam_actions.rs)",
                        who.arn
                    ),
                ));
            }
        };
        let policies = self.policies_of(who.kind, &who.name);
        for request in asked {
            let decision = self.decide(&who, &policies, &request);
            if decision != Decision::Allow {
                let Request {
                    action, resource, ..
                } = &request;
                return Some(denied(
                    call.service,
                    &format!(
                        "User: {} is not authorized to perform: {action} on resource: {resource} because {}",
                        who.arn,
                        if decision == Decision::ExplicitDeny {
                            format!(
                                "an explicit deny in an identity-based policy denies the {action} action"
                            )
                        } else {
                            format!("no identity-based policy allows the {action} action")
                        }
                    ),
                ));
            }
        }
        if creates_cluster {
            self.ensure_ecs_service_linked_role(Some((&who, &policies)));
        }
        None
    }

    /// `request` of `who` evaluated against its `policies`, and kept.
    fn decide(&self, who: &Identity, policies: &[Value], request: &Request) -> Decision {
        let decision = evaluate(policies.iter(), request);
        let mut kept = self.evaluated.lock().expect("auth lock");
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(Evaluated {
            caller: who.arn.clone(),
            request: request.clone(),
            allowed: decision == Decision::Allow,
        });
        decision
    }

    /// Makes the ECS service-linked role when the account has none and the caller (the
    /// root when `None`) may: `iam:CreateServiceLinkedRole` with `iam:AWSServiceName`.
    fn ensure_ecs_service_linked_role(&self, caller: Option<(&Identity, &[Value])>) {
        if self.ecs_service_linked_role_exists() {
            return;
        }
        if let Some((who, policies)) = caller {
            let request = Request::new(
                "iam:CreateServiceLinkedRole",
                &format!(
                    "arn:aws:iam::{}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS",
                    who.account
                ),
            )
            .with("iam:AWSServiceName", "ecs.amazonaws.com");
            let decision = self.decide(who, policies, &request);
            if decision != Decision::Allow {
                return;
            }
        }
        let _ = self.query(
            "iam",
            "Action=CreateServiceLinkedRole&Version=2010-05-08&AWSServiceName=ecs.amazonaws.com",
        );
    }

    /// Whether the account has ECS's service-linked role (`AWSServiceRoleForECS`, under
    /// `/aws-service-role/ecs.amazonaws.com/`; moto names it `AWSServiceRoleForecs`, so
    /// it is found by its path).
    pub fn ecs_service_linked_role_exists(&self) -> bool {
        self.query(
            "iam",
            "Action=ListRoles&Version=2010-05-08&PathPrefix=%2Faws-service-role%2Fecs.amazonaws.com%2F",
        )
        .is_ok_and(|listed| listed.contains("<RoleName>"))
    }

    /// A role's or a user's (`kind`) policy documents: inline and attached.
    fn policies_of(&self, kind: &str, name: &str) -> Vec<Value> {
        let id = format!("{kind}/{name}");
        if let Some((at, docs)) = self.policies.lock().expect("auth lock").get(&id)
            && at.elapsed() < Duration::from_secs(1)
        {
            return docs.clone();
        }
        let mut docs = Vec::new();
        if let Ok(listed) = self.query(
            "iam",
            &format!(
                "Action=List{kind}Policies&Version=2010-05-08&{kind}Name={}",
                enc(name)
            ),
        ) {
            for policy in members(&listed) {
                if let Ok(got) = self.query(
                    "iam",
                    &format!(
                        "Action=Get{kind}Policy&Version=2010-05-08&{kind}Name={}&PolicyName={}",
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
                "Action=ListAttached{kind}Policies&Version=2010-05-08&{kind}Name={}",
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
            .insert(id, (Instant::now(), docs.clone()));
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

/// [`Lookup`] answered by moto, for a caller in `account` and `region`.
struct Moto<'a> {
    authorizer: &'a Authorizer,
    region: &'a str,
    account: &'a str,
}

impl Moto<'_> {
    fn ecs(&self, operation: &str, body: &Value) -> Option<Value> {
        self.authorizer
            .json_call(
                "ecs",
                &format!("AmazonEC2ContainerServiceV20141113.{operation}"),
                body,
            )
            .ok()
    }

    fn ec2(&self, form: &str) -> String {
        self.authorizer
            .query("ec2", &format!("Version=2016-11-15&{form}"))
            .unwrap_or_default()
    }
}

impl Lookup for Moto<'_> {
    fn secret_arn(&self, id: &str) -> String {
        if id.starts_with("arn:") {
            return id.to_owned();
        }
        self.authorizer
            .json_call(
                "secretsmanager",
                "secretsmanager.DescribeSecret",
                &json!({"SecretId": id}),
            )
            .ok()
            .and_then(|v| v["ARN"].as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                format!(
                    "arn:aws:secretsmanager:{}:{}:secret:{id}",
                    self.region, self.account
                )
            })
    }

    fn task_definition_arn(&self, id: &str) -> Option<String> {
        self.ecs("DescribeTaskDefinition", &json!({"taskDefinition": id}))?
            ["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .map(str::to_owned)
    }

    fn next_revision(&self, family: &str) -> u64 {
        self.ecs("DescribeTaskDefinition", &json!({"taskDefinition": family}))
            .and_then(|v| v["taskDefinition"]["revision"].as_u64())
            .unwrap_or(0)
            + 1
    }

    fn ec2_tags(&self, id: &str) -> Vec<(String, String)> {
        let got = self.ec2(&format!(
            "Action=DescribeTags&Filter.1.Name=resource-id&Filter.1.Value.1={}",
            enc(id)
        ));
        got.split("<item>")
            .skip(1)
            .filter_map(|item| {
                Some((
                    unescape(between(item, "<key>", "</key>")?),
                    unescape(between(item, "<value>", "</value>").unwrap_or_default()),
                ))
            })
            .collect()
    }

    fn ecs_tags(&self, arn: &str) -> Vec<(String, String)> {
        self.ecs("ListTagsForResource", &json!({"resourceArn": arn}))
            .map(|v| {
                v["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| {
                        Some((
                            t["key"].as_str()?.to_owned(),
                            t["value"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn default_vpc(&self) -> Option<String> {
        let got = self.ec2("Action=DescribeVpcs&Filter.1.Name=isDefault&Filter.1.Value.1=true");
        between(&got, "<vpcId>", "</vpcId>").map(str::to_owned)
    }
}

/// A service's refusal of an unauthorized call, in its protocol.
fn denied(service: &str, message: &str) -> Vec<u8> {
    let xml = |code: &str| {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>iam-stand-in</RequestId></ErrorResponse>",
            xml_escape(message)
        )
    };
    let (status, content_type, code, body) = match service {
        "iam" | "sts" | "monitoring" => (
            "403 Forbidden",
            "text/xml",
            "AccessDenied",
            xml("AccessDenied"),
        ),
        // SNS: 403 AuthorizationError (SNS API reference, "Common errors").
        "sns" => (
            "403 Forbidden",
            "text/xml",
            "AuthorizationError",
            xml("AuthorizationError"),
        ),
        // EC2: UnauthorizedOperation, in EC2's own error shape (EC2 API reference,
        // "Error codes").
        "ec2" => (
            "403 Forbidden",
            "text/xml",
            "UnauthorizedOperation",
            format!(
                "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation. {}</Message></Error></Errors><RequestID>iam-stand-in</RequestID></Response>",
                xml_escape(message)
            ),
        ),
        // REST-JSON services answer 403 with the type in a header.
        "scheduler" => (
            "403 Forbidden",
            "application/json",
            "AccessDeniedException",
            json!({"Message": message}).to_string(),
        ),
        _ => (
            "400 Bad Request",
            "application/x-amz-json-1.1",
            "AccessDeniedException",
            json!({"__type": "AccessDeniedException", "message": message, "Message": message})
                .to_string(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nx-amzn-ErrorType: {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
