//! Writing results to stdout: JSON for scripts, text for people.

use std::fmt::Write as _;
use std::io::Write as _;

use infra::Stack;
use infra::resources::{Kind, Spec};
use serde::Serialize;
use serde_json::Value;

use crate::aws::Aws;
use crate::engine::{Action, Change, Plan, Progress, Summary};
use crate::error::Result;

pub fn json(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

pub fn text(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The stack as a person reads it: a header, the placeholders, then each resource in
/// dependency order with its properties.
pub fn stack_text(stack: &Stack) -> String {
    let waves = stack.waves();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} · env {} · {} · account {}",
        stack.app, stack.environment, stack.region, stack.account
    );
    let _ = writeln!(
        s,
        "{} resources in {} dependency waves",
        stack.resources.len(),
        waves.len()
    );
    if !stack.placeholders.is_empty() {
        let _ = writeln!(s, "\nPlaceholders, resolved at deploy time:");
        let width = stack
            .placeholders
            .iter()
            .map(|p| p.placeholder.len())
            .max()
            .unwrap_or(0);
        for p in &stack.placeholders {
            let _ = writeln!(s, "  {:width$}  {}", p.placeholder, p.resolved_by);
        }
    }
    for (i, wave) in waves.iter().enumerate() {
        let _ = writeln!(s, "\nWave {}:", i + 1);
        for r in wave {
            let _ = writeln!(s, "\n  {} {}", r.kind, r.name);
            if let Some(arn) = &r.arn {
                let _ = writeln!(s, "    arn: {arn}");
            }
            if !r.depends_on.is_empty() {
                let deps: Vec<String> = r.depends_on.iter().map(ToString::to_string).collect();
                let _ = writeln!(s, "    after: {}", deps.join(", "));
            }
            if !r.tags.is_empty() {
                let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(s, "    tags: {}", tags.join(" "));
            }
            let props = serde_json::to_string_pretty(&r.properties).unwrap_or_default();
            let _ = writeln!(s, "    properties:");
            for line in props.lines() {
                let _ = writeln!(s, "      {line}");
            }
        }
    }
    s
}

/// One IAM or security-group change, for the table `diff` and `up` show apart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccessChange {
    pub resource: String,
    pub action: Action,
    pub what: String,
    /// Grants something the account does not grant today.
    pub widens: bool,
}

/// IAM roles, security groups and the topic policy: what changes, and whether it
/// grants more than today.
pub fn access_changes(plan: &Plan) -> Vec<AccessChange> {
    let mut out = Vec::new();
    for step in plan.changes() {
        let kind = step.id.kind;
        if !matches!(kind, Kind::IamRole | Kind::SecurityGroup | Kind::SnsTopic) {
            continue;
        }
        let access_paths: Vec<&Change> = step
            .changes
            .iter()
            .filter(|c| !c.path.starts_with("tags") && !c.path.ends_with(".description"))
            .filter(|c| c.path != "properties.description" && c.path != "properties.display_name")
            .collect();
        let (what, widens) = match step.action {
            Action::Create | Action::Replace => (describe_new(&step.resource.properties), true),
            Action::Delete => ("removed".to_owned(), false),
            _ if access_paths.is_empty() => continue,
            _ => (
                access_paths
                    .iter()
                    .map(|c| c.path.trim_start_matches("properties."))
                    .collect::<Vec<_>>()
                    .join(", "),
                access_paths.iter().any(|c| grants_more(c)),
            ),
        };
        out.push(AccessChange {
            resource: step.id.to_string(),
            action: step.action,
            what,
            widens,
        });
    }
    out
}

fn describe_new(spec: &Spec) -> String {
    match spec {
        Spec::IamRole(r) => {
            let trusted: Vec<String> = r
                .trust_policy
                .statement
                .iter()
                .filter_map(|s| s.principal.as_ref())
                .flat_map(|p| p.values().flat_map(|v| v.0.clone()))
                .collect();
            let statements: usize = r.inline_policies.values().map(|d| d.statement.len()).sum();
            format!(
                "trusted by {}; {statements} policy statements",
                trusted.join(", ")
            )
        }
        Spec::SecurityGroup(g) => format!(
            "{} ingress, {} egress rules ({})",
            g.ingress.len(),
            g.egress.len(),
            g.egress
                .iter()
                .map(|r| format!("{} {}-{} to {}", r.protocol, r.from_port, r.to_port, r.cidr))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Spec::SnsTopic(t) => format!("topic policy with {} statements", t.policy.statement.len()),
        _ => String::new(),
    }
}

/// Whether the desired value holds something the live one does not: a statement, an
/// action, a resource, a rule.
fn grants_more(change: &Change) -> bool {
    fn leaves(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
            Value::Object(o) => o.values().for_each(|x| leaves(x, out)),
            other => out.push(other.to_string()),
        }
    }
    let (mut have, mut want) = (Vec::new(), Vec::new());
    if let Some(v) = &change.live {
        leaves(v, &mut have);
    }
    if let Some(v) = &change.desired {
        leaves(v, &mut want);
    }
    want.iter().any(|w| !have.contains(w))
}

