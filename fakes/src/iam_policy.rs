//! IAM's policy evaluation, as the IAM user guide describes it ("Policy evaluation
//! logic", "IAM JSON policy elements"), for the AWS stand-in to authorize a request
//! against the caller's policies (or a resource's policy against a principal):
//!
//! - an explicit `Deny` in any policy wins; else an `Allow` in any allows; else the
//!   request is implicitly denied;
//! - `Action`/`NotAction` match case-insensitively, with `*` and `?`;
//! - `Resource`/`NotResource` match ARNs segment by segment (partition, service,
//!   region, account) with `*` and `?`, the resource part as a whole, so a `*` there
//!   spans `/` and `:` (`log-group:NAME:*` covers its streams);
//! - `Principal`/`NotPrincipal` (resource policies): `"*"`, `{"AWS": ...}` (an ARN or
//!   an account) and `{"Service": ...}`;
//! - `Condition`: every operator block and every key in it must hold; a key with several
//!   values holds if any does. The operators: `String(Not)Equals(IgnoreCase)`,
//!   `String(Not)Like`, `Arn(Not)Equals`, `Arn(Not)Like`, `Numeric*`, `Bool`, `Null`,
//!   each with `...IfExists`, and the `ForAnyValue:`/`ForAllValues:` set prefixes. A key
//!   missing from the request makes a condition false, but a negated operator's true
//!   and an `...IfExists` operator's true ("IAM JSON policy elements: Condition
//!   operators"). Condition keys are case-insensitive, their values case-sensitive.
//!
//! Not modeled: permissions boundaries, session policies, SCPs and RCPs (none in the
//! stack's accounts), policy variables (`${aws:username}`: the stack uses none).

use std::collections::BTreeMap;

use serde_json::Value;

/// The outcome of evaluating a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows it.
    ImplicitDeny,
    /// A statement denies it.
    ExplicitDeny,
}

/// What is asked: the action (`ecs:RunTask`), the resource ARN it is authorized on,
/// the request's condition keys (lower-cased names; each with its values), and for a
/// resource policy, who asks.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, Vec<String>>,
    pub principal: Option<Principal>,
}

/// Who asks, for a resource policy's `Principal`.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An AWS service (`events.amazonaws.com`).
    Service(String),
    /// An IAM identity's ARN, in its account.
    Aws { arn: String, account: String },
}

impl Request {
    pub fn new(action: &str, resource: &str) -> Self {
        Self {
            action: action.to_owned(),
            resource: resource.to_owned(),
            ..Self::default()
        }
    }

    /// Adds a condition key's value.
    #[must_use]
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.context
            .entry(key.to_ascii_lowercase())
            .or_default()
            .push(value.to_owned());
        self
    }
}

