//! What IAM evaluates for one AWS call: the action, the resource ARN AWS authorizes it
//! on, and the condition keys it sets, for every call the deployer makes, per the
//! Service Authorization Reference (SAR, "Actions, resources, and condition keys for
//! SERVICE"; each row, its source and what stays unverified are in
//! `fakes/reference/service-authorization.md`), with the documented exceptions:
//!
//! - An action the SAR lists with no resource type is evaluated on `*`: only a
//!   statement whose `Resource` is `*` allows it (ECS's `ListTaskDefinitions`,
//!   `DescribeTaskDefinition`, `DeregisterTaskDefinition`; EC2's `Describe*`;
//!   CloudWatch Logs' resource policies; Scheduler's `ListSchedules`;
//!   `ecr:GetAuthorizationToken`; `sns:Unsubscribe`; `cloudwatch:PutMetricData`, with
//!   `cloudwatch:namespace`).
//! - `cloudwatch:DescribeAlarms` with `AlarmNamePrefix` is evaluated on `alarm:*`
//!   (aws-samples/amazon-cloudwatch-auto-alarms issue 1, mattclay/aws-terminator
//!   issue 63).
//! - `ecs:ListTasks` naming a cluster is evaluated on `*` with `ecs:cluster`
//!   (awsdocs/amazon-ecs-developer-guide issue 211).
//! - One call can need several actions: a call that passes a role needs `iam:PassRole`
//!   on it with `iam:PassedToService` (RegisterTaskDefinition's task and execution
//!   roles to `ecs-tasks.amazonaws.com`, a schedule's to `scheduler.amazonaws.com`, a
//!   rule target's to `events.amazonaws.com`; IAM user guide, "Granting a user
//!   permissions to pass a role"); a create call with tags needs the service's tagging
//!   action with its create-action key (`ecs:CreateAction`, `ec2:CreateAction`; ECS
//!   developer guide "Grant permission to tag resources on creation", EC2 user guide
//!   "Grant permission to tag resources during creation").
//! - Conditions on tags read the resource's tags as they are (`aws:ResourceTag/KEY`)
//!   and the request's (`aws:RequestTag/KEY`).
//!
//! A call this table does not know is an `Err`: the proxy denies it, naming this file,
//! so a gap shows as a failure, never as a pass.

use serde_json::Value;

use crate::iam_policy::Request;

/// One call as the proxy received it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The signing name (`ecs`, `monitoring`, `scheduler`...).
    pub service: &'a str,
    /// The operation, for RPC protocols (`RunTask`); REST calls are named here.
    pub operation: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// From the request's signature.
    pub region: &'a str,
    pub body: &'a [u8],
}

/// What the evaluation needs to read from the account.
pub trait Lookup {
    /// A secret's full ARN (suffix included), from its name or ARN.
    fn secret_arn(&self, id: &str) -> String;
    /// A task definition's ARN with its revision, from a family, `family:rev` or ARN;
    /// `None` when it does not exist.
    fn task_definition_arn(&self, id: &str) -> Option<String>;
    /// The revision the next registration of `family` gets.
    fn next_revision(&self, family: &str) -> u64;
    /// An EC2 resource's tags.
    fn ec2_tags(&self, id: &str) -> Vec<(String, String)>;
    /// An ECS resource's tags.
    fn ecs_tags(&self, arn: &str) -> Vec<(String, String)>;
    /// The region's default VPC's id.
    fn default_vpc(&self) -> Option<String>;
}

