//! IAM's quotas, which moto does not hold, refused in the AWS proxy as IAM refuses them
//! ("IAM and AWS STS quotas, name requirements, and character limits", IAM user guide):
//!
//! - a managed policy holds at most 6,144 characters, white space not counted
//!   (CreatePolicy, CreatePolicyVersion): `LimitExceeded`, "Cannot exceed quota for
//!   PolicySize: 6144";
//! - a role's trust policy at most 2,048 characters by default (adjustable; CreateRole,
//!   UpdateAssumeRolePolicy): "Cannot exceed quota for ACLSizePerRole: 2048";
//! - a role's inline policies together at most 10,240 characters, a user's 2,048
//!   (PutRolePolicy, PutUserPolicy): "Maximum policy size of 10240 bytes exceeded for
//!   role NAME";
//! - at most 10 managed policies attached to a role or a user by default (adjustable;
//!   AttachRolePolicy, AttachUserPolicy): "Cannot exceed quota for PoliciesPerRole: 10".
//!
//! And CloudWatch Logs': at most 10 resource policies per Region and account, not
//! adjustable ("CloudWatch Logs quotas"): PutResourcePolicy of an 11th name is refused
//! with `LimitExceededException` ("Resource limit exceeded."; wording unverified).
//!
//! The adjustable ones are [`Quotas`] fields, as a Service Quotas increase would set
//! them. The messages are those IAM answers as commonly reported; each is a
//! `LimitExceeded` error with HTTP status 409.

use std::collections::BTreeMap;

/// The quotas held, with IAM's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub managed_policy_chars: usize,
    pub trust_policy_chars: usize,
    pub role_inline_chars: usize,
    pub user_inline_chars: usize,
    pub managed_per_role: usize,
    pub managed_per_user: usize,
    pub log_resource_policies: usize,
    /// Metric filters per log group: 100, not adjustable (CloudWatch Logs quotas).
    pub metric_filters_per_group: usize,
    /// Targets per EventBridge rule: 5, not adjustable (EventBridge quotas).
    pub targets_per_rule: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            managed_policy_chars: 6144,
            trust_policy_chars: 2048,
            role_inline_chars: 10_240,
            user_inline_chars: 2048,
            managed_per_role: 10,
            managed_per_user: 10,
            log_resource_policies: 10,
            metric_filters_per_group: 100,
            targets_per_rule: 5,
        }
    }
}

/// The characters IAM counts in a policy document: all but white space.
pub fn policy_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

/// An IAM query-protocol request's form fields, decoded.
pub fn form(body: &[u8]) -> BTreeMap<String, String> {
    crate::consistency::form(body).into_iter().collect()
}