/// The plan as a person reads it.
pub fn plan_text(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Plan for {} (account {}, {}):\n",
        plan.environment, plan.account, plan.region
    );
    for step in &plan.steps {
        if step.action == Action::NoChange {
            continue;
        }
        let note = match (step.action, &step.note) {
            (_, Some(note)) => format!(": {note}"),
            (Action::Replace, None) if step.id.kind == Kind::TaskDefinition => {
                " (new revision)".to_owned()
            }
            _ => String::new(),
        };
        let _ = writeln!(s, "  {:<3} {}{note}", step.action.symbol(), step.id);
        if step.action == Action::Update || step.action == Action::Replace {
            for change in &step.changes {
                let _ = write!(s, "{}", change_text(change));
            }
        }
    }
    let access = access_changes(plan);
    if !access.is_empty() {
        let _ = writeln!(s, "\nIAM and network access changes:");
        let width = access.iter().map(|a| a.resource.len()).max().unwrap_or(0);
        for a in &access {
            let flag = if a.widens { "widens" } else { "narrows" };
            let _ = writeln!(
                s,
                "  {:<3} {:width$}  {flag:<7}  {}",
                a.action.symbol(),
                a.resource,
                a.what
            );
        }
    }
    if plan.has_changes() {
        let _ = writeln!(
            s,
            "\nPlan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged.",
            plan.count(Action::Create),
            plan.count(Action::Update),
            plan.count(Action::Replace),
            plan.count(Action::Delete),
            plan.count(Action::NoChange),
        );
    } else {
        let _ = writeln!(
            s,
            "No changes: all {} resources match the environment file.",
            plan.count(Action::NoChange)
        );
    }
    if plan.count(Action::Unowned) > 0 {
        let _ = writeln!(
            s,
            "{} resources left alone: they lack this environment's tags.",
            plan.count(Action::Unowned)
        );
    }
    s
}

/// `path: live -> desired` for short values; a line diff for documents.
fn change_text(change: &Change) -> String {
    let path = change.path.trim_start_matches("properties.");
    let show = |v: &Option<Value>| {
        v.as_ref()
            .map_or_else(|| "(none)".to_owned(), ToString::to_string)
    };
    let (live, desired) = (show(&change.live), show(&change.desired));
    let complex = |v: &Option<Value>| matches!(v, Some(Value::Array(_) | Value::Object(_)));
    if !(complex(&change.live) || complex(&change.desired)) && live.len() + desired.len() < 120 {
        return format!("        {path}: {live} -> {desired}\n");
    }
    let pretty = |v: &Option<Value>| {
        v.as_ref()
            .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
            .unwrap_or_default()
    };
    let (a, b) = (pretty(&change.live), pretty(&change.desired));
    let mut s = format!("        {path}:\n");
    for op in similar::TextDiff::from_lines(&a, &b).iter_all_changes() {
        let sign = match op.tag() {
            similar::ChangeTag::Delete => "-",
            similar::ChangeTag::Insert => "+",
            similar::ChangeTag::Equal => " ",
        };
        let _ = write!(s, "          {sign} {}", op.value());
        if op.missing_newline() {
            s.push('\n');
        }
    }
    s
}

pub fn progress_line(p: &Progress) -> String {
    let verb = match p.action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Replace => "replaced",
        Action::Delete => "deleted",
        Action::NoChange | Action::Unowned => "unchanged",
    };
    match &p.outcome {
        Ok(None) => format!(
            "  {:<3} {} {verb} ({:.1}s)",
            p.action.symbol(),
            p.id,
            p.elapsed.as_secs_f64()
        ),
        Ok(Some(kept)) => format!("  =   {} kept: {kept}", p.id),
        Err(e) => format!("  x   {} failed: {e}", p.id),
    }
}

pub fn summary_line(summary: &Summary, aws: &Aws) -> String {
    format!(
        "\nDone in {:.1}s: {} created, {} updated, {} replaced, {} deleted{}. AWS calls: {} reads, {} writes.\n",
        summary.seconds,
        summary.created,
        summary.updated,
        summary.replaced,
        summary.deleted,
        if summary.kept > 0 {
            format!(", {} kept", summary.kept)
        } else {
            String::new()
        },
        aws.calls.reads(),
        aws.calls.writes(),
    )
}

/// The AWS calls made: reads, writes, and the longest chain of them that followed one
/// another (`chain` round trips, `chain_calls` in order: the run's floor at a given
/// latency).
pub fn calls(aws: &Aws) -> Value {
    serde_json::json!({
        "reads": aws.calls.reads(),
        "writes": aws.calls.writes(),
        "chain": aws.calls.chain(),
        "chain_calls": aws.calls.chain_calls(),
    })
}