/// Evaluates `request` against every policy document in `policies`.
pub fn evaluate<'a>(policies: impl IntoIterator<Item = &'a Value>, request: &Request) -> Decision {
    let mut allowed = false;
    for policy in policies {
        for statement in statements(policy) {
            if !applies(statement, request) {
                continue;
            }
            match statement["Effect"].as_str() {
                Some("Deny") => return Decision::ExplicitDeny,
                Some("Allow") => allowed = true,
                _ => {}
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

fn statements(policy: &Value) -> Vec<&Value> {
    match &policy["Statement"] {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![&policy["Statement"]],
        _ => Vec::new(),
    }
}

/// Strings or an array of strings, as policies write either.
fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn applies(statement: &Value, request: &Request) -> bool {
    let action = |patterns: &Value| {
        strings(patterns).iter().any(|p| {
            glob(
                &p.to_ascii_lowercase(),
                &request.action.to_ascii_lowercase(),
            )
        })
    };
    let action_ok = match (&statement["Action"], &statement["NotAction"]) {
        (a @ (Value::String(_) | Value::Array(_)), _) => action(a),
        (_, n @ (Value::String(_) | Value::Array(_))) => !action(n),
        _ => false,
    };
    let resource = |patterns: &Value| {
        strings(patterns)
            .iter()
            .any(|p| arn_matches(p, &request.resource))
    };
    let resource_ok = match (&statement["Resource"], &statement["NotResource"]) {
        (r @ (Value::String(_) | Value::Array(_)), _) => resource(r),
        (_, n @ (Value::String(_) | Value::Array(_))) => !resource(n),
        // A resource policy's statement names no resource: it is the resource's own.
        _ => true,
    };
    let principal_ok = match (
        &statement["Principal"],
        &statement["NotPrincipal"],
        &request.principal,
    ) {
        (Value::Null, Value::Null, _) => true,
        (p, Value::Null, Some(who)) => principal_matches(p, who),
        (Value::Null, n, Some(who)) => !principal_matches(n, who),
        _ => false,
    };
    action_ok && resource_ok && principal_ok && conditions_hold(&statement["Condition"], request)
}

fn principal_matches(p: &Value, who: &Principal) -> bool {
    if p == "*" {
        return true;
    }
    match who {
        Principal::Service(s) => strings(&p["Service"]).contains(&s.as_str()),
        Principal::Aws { arn, account } => strings(&p["AWS"]).iter().any(|v| {
            *v == "*" || v == arn || v == account || *v == format!("arn:aws:iam::{account}:root")
        }),
    }
}

/// An ARN pattern against an ARN: the first five segments each, the rest as one.
pub fn arn_matches(pattern: &str, arn: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == a.len() && p.iter().zip(&a).all(|(p, a)| glob(p, a))
}

/// `*` for any run of characters, `?` for one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut i, mut j) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

fn conditions_hold(condition: &Value, request: &Request) -> bool {
    let Some(blocks) = condition.as_object() else {
        return true;
    };
    blocks.iter().all(|(operator, keys)| {
        keys.as_object().is_some_and(|keys| {
            keys.iter()
                .all(|(key, wanted)| holds(operator, key, wanted, request))
        })
    })
}

fn holds(operator: &str, key: &str, wanted: &Value, request: &Request) -> bool {
    let (set, operator) = match operator.split_once(':') {
        Some((set, op)) => (Some(set), op),
        None => (None, operator),
    };
    let (operator, if_exists) = match operator.strip_suffix("IfExists") {
        Some(op) => (op, true),
        None => (operator, false),
    };
    let wanted: Vec<String> = match wanted {
        Value::Array(a) => a.iter().map(scalar).collect(),
        v => vec![scalar(v)],
    };
    let got = request.context.get(&key.to_ascii_lowercase());
    if operator == "Null" {
        let missing = got.is_none_or(Vec::is_empty);
        return wanted.iter().any(|w| (w == "true") == missing);
    }
    let negated = operator.contains("Not");
    let Some(got) = got.filter(|g| !g.is_empty()) else {
        // ForAllValues over no values holds; ForAnyValue over none does not.
        return match set {
            Some("ForAllValues") => true,
            Some(_) => false,
            None => negated || if_exists,
        };
    };
    let one = |value: &str| -> bool {
        let any = wanted
            .iter()
            .any(|w| compare(operator.replace("Not", "").as_str(), w, value));
        if negated { !any } else { any }
    };
    match set {
        Some("ForAllValues") => got.iter().all(|v| one(v)),
        // ForAnyValue, or a single-valued key: any of the request's values.
        _ => got.iter().any(|v| one(v)),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The positive form of an operator (`StringEquals` for `StringNotEquals`).
fn compare(operator: &str, wanted: &str, got: &str) -> bool {
    match operator {
        "StringEquals" => wanted == got,
        "StringEqualsIgnoreCase" | "Bool" => wanted.eq_ignore_ascii_case(got),
        "StringLike" => glob(wanted, got),
        // Both match each of an ARN's six parts with wildcards (Condition operators).
        "ArnEquals" | "ArnLike" => arn_matches(wanted, got),
        "NumericEquals"
        | "NumericLessThan"
        | "NumericLessThanEquals"
        | "NumericGreaterThan"
        | "NumericGreaterThanEquals" => {
            let (Ok(w), Ok(g)) = (wanted.parse::<f64>(), got.parse::<f64>()) else {
                return false;
            };
            match operator {
                "NumericEquals" => (w - g).abs() < f64::EPSILON,
                "NumericLessThan" => g < w,
                "NumericLessThanEquals" => g <= w,
                "NumericGreaterThan" => g > w,
                _ => g >= w,
            }
        }
        // An operator this stand-in does not know never holds: a policy relying on it
        // fails its test rather than passing by accident.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn deny_wins_allow_allows_and_nothing_denies() {
        let allow = json!({"Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]});
        let deny =
            json!({"Statement": {"Effect": "Deny", "Action": "ecs:RunTask", "Resource": "*"}});
        let run = Request::new("ecs:RunTask", "arn:aws:ecs:us-east-1:1:task-definition/f:3");
        assert_eq!(evaluate([&allow], &run), Decision::Allow);
        assert_eq!(evaluate([&allow, &deny], &run), Decision::ExplicitDeny);
        assert_eq!(
            evaluate([&deny], &Request::new("ecs:ListTasks", "*")),
            Decision::ImplicitDeny
        );
        assert_eq!(evaluate(std::iter::empty(), &run), Decision::ImplicitDeny);
    }

    #[test]
    fn actions_match_without_case_and_resources_by_segment() {
        let p = json!({"Statement": [{"Effect": "Allow",
            "Action": ["logs:Put*", "cloudwatch:describealarms"],
            "Resource": ["arn:aws:logs:*:123456789012:log-group:/ecs/app:*", "arn:aws:cloudwatch:us-west-2:123456789012:alarm:app-*"]}]});
        let stream = "arn:aws:logs:us-west-2:123456789012:log-group:/ecs/app:log-stream:ecs/c/1";
        assert_eq!(
            evaluate([&p], &Request::new("logs:PutLogEvents", stream)),
            Decision::Allow
        );
        // Another account, another group, or an alarm outside the prefix: no.
        assert_eq!(
            evaluate(
                [&p],
                &Request::new(
                    "logs:PutLogEvents",
                    &stream.replace("123456789012", "999999999999")
                )
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(
                [&p],
                &Request::new(
                    "logs:PutLogEvents",
                    "arn:aws:logs:us-west-2:123456789012:log-group:/ecs/other:log-stream:x"
                )
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(
                [&p],
                &Request::new(
                    "cloudwatch:DescribeAlarms",
                    "arn:aws:cloudwatch:us-west-2:123456789012:alarm:*"
                )
            ),
            Decision::ImplicitDeny,
            "a prefix read is authorized on alarm:*, which app-* does not cover"
        );
        assert!(glob("a?c*", "abcdef") && !glob("a?c", "abcd") && glob("*", ""));
    }

    #[test]
    fn not_action_and_not_resource_invert_the_match() {
        let p = json!({"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::secret/*"}]});
        assert_eq!(
            evaluate(
                [&p],
                &Request::new("ecs:RunTask", "arn:aws:ecs:r:1:task/c/1")
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate([&p], &Request::new("iam:PassRole", "arn:aws:iam::1:role/r")),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate([&p], &Request::new("s3:GetObject", "arn:aws:s3:::secret/k")),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn conditions_as_the_deployer_policy_uses_them() {
        let pass = json!({"Statement": [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::1:role/job",
            "Condition": {"StringEquals": {"iam:PassedToService": ["ecs-tasks.amazonaws.com", "scheduler.amazonaws.com"]}}}]});
        let role = "arn:aws:iam::1:role/job";
        assert_eq!(
            evaluate(
                [&pass],
                &Request::new("iam:PassRole", role)
                    .with("iam:PassedToService", "scheduler.amazonaws.com")
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate(
                [&pass],
                &Request::new("iam:PassRole", role)
                    .with("iam:PassedToService", "lambda.amazonaws.com")
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate([&pass], &Request::new("iam:PassRole", role)),
            Decision::ImplicitDeny,
            "a missing key fails a positive operator"
        );

        let tagged = json!({"Statement": [{"Effect": "Allow", "Action": "ec2:DeleteSecurityGroup", "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/app": "qbo"}}}]});
        let sg = "arn:aws:ec2:r:1:security-group/sg-1";
        assert_eq!(
            evaluate(
                [&tagged],
                &Request::new("ec2:DeleteSecurityGroup", sg).with("aws:ResourceTag/App", "qbo")
            ),
            Decision::Allow,
            "keys ignore case"
        );
        assert_eq!(
            evaluate(
                [&tagged],
                &Request::new("ec2:DeleteSecurityGroup", sg).with("aws:ResourceTag/app", "QBO")
            ),
            Decision::ImplicitDeny,
            "values do not"
        );

        let cluster = json!({"Statement": [{"Effect": "Allow", "Action": "ecs:ListTasks", "Resource": "*",
            "Condition": {"ArnEquals": {"ecs:cluster": "arn:aws:ecs:r:1:cluster/c"}}}]});
        assert_eq!(
            evaluate(
                [&cluster],
                &Request::new("ecs:ListTasks", "*")
                    .with("ecs:cluster", "arn:aws:ecs:r:1:cluster/c")
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate(
                [&cluster],
                &Request::new("ecs:ListTasks", "*")
                    .with("ecs:cluster", "arn:aws:ecs:r:1:cluster/d")
            ),
            Decision::ImplicitDeny
        );

        let linked = json!({"Statement": [{"Effect": "Allow", "Action": "iam:CreateServiceLinkedRole", "Resource": "*",
            "Condition": {"StringLike": {"iam:AWSServiceName": "ecs.amazonaws.com"}}}]});
        assert_eq!(
            evaluate(
                [&linked],
                &Request::new("iam:CreateServiceLinkedRole", "*")
                    .with("iam:AWSServiceName", "ecs.amazonaws.com")
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate(
                [&linked],
                &Request::new("iam:CreateServiceLinkedRole", "*")
                    .with("iam:AWSServiceName", "rds.amazonaws.com")
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn negated_if_exists_null_and_set_operators() {
        let not = json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:RequestTag/env": "prod"}}}]});
        assert_eq!(
            evaluate([&not], &Request::new("x:Y", "*")),
            Decision::Allow,
            "a missing key makes a negated operator true"
        );
        assert_eq!(
            evaluate(
                [&not],
                &Request::new("x:Y", "*").with("aws:RequestTag/env", "prod")
            ),
            Decision::ImplicitDeny
        );

        let if_exists = json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"StringEqualsIfExists": {"ecs:cluster": "c"}}}]});
        assert_eq!(
            evaluate([&if_exists], &Request::new("x:Y", "*")),
            Decision::Allow
        );
        assert_eq!(
            evaluate(
                [&if_exists],
                &Request::new("x:Y", "*").with("ecs:cluster", "d")
            ),
            Decision::ImplicitDeny
        );

        let null = json!({"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {"Null": {"aws:RequestTag/app": "true"}}}]});
        assert_eq!(
            evaluate([&null], &Request::new("x:Y", "*")),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate(
                [&null],
                &Request::new("x:Y", "*").with("aws:RequestTag/app", "a")
            ),
            Decision::ImplicitDeny
        );

        let all = json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["app", "env"]}}}]});
        let tags = |keys: &[&str]| {
            keys.iter()
                .fold(Request::new("x:Y", "*"), |r, k| r.with("aws:TagKeys", k))
        };
        assert_eq!(evaluate([&all], &tags(&["app"])), Decision::Allow);
        assert_eq!(
            evaluate([&all], &tags(&["app", "owner"])),
            Decision::ImplicitDeny
        );
        let any = json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": "app"}}}]});
        assert_eq!(evaluate([&any], &tags(&["owner", "app"])), Decision::Allow);
        assert_eq!(evaluate([&any], &tags(&[])), Decision::ImplicitDeny);

        let unknown = json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}}]});
        assert_eq!(
            evaluate(
                [&unknown],
                &Request::new("x:Y", "*").with("aws:CurrentTime", "2026-12-03T00:00:00Z")
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn resource_policies_match_their_principal() {
        let logs = json!({"Statement": [{"Effect": "Allow",
            "Principal": {"Service": ["events.amazonaws.com", "delivery.logs.amazonaws.com"]},
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "arn:aws:logs:r:1:log-group:/aws/events/app-tasks:*",
            "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:events:r:1:rule/app-*"}}}]});
        let put = |who: Principal, source: &str| {
            Request {
                principal: Some(who),
                ..Request::new(
                    "logs:PutLogEvents",
                    "arn:aws:logs:r:1:log-group:/aws/events/app-tasks:log-stream:x",
                )
            }
            .with("aws:SourceArn", source)
        };
        let events = || Principal::Service("events.amazonaws.com".into());
        assert_eq!(
            evaluate(
                [&logs],
                &put(events(), "arn:aws:events:r:1:rule/app-task-events")
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate([&logs], &put(events(), "arn:aws:events:r:1:rule/other")),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(
                [&logs],
                &put(
                    Principal::Service("sns.amazonaws.com".into()),
                    "arn:aws:events:r:1:rule/app-x"
                )
            ),
            Decision::ImplicitDeny
        );
        let trust = json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "sts:AssumeRole"}]});
        let me = Principal::Aws {
            arn: "arn:aws:iam::1:user/deployer".into(),
            account: "1".into(),
        };
        let assume = Request {
            principal: Some(me),
            ..Request::new("sts:AssumeRole", "arn:aws:iam::1:role/r")
        };
        assert_eq!(evaluate([&trust], &assume), Decision::Allow);
    }
}