/// What IAM would refuse in this call, given `ask` to read the current state (an IAM
/// query such as `Action=ListAttachedRolePolicies&RoleName=x`, answered as XML): the
/// error message, or `None` to let it through.
pub fn refusal(
    quotas: &Quotas,
    operation: &str,
    body: &[u8],
    ask: &mut dyn FnMut(&str) -> String,
) -> Option<String> {
    let f = form(body);
    let field = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
    match operation {
        "CreatePolicy" | "CreatePolicyVersion" => {
            (policy_size(field("PolicyDocument")) > quotas.managed_policy_chars).then(|| {
                format!(
                    "Cannot exceed quota for PolicySize: {}",
                    quotas.managed_policy_chars
                )
            })
        }
        "CreateRole" | "UpdateAssumeRolePolicy" => {
            let document = f
                .get("AssumeRolePolicyDocument")
                .or_else(|| f.get("PolicyDocument"))
                .map(String::as_str)
                .unwrap_or_default();
            (policy_size(document) > quotas.trust_policy_chars).then(|| {
                format!(
                    "Cannot exceed quota for ACLSizePerRole: {}",
                    quotas.trust_policy_chars
                )
            })
        }
        "PutRolePolicy" | "PutUserPolicy" => {
            let (kind, name_field, limit, list, get) = if operation == "PutRolePolicy" {
                (
                    "role",
                    "RoleName",
                    quotas.role_inline_chars,
                    "ListRolePolicies",
                    "GetRolePolicy",
                )
            } else {
                (
                    "user",
                    "UserName",
                    quotas.user_inline_chars,
                    "ListUserPolicies",
                    "GetUserPolicy",
                )
            };
            let owner = field(name_field);
            let this = field("PolicyName");
            let listed = ask(&format!(
                "Action={list}&Version=2010-05-08&{name_field}={}",
                enc(owner)
            ));
            let others: usize = members(&listed)
                .iter()
                .filter(|n| n.as_str() != this)
                .map(|n| {
                    let got = ask(&format!(
                        "Action={get}&Version=2010-05-08&{name_field}={}&PolicyName={}",
                        enc(owner),
                        enc(n)
                    ));
                    let document =
                        between(&got, "<PolicyDocument>", "</PolicyDocument>").unwrap_or_default();
                    let document = unescape(document);
                    let decoded =
                        percent_encoding::percent_decode_str(&document).decode_utf8_lossy();
                    policy_size(&decoded)
                })
                .sum();
            (others + policy_size(field("PolicyDocument")) > limit).then(|| {
                format!("Maximum policy size of {limit} bytes exceeded for {kind} {owner}")
            })
        }
        "AttachRolePolicy" | "AttachUserPolicy" => {
            let (quota, name_field, limit, list) = if operation == "AttachRolePolicy" {
                (
                    "PoliciesPerRole",
                    "RoleName",
                    quotas.managed_per_role,
                    "ListAttachedRolePolicies",
                )
            } else {
                (
                    "PoliciesPerUser",
                    "UserName",
                    quotas.managed_per_user,
                    "ListAttachedUserPolicies",
                )
            };
            let listed = ask(&format!(
                "Action={list}&Version=2010-05-08&{name_field}={}&MaxItems=1000",
                enc(field(name_field))
            ));
            let attached: Vec<&str> = listed
                .split("<PolicyArn>")
                .skip(1)
                .filter_map(|s| s.split("</PolicyArn>").next())
                .collect();
            let already = attached.contains(&field("PolicyArn"));
            (!already && attached.len() >= limit)
                .then(|| format!("Cannot exceed quota for {quota}: {limit}"))
        }
        _ => None,
    }
}

/// What CloudWatch Logs would refuse in this JSON-protocol call, given `ask` to call
/// another of its operations (`(target, body)` answered as JSON): a new metric filter
/// past the group's 100, a new resource policy past the Region's 10.
pub fn logs_refusal(
    quotas: &Quotas,
    operation: &str,
    body: &[u8],
    ask: &mut dyn FnMut(&str, &str) -> String,
) -> Option<String> {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let (listing, of, array, field, name, limit) = match operation {
        "PutMetricFilter" => (
            "Logs_20140328.DescribeMetricFilters",
            serde_json::json!({"logGroupName": request["logGroupName"]}),
            "metricFilters",
            "filterName",
            &request["filterName"],
            quotas.metric_filters_per_group,
        ),
        "PutResourcePolicy" => (
            "Logs_20140328.DescribeResourcePolicies",
            serde_json::json!({}),
            "resourcePolicies",
            "policyName",
            &request["policyName"],
            quotas.log_resource_policies,
        ),
        _ => return None,
    };
    let names = listed(ask, listing, of, array, field);
    let name = name.as_str().unwrap_or_default();
    (!names.contains(name) && names.len() >= limit).then(|| "Resource limit exceeded.".to_owned())
}