/// The requests IAM evaluates for `call` by a caller of `account`, every one of which
/// must be allowed.
pub fn requests(
    call: &Call<'_>,
    account: &str,
    lookup: &dyn Lookup,
) -> Result<Vec<Request>, String> {
    let region = call.region;
    let partition = partition(region);
    let arn =
        |service: &str, rest: &str| format!("arn:{partition}:{service}:{region}:{account}:{rest}");
    let json: Value = serde_json::from_slice(call.body).unwrap_or_default();
    let form = crate::quotas::form(call.body);
    let field = |k: &str| -> String {
        json[k]
            .as_str()
            .map(str::to_owned)
            .or_else(|| form.get(k).cloned())
            .unwrap_or_default()
    };
    let members = |prefix: &str| -> Vec<String> {
        form.iter()
            .filter(|(k, _)| {
                k.strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            })
            .map(|(_, v)| v.clone())
            .collect()
    };
    let one = |action: &str, resource: String| Ok(vec![Request::new(action, &resource)]);
    let op = call.operation;
    let prefix = match call.service {
        "monitoring" => "cloudwatch",
        "scheduler" => return scheduler(call, &json, &arn),
        other => other,
    };
    let action = format!("{prefix}:{op}");
    match prefix {
        "sts" if op == "GetCallerIdentity" => Ok(Vec::new()),
        "dynamodb" => match op {
            "TagResource" | "ListTagsOfResource" | "UntagResource" => {
                one(&action, field("ResourceArn"))
            }
            _ => one(
                &action,
                arn("dynamodb", &format!("table/{}", field("TableName"))),
            ),
        },
        "secretsmanager" => one(&action, lookup.secret_arn(&field("SecretId"))),
        "ecr" => match op {
            "GetAuthorizationToken" => one(&action, "*".into()),
            "TagResource" | "ListTagsForResource" | "UntagResource" => {
                one(&action, field("resourceArn"))
            }
            "DescribeRepositories" => {
                let names: Vec<String> = json["repositoryNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str())
                    .map(|n| arn("ecr", &format!("repository/{n}")))
                    .collect();
                Ok(if names.is_empty() {
                    vec![Request::new(&action, &arn("ecr", "repository/*"))]
                } else {
                    names.iter().map(|n| Request::new(&action, n)).collect()
                })
            }
            // CreateRepository with tags depends on ecr:TagResource (SAR).
            "CreateRepository" => {
                let repository = arn("ecr", &format!("repository/{}", field("repositoryName")));
                let mut asked = vec![Request::new(&action, &repository)];
                if json["tags"].as_array().is_some_and(|t| !t.is_empty()) {
                    asked.push(Request::new("ecr:TagResource", &repository));
                }
                Ok(asked)
            }
            _ => one(
                &action,
                arn("ecr", &format!("repository/{}", field("repositoryName"))),
            ),
        },
        "ecs" => ecs(call, &action, &json, lookup, &arn),
        "logs" => {
            let group = |name: &str| arn("logs", &format!("log-group:{name}"));
            // Actions on a group are evaluated on `log-group:NAME:log-stream:` (seen in
            // AccessDenied messages: elastic/apm-aws-lambda issue 526 for CreateLogGroup,
            // prowler PR 37 for DescribeMetricFilters, cloudposse/terraform-aws-cicd
            // issue 33 for PutRetentionPolicy), so only `log-group:NAME:*` (or `*`)
            // allows them, as the CloudWatch Logs user guide says; the tag actions on
            // the group's ARN without `:*` (same guide).
            let streams = |name: &str| format!("{}:log-stream:", group(name));
            match op {
                // No resource type (SAR); evaluated on `log-group::log-stream:` even
                // with a prefix (hashicorp/terraform-provider-aws issue 8804).
                "DescribeLogGroups" => one(&action, streams("")),
                "DescribeResourcePolicies" | "PutResourcePolicy" | "DeleteResourcePolicy" => {
                    one(&action, "*".into())
                }
                "TagResource" | "ListTagsForResource" | "UntagResource" => {
                    one(&action, field("resourceArn"))
                }
                // Creating a group with tags also needs logs:TagResource ("not authorized
                // to perform CreateLogGroup with Tags. An additional permission
                // \"logs:TagResource\" is required": DataDog/cloudformation-template PR 61).
                "CreateLogGroup" => {
                    let name = field("logGroupName");
                    let mut asked = vec![Request::new(&action, &streams(&name))];
                    if json["tags"].as_object().is_some_and(|t| !t.is_empty()) {
                        asked.push(Request::new("logs:TagResource", &group(&name)));
                    }
                    Ok(asked)
                }
                _ => one(&action, streams(&field("logGroupName"))),
            }
        }
        "events" => {
            let rule = |name: &str| arn("events", &format!("rule/{name}"));
            match op {
                "TagResource" | "ListTagsForResource" | "UntagResource" => {
                    one(&action, field("ResourceARN"))
                }
                "PutRule" | "DescribeRule" | "DeleteRule" => one(&action, rule(&field("Name"))),
                "PutTargets" => {
                    let mut asked = vec![Request::new(&action, &rule(&field("Rule")))];
                    for target in json["Targets"].as_array().into_iter().flatten() {
                        if let Some(role) = target["RoleArn"].as_str() {
                            asked.push(pass_role(role, "events.amazonaws.com"));
                        }
                    }
                    Ok(asked)
                }
                _ => one(&action, rule(&field("Rule"))),
            }
        }
        "sns" => match op {
            "CreateTopic" => one(&action, arn("sns", &field("Name"))),
            "Unsubscribe" => one(&action, "*".into()),
            "TagResource" | "ListTagsForResource" | "UntagResource" => {
                one(&action, field("ResourceArn"))
            }
            _ => one(&action, field("TopicArn")),
        },
        "cloudwatch" => {
            let alarm = |name: &str| arn("cloudwatch", &format!("alarm:{name}"));
            match op {
                "DescribeAlarms" => {
                    let names = members("AlarmNames.member.");
                    Ok(if names.is_empty() {
                        vec![Request::new(&action, &alarm("*"))]
                    } else {
                        names
                            .iter()
                            .map(|n| Request::new(&action, &alarm(n)))
                            .collect()
                    })
                }
                "DeleteAlarms" => Ok(members("AlarmNames.member.")
                    .iter()
                    .map(|n| Request::new(&action, &alarm(n)))
                    .collect()),
                "PutMetricAlarm" => one(&action, alarm(&field("AlarmName"))),
                "TagResource" | "ListTagsForResource" | "UntagResource" => {
                    one(&action, field("ResourceARN"))
                }
                "PutMetricData" => Ok(vec![
                    Request::new(&action, "*").with("cloudwatch:namespace", &field("Namespace")),
                ]),
                _ => Err(format!("{action}: no resource known")),
            }
        }
        "ec2" => ec2(&action, &form, &members, lookup, &arn),
        "iam" => {
            let role = format!("arn:{partition}:iam::{account}:role/{}", field("RoleName"));
            match op {
                "AttachRolePolicy"
                | "CreateRole"
                | "DeleteRole"
                | "DeleteRolePolicy"
                | "DetachRolePolicy"
                | "GetRole"
                | "GetRolePolicy"
                | "ListAttachedRolePolicies"
                | "ListRolePolicies"
                | "PutRolePolicy"
                | "TagRole"
                | "UntagRole"
                | "UpdateAssumeRolePolicy"
                | "UpdateRole"
                | "ListRoleTags" => {
                    let mut asked = vec![Request::new(&action, &role)];
                    // Creating a tagged role also needs iam:TagRole (IAM user guide,
                    // "Permissions required to tag IAM entities").
                    if op == "CreateRole" && form.keys().any(|k| k.starts_with("Tags.member.")) {
                        asked.push(Request::new("iam:TagRole", &role));
                    }
                    Ok(asked)
                }
                _ => Err(format!("{action}: no resource known")),
            }
        }
        _ => Err(format!("{action}: no resource known")),
    }
}

/// `iam:PassRole` of `role` to `service`.
pub fn pass_role(role: &str, service: &str) -> Request {
    Request::new("iam:PassRole", role).with("iam:PassedToService", service)
}

/// The partition of `region`. Written here again on purpose, not taken from `infra`:
/// the stand-in must not share the code whose ARNs it checks.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

type Arn<'a> = dyn Fn(&str, &str) -> String + 'a;

fn ecs(
    call: &Call<'_>,
    action: &str,
    json: &Value,
    lookup: &dyn Lookup,
    arn: &Arn<'_>,
) -> Result<Vec<Request>, String> {
    let s = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
    let cluster_arn = |c: &str| {
        let c = if c.is_empty() { "default" } else { c };
        if c.starts_with("arn:") {
            c.to_owned()
        } else {
            arn("ecs", &format!("cluster/{c}"))
        }
    };
    let cluster = cluster_arn(&s("cluster"));
    let cluster_name = cluster.rsplit('/').next().unwrap_or_default().to_owned();
    let task = |id: &str| {
        if id.starts_with("arn:") {
            id.to_owned()
        } else {
            arn("ecs", &format!("task/{cluster_name}/{id}"))
        }
    };
    let one = |resource: String| Ok(vec![Request::new(action, &resource)]);
    match call.operation {
        "ListTaskDefinitions" | "DescribeTaskDefinition" | "DeregisterTaskDefinition" => {
            one("*".into())
        }
        "CreateCluster" => {
            let new = cluster_arn(&s("clusterName"));
            let mut asked = vec![Request::new(action, &new)];
            if json["tags"].as_array().is_some_and(|t| !t.is_empty()) {
                asked.push(request_tags(
                    Request::new("ecs:TagResource", &new).with("ecs:CreateAction", "CreateCluster"),
                    json,
                ));
            }
            Ok(asked)
        }
        "DescribeClusters" => Ok(json["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|c| Request::new(action, &cluster_arn(c)))
            .collect()),
        "DeleteCluster" | "UpdateClusterSettings" => one(cluster),
        "ListTasks" => Ok(vec![
            Request::new(action, "*").with("ecs:cluster", &cluster),
        ]),
        "DescribeTasks" => Ok(json["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|t| Request::new(action, &task(t)).with("ecs:cluster", &cluster))
            .collect()),
        "StopTask" => Ok(vec![
            Request::new(action, &task(&s("task"))).with("ecs:cluster", &cluster),
        ]),
        "TagResource" => {
            let resource = s("resourceArn");
            let mut asked = Request::new(action, &resource);
            for (k, v) in lookup.ecs_tags(&resource) {
                asked = asked.with(&format!("aws:ResourceTag/{k}"), &v);
            }
            Ok(vec![request_tags(asked, json)])
        }
        "RegisterTaskDefinition" => {
            let family = s("family");
            let new = arn(
                "ecs",
                &format!("task-definition/{family}:{}", lookup.next_revision(&family)),
            );
            let mut asked = vec![Request::new(action, &new)];
            for role in ["taskRoleArn", "executionRoleArn"] {
                if let Some(r) = json[role].as_str() {
                    asked.push(pass_role(r, "ecs-tasks.amazonaws.com"));
                }
            }
            if json["tags"].as_array().is_some_and(|t| !t.is_empty()) {
                asked.push(request_tags(
                    Request::new("ecs:TagResource", &new)
                        .with("ecs:CreateAction", "RegisterTaskDefinition"),
                    json,
                ));
            }
            Ok(asked)
        }
        "RunTask" => {
            let asked_for = s("taskDefinition");
            let definition = lookup
                .task_definition_arn(&asked_for)
                .unwrap_or_else(|| arn("ecs", &format!("task-definition/{asked_for}")));
            let mut asked = vec![Request::new(action, &definition).with("ecs:cluster", &cluster)];
            for role in ["taskRoleArn", "executionRoleArn"] {
                if let Some(r) = json["overrides"][role].as_str() {
                    asked.push(pass_role(r, "ecs-tasks.amazonaws.com"));
                }
            }
            let tagged = json["tags"].as_array().is_some_and(|t| !t.is_empty())
                || json["propagateTags"].as_str().is_some_and(|p| p != "NONE");
            if tagged {
                asked.push(request_tags(
                    Request::new("ecs:TagResource", &task("new"))
                        .with("ecs:CreateAction", "RunTask")
                        .with("ecs:cluster", &cluster),
                    json,
                ));
            }
            Ok(asked)
        }
        other => Err(format!("ecs:{other}: no resource known")),
    }
}

/// `aws:RequestTag/KEY` of an ECS-style `tags: [{key, value}]` body.
fn request_tags(mut asked: Request, json: &Value) -> Request {
    for t in json["tags"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (t["key"].as_str(), t["value"].as_str()) {
            asked = asked.with(&format!("aws:RequestTag/{k}"), v);
        }
    }
    asked
}

fn ec2(
    action: &str,
    form: &std::collections::BTreeMap<String, String>,
    members: &dyn Fn(&str) -> Vec<String>,
    lookup: &dyn Lookup,
    arn: &Arn<'_>,
) -> Result<Vec<Request>, String> {
    let group = |id: &str| arn("ec2", &format!("security-group/{id}"));
    let with_tags = |mut asked: Request, id: &str| {
        for (k, v) in lookup.ec2_tags(id) {
            asked = asked.with(&format!("aws:ResourceTag/{k}"), &v);
        }
        asked
    };
    // `TagSpecification.1.Tag.2.Key` / `Tag.1.Key` (CreateTags).
    let request_tags = |mut asked: Request| {
        for (k, key) in form.iter().filter(|(k, _)| k.ends_with(".Key")) {
            let value = form
                .get(&format!("{}.Value", k.trim_end_matches(".Key")))
                .cloned()
                .unwrap_or_default();
            if k.starts_with("Tag.") || k.starts_with("TagSpecification.") {
                asked = asked.with(&format!("aws:RequestTag/{key}"), &value);
            }
        }
        asked
    };
    let op = action.trim_start_matches("ec2:");
    match op {
        "DescribeNetworkInterfaces"
        | "DescribeSecurityGroups"
        | "DescribeSubnets"
        | "DescribeVpcs" => Ok(vec![Request::new(action, "*")]),
        "CreateSecurityGroup" => {
            let vpc = form
                .get("VpcId")
                .cloned()
                .or_else(|| lookup.default_vpc())
                .unwrap_or_default();
            let mut asked = vec![
                request_tags(Request::new(action, &group("*"))),
                Request::new(action, &arn("ec2", &format!("vpc/{vpc}"))),
            ];
            if form.keys().any(|k| k.starts_with("TagSpecification.")) {
                asked.push(request_tags(
                    Request::new("ec2:CreateTags", &group("*"))
                        .with("ec2:CreateAction", "CreateSecurityGroup"),
                ));
            }
            Ok(asked)
        }
        "CreateTags" | "DeleteTags" => Ok(members("ResourceId.")
            .iter()
            .map(|id| request_tags(with_tags(Request::new(action, &group(id)), id)))
            .collect()),
        "AuthorizeSecurityGroupEgress"
        | "AuthorizeSecurityGroupIngress"
        | "RevokeSecurityGroupEgress"
        | "RevokeSecurityGroupIngress"
        | "DeleteSecurityGroup" => {
            let id = form.get("GroupId").cloned().unwrap_or_default();
            Ok(vec![with_tags(Request::new(action, &group(&id)), &id)])
        }
        other => Err(format!("ec2:{other}: no resource known")),
    }
}

/// Scheduler's REST calls: `POST /schedules/NAME`, `GET /schedule-groups/NAME`,
/// `GET /tags/ARN`...
fn scheduler(call: &Call<'_>, json: &Value, arn: &Arn<'_>) -> Result<Vec<Request>, String> {
    let (path, query) = call.path.split_once('?').unwrap_or((call.path, ""));
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .map(decode)
    };
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, name) = (
        parts.next().unwrap_or_default(),
        parts.next().map(decode).unwrap_or_default(),
    );
    let group_of = |from_body: bool| {
        let g = if from_body {
            json["GroupName"].as_str().map(str::to_owned)
        } else {
            param("groupName")
        };
        g.unwrap_or_else(|| "default".into())
    };
    let schedule = |group: &str| arn("scheduler", &format!("schedule/{group}/{name}"));
    let group = arn("scheduler", &format!("schedule-group/{name}"));
    let ask = |op: &str, resource: &str| Request::new(&format!("scheduler:{op}"), resource);
    Ok(match (call.method, kind, name.is_empty()) {
        ("GET", "schedules", true) => vec![ask("ListSchedules", "*")],
        ("GET", "schedules", false) => vec![ask("GetSchedule", &schedule(&group_of(false)))],
        ("DELETE", "schedules", false) => {
            vec![ask("DeleteSchedule", &schedule(&group_of(false)))]
        }
        ("POST" | "PUT", "schedules", false) => {
            let op = if call.method == "POST" {
                "CreateSchedule"
            } else {
                "UpdateSchedule"
            };
            let mut asked = vec![ask(op, &schedule(&group_of(true)))];
            if let Some(role) = json["Target"]["RoleArn"].as_str() {
                asked.push(pass_role(role, "scheduler.amazonaws.com"));
            }
            asked
        }
        ("GET", "schedule-groups", true) => vec![ask("ListScheduleGroups", "*")],
        ("GET", "schedule-groups", false) => vec![ask("GetScheduleGroup", &group)],
        ("POST", "schedule-groups", false) => vec![ask("CreateScheduleGroup", &group)],
        // Deleting a group deletes its schedules: scheduler:DeleteSchedule is its
        // dependent action (SAR).
        ("DELETE", "schedule-groups", false) => vec![
            ask("DeleteScheduleGroup", &group),
            ask(
                "DeleteSchedule",
                &arn("scheduler", &format!("schedule/{name}/*")),
            ),
        ],
        ("GET", "tags", false) => vec![ask("ListTagsForResource", &name)],
        ("POST", "tags", false) => vec![ask("TagResource", &name)],
        ("DELETE", "tags", false) => vec![ask("UntagResource", &name)],
        (method, kind, _) => {
            return Err(format!(
                "scheduler {method} /{kind}: no action known (add it to fakes/src/iam_actions.rs)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Account;
    impl Lookup for Account {
        fn secret_arn(&self, id: &str) -> String {
            format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{id}-AbCdEf")
        }
        fn task_definition_arn(&self, id: &str) -> Option<String> {
            Some(format!(
                "arn:aws:ecs:us-east-1:123456789012:task-definition/{id}:3"
            ))
        }
        fn next_revision(&self, _: &str) -> u64 {
            4
        }
        fn ec2_tags(&self, _: &str) -> Vec<(String, String)> {
            vec![("app".into(), "qbo".into())]
        }
        fn ecs_tags(&self, _: &str) -> Vec<(String, String)> {
            Vec::new()
        }
        fn default_vpc(&self) -> Option<String> {
            Some("vpc-1".into())
        }
    }

    fn asked(service: &str, operation: &str, method: &str, path: &str, body: &str) -> Vec<String> {
        let call = Call {
            service,
            operation,
            method,
            path,
            region: "us-east-1",
            body: body.as_bytes(),
        };
        requests(&call, "123456789012", &Account)
            .unwrap()
            .iter()
            .map(|r| {
                let mut keys: Vec<String> = r
                    .context
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.join("|")))
                    .collect();
                keys.sort();
                format!("{} {} {}", r.action, r.resource, keys.join(" "))
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn each_call_is_authorized_on_the_resource_the_reference_names() {
        assert_eq!(
            asked(
                "monitoring",
                "DescribeAlarms",
                "POST",
                "/",
                "Action=DescribeAlarms&AlarmNamePrefix=qbo-"
            ),
            ["cloudwatch:DescribeAlarms arn:aws:cloudwatch:us-east-1:123456789012:alarm:*"]
        );
        assert_eq!(
            asked(
                "ecs",
                "RegisterTaskDefinition",
                "POST",
                "/",
                r#"{"family":"f","taskRoleArn":"arn:aws:iam::123456789012:role/t","tags":[{"key":"app","value":"qbo"}]}"#
            ),
            [
                "ecs:RegisterTaskDefinition arn:aws:ecs:us-east-1:123456789012:task-definition/f:4",
                "iam:PassRole arn:aws:iam::123456789012:role/t iam:passedtoservice=ecs-tasks.amazonaws.com",
                "ecs:TagResource arn:aws:ecs:us-east-1:123456789012:task-definition/f:4 aws:requesttag/app=qbo ecs:createaction=RegisterTaskDefinition",
            ]
        );
        assert_eq!(
            asked(
                "scheduler",
                "PUT",
                "PUT",
                "/schedules/monthly",
                r#"{"GroupName":"g","Target":{"RoleArn":"arn:aws:iam::123456789012:role/s"}}"#
            ),
            [
                "scheduler:UpdateSchedule arn:aws:scheduler:us-east-1:123456789012:schedule/g/monthly",
                "iam:PassRole arn:aws:iam::123456789012:role/s iam:passedtoservice=scheduler.amazonaws.com",
            ]
        );
        assert_eq!(
            asked(
                "ec2",
                "RevokeSecurityGroupEgress",
                "POST",
                "/",
                "Action=RevokeSecurityGroupEgress&GroupId=sg-1"
            ),
            [
                "ec2:RevokeSecurityGroupEgress arn:aws:ec2:us-east-1:123456789012:security-group/sg-1 aws:resourcetag/app=qbo"
            ]
        );
        assert_eq!(
            asked(
                "logs",
                "PutRetentionPolicy",
                "POST",
                "/",
                r#"{"logGroupName":"/ecs/qbo"}"#
            ),
            [
                "logs:PutRetentionPolicy arn:aws:logs:us-east-1:123456789012:log-group:/ecs/qbo:log-stream:"
            ]
        );
        assert_eq!(
            asked("sts", "GetCallerIdentity", "POST", "/", ""),
            Vec::<String>::new()
        );
        let call = Call {
            service: "lambda",
            operation: "Invoke",
            method: "POST",
            path: "/",
            region: "us-east-1",
            body: b"",
        };
        assert!(requests(&call, "123456789012", &Account).is_err());
    }
}