/// What EventBridge would refuse: PutTargets taking a rule past its 5 targets (a
/// target whose Id the rule has already is replaced, not added). The message is
/// EventBridge's `LimitExceededException` text as far as it is documented; the exact
/// wording is unverified.
pub fn events_refusal(
    quotas: &Quotas,
    operation: &str,
    body: &[u8],
    ask: &mut dyn FnMut(&str, &str) -> String,
) -> Option<String> {
    if operation != "PutTargets" {
        return None;
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let rule = request["Rule"].as_str().unwrap_or_default();
    let mut ids = listed(
        ask,
        "AWSEvents.ListTargetsByRule",
        serde_json::json!({"Rule": rule}),
        "Targets",
        "Id",
    );
    ids.extend(
        request["Targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["Id"].as_str())
            .map(str::to_owned),
    );
    (ids.len() > quotas.targets_per_rule).then(|| {
        format!(
            "The requested resource exceeds the maximum number allowed: rule {rule} would have {} targets, over EventBridge's {} per rule.",
            ids.len(),
            quotas.targets_per_rule
        )
    })
}

/// Each `field` of the `array` items a JSON-protocol list call answers, every page
/// (`nextToken`/`NextToken`, as CloudWatch Logs and EventBridge name it: a page of
/// DescribeMetricFilters holds 50, fewer than the quota).
fn listed(
    ask: &mut dyn FnMut(&str, &str) -> String,
    target: &str,
    mut request: serde_json::Value,
    array: &str,
    field: &str,
) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    // Bounded: a stand-in that pages forever must not hang the proxy.
    for _ in 0..1000 {
        let page: serde_json::Value =
            serde_json::from_str(&ask(target, &request.to_string())).unwrap_or_default();
        found.extend(
            page[array]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i[field].as_str())
                .map(str::to_owned),
        );
        let Some((key, token)) = ["nextToken", "NextToken"]
            .into_iter()
            .find_map(|k| Some((k, page[k].as_str()?.to_owned())))
        else {
            break;
        };
        request[key] = token.into();
    }
    found
}

/// CloudWatch Logs' (and EventBridge's) answer to a refused call: 400
/// `LimitExceededException`.
pub fn logs_limit_exceeded(message: &str) -> Vec<u8> {
    let body =
        serde_json::json!({"__type": "LimitExceededException", "message": message}).to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A form value, percent-encoded.
pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The `<member>` values of an IAM list answer.
pub(crate) fn members(xml: &str) -> Vec<String> {
    xml.split("<member>")
        .skip(1)
        .filter_map(|s| s.split("</member>").next())
        .map(unescape)
        .collect()
}

/// The text between `from` and `to` (an XML element's).
pub(crate) fn between<'a>(text: &'a str, from: &str, to: &str) -> Option<&'a str> {
    let start = text.find(from)? + from.len();
    let end = text[start..].find(to)? + start;
    Some(&text[start..end])
}

/// XML's escapes undone.
pub(crate) fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// IAM's answer to a refused call.
pub fn limit_exceeded(message: &str) -> Vec<u8> {
    let body = format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type><Code>LimitExceeded</Code><Message>{message}</Message></Error><RequestId>quota-proxy</RequestId></ErrorResponse>"
    );
    format!(
        "HTTP/1.1 409 Conflict\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_group_holds_100_metric_filters_and_a_rule_5_targets() {
        let q = Quotas::default();
        let filters = |n: usize| {
            let listed: Vec<serde_json::Value> = (0..n)
                .map(|i| serde_json::json!({"filterName": format!("f{i}")}))
                .collect();
            serde_json::json!({"metricFilters": listed}).to_string()
        };
        let put = |name: &str| {
            serde_json::json!({"logGroupName": "/ecs/qbo", "filterName": name})
                .to_string()
                .into_bytes()
        };
        assert_eq!(
            logs_refusal(&q, "PutMetricFilter", &put("new"), &mut |_, _| filters(99)),
            None
        );
        // 100 in two pages of 50, as DescribeMetricFilters answers them.
        let mut paged = |_: &str, asked: &str| {
            let asked: serde_json::Value = serde_json::from_str(asked).unwrap();
            let from = if asked["nextToken"] == "p2" { 50 } else { 0 };
            let listed: Vec<serde_json::Value> = (from..from + 50)
                .map(|i| serde_json::json!({"filterName": format!("f{i}")}))
                .collect();
            let mut page = serde_json::json!({"metricFilters": listed});
            if from == 0 {
                page["nextToken"] = "p2".into();
            }
            page.to_string()
        };
        assert_eq!(
            logs_refusal(&q, "PutMetricFilter", &put("new"), &mut paged),
            Some("Resource limit exceeded.".to_owned())
        );
        assert_eq!(
            logs_refusal(&q, "PutMetricFilter", &put("new"), &mut |_, _| filters(100)),
            Some("Resource limit exceeded.".to_owned())
        );
        // Replacing one it has is no new filter.
        assert_eq!(
            logs_refusal(&q, "PutMetricFilter", &put("f3"), &mut |_, _| filters(100)),
            None
        );
        let targets = |ids: &[&str]| {
            let listed: Vec<serde_json::Value> =
                ids.iter().map(|i| serde_json::json!({"Id": i})).collect();
            serde_json::json!({"Targets": listed}).to_string()
        };
        let put = |ids: &[&str]| {
            let t: Vec<serde_json::Value> =
                ids.iter().map(|i| serde_json::json!({"Id": i})).collect();
            serde_json::json!({"Rule": "r", "Targets": t})
                .to_string()
                .into_bytes()
        };
        let four = ["a", "b", "c", "d"];
        assert_eq!(
            events_refusal(&q, "PutTargets", &put(&["e"]), &mut |_, _| targets(&four)),
            None
        );
        assert!(
            events_refusal(&q, "PutTargets", &put(&["e", "f"]), &mut |_, _| targets(
                &four
            ))
            .is_some_and(|m| m.contains("6 targets, over EventBridge's 5 per rule"))
        );
        assert_eq!(
            events_refusal(&q, "PutTargets", &put(&["a", "e"]), &mut |_, _| targets(
                &four
            )),
            None
        );
    }

    fn body(fields: &[(&str, &str)]) -> Vec<u8> {
        fields
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes()
    }

    #[test]
    fn a_managed_policy_over_6144_characters_is_refused_white_space_not_counted() {
        let q = Quotas::default();
        let mut none = |_: &str| String::new();
        let fits = format!("{{\"a\":\"{}\"}}", "x".repeat(6144 - 8));
        assert_eq!(policy_size(&fits), 6144);
        let spaced = fits.replace(':', " :\n ");
        assert!(
            refusal(
                &q,
                "CreatePolicy",
                &body(&[("PolicyDocument", &spaced)]),
                &mut none
            )
            .is_none()
        );
        let over = format!("{{\"a\":\"{}\"}}", "x".repeat(6144 - 7));
        assert_eq!(
            refusal(
                &q,
                "CreatePolicy",
                &body(&[("PolicyDocument", &over)]),
                &mut none
            )
            .as_deref(),
            Some("Cannot exceed quota for PolicySize: 6144")
        );
    }

    #[test]
    fn inline_policies_count_together_and_attachments_stop_at_ten() {
        let q = Quotas::default();
        let existing = "x".repeat(9000);
        let mut ask = |query: &str| {
            if query.starts_with("Action=ListRolePolicies") {
                "<PolicyNames><member>old</member><member>same</member></PolicyNames>".to_owned()
            } else if query.contains("PolicyName=old") {
                format!("<PolicyDocument>{existing}</PolicyDocument>")
            } else if query.contains("PolicyName=same") {
                format!("<PolicyDocument>{}</PolicyDocument>", "y".repeat(5000))
            } else if query.starts_with("Action=ListAttachedRolePolicies") {
                "<PolicyArn>arn:p".to_owned()
                    + &(0..10)
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join("</PolicyArn><PolicyArn>arn:p")
                    + "</PolicyArn>"
            } else {
                String::new()
            }
        };
        // 9,000 in another policy plus 1,241 here: over 10,240. The policy replaced by
        // the same name does not count.
        let put = |n: usize| {
            body(&[
                ("RoleName", "r"),
                ("PolicyName", "same"),
                ("PolicyDocument", &"z".repeat(n)),
            ])
        };
        assert!(refusal(&q, "PutRolePolicy", &put(1240), &mut ask).is_none());
        assert_eq!(
            refusal(&q, "PutRolePolicy", &put(1241), &mut ask).as_deref(),
            Some("Maximum policy size of 10240 bytes exceeded for role r")
        );
        let attach = |arn: &str| body(&[("RoleName", "r"), ("PolicyArn", arn)]);
        assert_eq!(
            refusal(&q, "AttachRolePolicy", &attach("arn:new"), &mut ask).as_deref(),
            Some("Cannot exceed quota for PoliciesPerRole: 10")
        );
        assert!(
            refusal(&q, "AttachRolePolicy", &attach("arn:p3"), &mut ask).is_none(),
            "already attached"
        );
        let raised = Quotas {
            managed_per_role: 20,
            ..q
        };
        assert!(refusal(&raised, "AttachRolePolicy", &attach("arn:new"), &mut ask).is_none());
    }
}
