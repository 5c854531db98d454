//! CloudWatch as it acts, where moto only stores: moto keeps metric filters and alarms
//! but applies and evaluates none. Here:
//!
//! - each log event ingested is matched against its log group's metric filters with
//!   CloudWatch Logs' filter pattern syntax (terms, `?term`, `-term`, quoted phrases, and
//!   JSON patterns `{ $.a = "x" && ($.b IS FALSE || $.n >= 3) }` with `=`, `!=`, `<`,
//!   `<=`, `>`, `>=`, `*` in strings, `IS TRUE|FALSE|NULL`, `NOT EXISTS`: "Filter pattern
//!   syntax for metric filters", CloudWatch Logs user guide). A JSON pattern matches only
//!   a JSON event, and a selector the event lacks matches nothing. A match publishes the
//!   filter's metric (its value a number or `$.field`, its dimensions `$.field`s) at the
//!   event's time; a batch with no match publishes the `defaultValue` if there is one;
//! - an alarm evaluates its `EvaluationPeriods` periods ending at the evaluation time,
//!   each reduced by its statistic (Sum, SampleCount, Average, Minimum, Maximum),
//!   compared with its threshold; a period without data counts as `treatMissingData`
//!   says (`breaching`, `notBreaching`; `ignore` keeps the state and `missing` goes to
//!   INSUFFICIENT_DATA when no period has data); ALARM when at least
//!   `DatapointsToAlarm` periods breach ("Evaluating an alarm", "Configuring how
//!   CloudWatch alarms treat missing data", CloudWatch user guide);
//! - a new alarm starts INSUFFICIENT_DATA (moto says OK, with the reason
//!   "Unchecked: Initial alarm creation", read here as INSUFFICIENT_DATA);
//! - a change of state is set in moto and, when actions are enabled, published to each
//!   SNS topic of the new state's actions as CloudWatch's alarm notification: a JSON
//!   message with `AlarmName`, `NewStateValue`, `NewStateReason`, `OldStateValue`,
//!   `Trigger`... and the subject `ALARM: "NAME" in REGION` ("Using Amazon SNS
//!   notifications", CloudWatch user guide).
//!
//! CloudWatch evaluates every minute; here an alarm evaluates when data for its metric
//! arrives through the stand-in, and when a test or the demo asks, at the time it names
//! (a test clock). Not emulated: the finer treatment of partly missing data with
//! `ignore`/`missing` (here the periods with data decide), percentile statistics,
//! metric math and anomaly alarms (none in the stack); moto matches a metric's
//! dimensions as a subset of the alarm's, not exactly (each metric of the stack has one
//! dimension set).

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Datapoint, Dimension, MetricAlarm, StateValue, Statistic,
};
use serde_json::{Value, json};

/// One metric: namespace, name and dimensions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricKey {
    pub namespace: String,
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
}

/// An alarm's change of state and what its notification reached.
#[derive(Debug, Clone)]
pub struct Notified {
    pub alarm: String,
    pub state: String,
    /// `(topic ARN, the message published, or why it was not)`.
    pub sent: Vec<(String, Result<String, String>)>,
}

/// CloudWatch's evaluation over moto's stored filters, metrics and alarms.
#[derive(Debug)]
pub struct Watch {
    moto: String,
    region: String,
    cloudwatch: aws_sdk_cloudwatch::Client,
    /// One evaluation at a time: two would both see the old state and notify twice.
    evaluating: tokio::sync::Mutex<()>,
}

impl Watch {
    pub fn new(moto: &str, region: &str) -> Self {
        let config = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatch::config::Region::new(region.to_owned()))
            .endpoint_url(moto)
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .build();
        Self {
            moto: moto.to_owned(),
            region: region.to_owned(),
            cloudwatch: aws_sdk_cloudwatch::Client::from_conf(config),
            evaluating: tokio::sync::Mutex::new(()),
        }
    }

    /// Applies `group`'s metric filters to `events` (`(milliseconds, message)`, as
    /// ingested) and publishes what they yield. Returns the metrics published to.
    pub async fn ingest(
        &self,
        group: &str,
        events: &[(i64, String)],
    ) -> Result<Vec<MetricKey>, String> {
        let filters = crate::fargate::aws_json(
            &self.moto,
            &self.region,
            "logs",
            "Logs_20140328.DescribeMetricFilters",
            &json!({"logGroupName": group}),
        )
        .await?;
        let mut published = Vec::new();
        for filter in filters["metricFilters"].as_array().into_iter().flatten() {
            // A pattern CloudWatch would have refused at PutMetricFilter matches nothing.
            let Ok(pattern) = Pattern::parse(filter["filterPattern"].as_str().unwrap_or("")) else {
                continue;
            };
            for t in filter["metricTransformations"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let mut points = Vec::new();
                for (at, message) in events {
                    let Some(event) = pattern.matched(message) else {
                        continue;
                    };
                    let value = metric_value(t["metricValue"].as_str().unwrap_or("1"), &event);
                    let dimensions = t["dimensions"]
                        .as_object()
                        .map(|d| {
                            d.iter()
                                .filter_map(|(k, v)| {
                                    let v = select(&event, v.as_str()?)?;
                                    Some((k.clone(), scalar(v)?))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Some(value) = value {
                        points.push((*at, value, dimensions));
                    }
                }
                if points.is_empty()
                    && let (Some(default), Some((at, _))) =
                        (t["defaultValue"].as_f64(), events.last())
                {
                    points.push((*at, default, BTreeMap::new()));
                }
                for (at, value, dimensions) in points {
                    let key = MetricKey {
                        namespace: t["metricNamespace"].as_str().unwrap_or_default().to_owned(),
                        name: t["metricName"].as_str().unwrap_or_default().to_owned(),
                        dimensions,
                    };
                    let at = jiff::Timestamp::from_millisecond(at).map_err(|e| e.to_string())?;
                    self.publish(&key, at, value).await?;
                    if !published.contains(&key) {
                        published.push(key);
                    }
                }
            }
        }
        Ok(published)
    }

    /// One data point of `key` at `at`.
    pub async fn publish(
        &self,
        key: &MetricKey,
        at: jiff::Timestamp,
        value: f64,
    ) -> Result<(), String> {
        let datum = aws_sdk_cloudwatch::types::MetricDatum::builder()
            .metric_name(&key.name)
            .set_dimensions(Some(dimensions(&key.dimensions)))
            .timestamp(aws_smithy_types::DateTime::from_millis(at.as_millisecond()))
            .value(value)
            .build();
        self.cloudwatch
            .put_metric_data()
            .namespace(&key.namespace)
            .metric_data(datum)
            .send()
            .await
            .map(drop)
            .map_err(|e| aws_smithy_types::error::display::DisplayErrorContext(e).to_string())
    }

    /// Evaluates every metric alarm (or those on `only`'s metrics) at `at`; each change
    /// of state is set and notified.
    pub async fn evaluate(
        &self,
        at: jiff::Timestamp,
        only: Option<&[MetricKey]>,
    ) -> Result<Vec<Notified>, String> {
        let _one = self.evaluating.lock().await;
        let mut alarms = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .cloudwatch
                .describe_alarms()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    aws_smithy_types::error::display::DisplayErrorContext(e).to_string()
                })?;
            alarms.extend(page.metric_alarms().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let mut changed = Vec::new();
        for alarm in alarms {
            let key = MetricKey {
                namespace: alarm.namespace().unwrap_or_default().to_owned(),
                name: alarm.metric_name().unwrap_or_default().to_owned(),
                dimensions: alarm
                    .dimensions()
                    .iter()
                    .map(|d| {
                        (
                            d.name().unwrap_or_default().to_owned(),
                            d.value().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
            };
            if only.is_some_and(|o| !o.contains(&key)) {
                continue;
            }
            if let Some(n) = self.evaluate_one(&alarm, &key, at).await? {
                changed.push(n);
            }
        }
        Ok(changed)
    }

    async fn evaluate_one(
        &self,
        alarm: &MetricAlarm,
        key: &MetricKey,
        at: jiff::Timestamp,
    ) -> Result<Option<Notified>, String> {
        let (Some(statistic), Some(op)) = (alarm.statistic(), alarm.comparison_operator()) else {
            return Ok(None);
        };
        let period = i64::from(alarm.period().unwrap_or(60).max(1));
        let n = alarm.evaluation_periods().unwrap_or(1).max(1);
        let m = alarm.datapoints_to_alarm().unwrap_or(n).max(1);
        let threshold = alarm.threshold().unwrap_or(0.0);
        // Whole seconds (moto drops the fraction): the last period ends at the first
        // second not before `at`, so data ingested within this second counts.
        let last = at.as_second() + i64::from(at.subsec_nanosecond() > 0);
        let mut values = Vec::new();
        for i in (0..n).rev() {
            let end = last - i64::from(i) * period;
            values.push(
                self.statistic(key, statistic, end - period, end, period)
                    .await?,
            );
        }
        let breaches = |v: f64| match op {
            ComparisonOperator::GreaterThanOrEqualToThreshold => v >= threshold,
            ComparisonOperator::GreaterThanThreshold => v > threshold,
            ComparisonOperator::LessThanThreshold => v < threshold,
            ComparisonOperator::LessThanOrEqualToThreshold => v <= threshold,
            _ => false,
        };
        let missing = alarm.treat_missing_data().unwrap_or("missing");
        let old = match (alarm.state_value(), alarm.state_reason()) {
            (_, Some("Unchecked: Initial alarm creation")) | (None, _) => "INSUFFICIENT_DATA",
            (Some(s), _) => s.as_str(),
        }
        .to_owned();
        let present = values.iter().filter(|v| v.is_some()).count();
        let breaching = values
            .iter()
            .filter(|v| match v {
                Some(v) => breaches(*v),
                None => missing == "breaching",
            })
            .count();
        let new = if present == 0 && missing == "missing" {
            "INSUFFICIENT_DATA".to_owned()
        } else if present == 0 && missing == "ignore" {
            old.clone()
        } else if breaching >= usize::try_from(m).unwrap_or(1) {
            "ALARM".to_owned()
        } else {
            "OK".to_owned()
        };
        if new == old {
            return Ok(None);
        }
        let shown: Vec<String> = values
            .iter()
            .map(|v| v.map_or_else(|| "missing".to_owned(), |v| format!("{v:.1}")))
            .collect();
        let reason = format!(
            "Threshold Crossed: {breaching} out of the last {n} datapoints [{}] {} the threshold ({threshold:.1}) (minimum {m} datapoint{} for {old} -> {new} transition).",
            shown.join(", "),
            if new == "ALARM" {
                "breached"
            } else {
                "did not breach"
            },
            if m == 1 { "" } else { "s" },
        );
        let name = alarm.alarm_name().unwrap_or_default().to_owned();
        self.cloudwatch
            .set_alarm_state()
            .alarm_name(&name)
            .state_value(StateValue::from(new.as_str()))
            .state_reason(&reason)
            .send()
            .await
            .map_err(|e| aws_smithy_types::error::display::DisplayErrorContext(e).to_string())?;
        let actions = match new.as_str() {
            "ALARM" => alarm.alarm_actions(),
            "OK" => alarm.ok_actions(),
            _ => alarm.insufficient_data_actions(),
        };
        let mut sent = Vec::new();
        if alarm.actions_enabled().unwrap_or(true) {
            let message = json!({
                "AlarmName": name,
                "AlarmDescription": alarm.alarm_description(),
                "AWSAccountId": alarm.alarm_arn().and_then(|a| a.split(':').nth(4)),
                "NewStateValue": new,
                "NewStateReason": reason,
                "StateChangeTime": at.to_string(),
                "Region": region_name(&self.region),
                "AlarmArn": alarm.alarm_arn(),
                "OldStateValue": old,
                "Trigger": {
                    "MetricName": key.name,
                    "Namespace": key.namespace,
                    "Statistic": statistic.as_str().to_uppercase(),
                    "Dimensions": key.dimensions.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                    "Period": period,
                    "EvaluationPeriods": n,
                    "DatapointsToAlarm": m,
                    "ComparisonOperator": op.as_str(),
                    "Threshold": threshold,
                    "TreatMissingData": missing,
                },
            })
            .to_string();
            let subject = format!("{new}: \"{name}\" in {}", region_name(&self.region));
            for topic in actions.iter().filter(|a| a.contains(":sns:")) {
                let outcome =
                    publish_sns(&self.moto, &self.region, topic, Some(&subject), &message)
                        .await
                        .map(|()| message.clone());
                sent.push((topic.clone(), outcome));
            }
        }
        Ok(Some(Notified {
            alarm: name,
            state: new,
            sent,
        }))
    }

    /// `statistic` of `key` over `[start, end)` (seconds), or `None` without data.
    async fn statistic(
        &self,
        key: &MetricKey,
        statistic: &Statistic,
        start: i64,
        end: i64,
        period: i64,
    ) -> Result<Option<f64>, String> {
        let answer = self
            .cloudwatch
            .get_metric_statistics()
            .namespace(&key.namespace)
            .metric_name(&key.name)
            .set_dimensions(Some(dimensions(&key.dimensions)))
            .start_time(aws_smithy_types::DateTime::from_secs(start))
            .end_time(aws_smithy_types::DateTime::from_secs(end))
            .period(i32::try_from(period).unwrap_or(i32::MAX))
            .statistics(Statistic::Sum)
            .statistics(Statistic::SampleCount)
            .statistics(Statistic::Minimum)
            .statistics(Statistic::Maximum)
            .send()
            .await
            .map_err(|e| aws_smithy_types::error::display::DisplayErrorContext(e).to_string())?;
        let points = answer.datapoints();
        if points.is_empty() {
            return Ok(None);
        }
        let sum: f64 = points.iter().filter_map(Datapoint::sum).sum();
        let count: f64 = points.iter().filter_map(Datapoint::sample_count).sum();
        let min = points
            .iter()
            .filter_map(Datapoint::minimum)
            .fold(f64::INFINITY, f64::min);
        let max = points
            .iter()
            .filter_map(Datapoint::maximum)
            .fold(f64::NEG_INFINITY, f64::max);
        Ok(Some(match statistic {
            Statistic::Sum => sum,
            Statistic::SampleCount => count,
            Statistic::Minimum => min,
            Statistic::Maximum => max,
            _ => sum / count.max(1.0),
        }))
    }
}

fn dimensions(map: &BTreeMap<String, String>) -> Vec<Dimension> {
    map.iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect()
}

/// The name CloudWatch's notifications give a region.
fn region_name(region: &str) -> &str {
    match region {
        "us-east-1" => "US East (N. Virginia)",
        "us-east-2" => "US East (Ohio)",
        "us-west-1" => "US West (N. California)",
        "us-west-2" => "US West (Oregon)",
        "eu-west-1" => "EU (Ireland)",
        "eu-central-1" => "EU (Frankfurt)",
        other => other,
    }
}

/// SNS Publish to moto (query protocol).
pub(crate) async fn publish_sns(
    moto: &str,
    region: &str,
    topic: &str,
    subject: Option<&str>,
    message: &str,
) -> Result<(), String> {
    let mut form = vec![
        ("Action", "Publish"),
        ("TopicArn", topic),
        ("Message", message),
    ];
    if let Some(s) = subject {
        form.push(("Subject", s));
    }
    let answer = reqwest::Client::new()
        .post(moto)
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/sns/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .form(&form)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("SNS Publish answered {}", answer.status()))
    }
}

/// A metric filter's value for an event: a number, or `$.field` read from it.
fn metric_value(spec: &str, event: &Value) -> Option<f64> {
    if spec.starts_with('$') {
        let v = select(event, spec)?;
        v.as_f64().or_else(|| v.as_str()?.parse().ok())
    } else {
        spec.parse().ok()
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The value at a selector such as `$.a.b[0].c`, if the event has it.
fn select<'a>(event: &'a Value, selector: &str) -> Option<&'a Value> {
    let mut rest = selector.strip_prefix('$')?;
    let mut at = event;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            at = at.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            at = at.get(r[..end].parse::<usize>().ok()?)?;
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(at)
}

/// A parsed filter pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// The empty pattern: every event.
    All,
    /// Terms: all of `all`, any of `any` (when there are some), none of `none`.
    Terms {
        all: Vec<String>,
        any: Vec<String>,
        none: Vec<String>,
    },
    Json(Expr),
}

/// A JSON pattern's expression.
#[derive(Debug, Clone)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(String, String, Literal),
    Is(String, Value),
    NotExists(String),
}

#[derive(Debug, Clone)]
pub enum Literal {
    Number(f64),
    Text(String),
}

impl Pattern {
    /// Parses a filter pattern; what CloudWatch would refuse (or this stand-in does
    /// not read: space-delimited `[...]` patterns, regular expressions) is an error.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let p = pattern.trim();
        if p.is_empty() {
            return Ok(Self::All);
        }
        if let Some(inner) = p.strip_prefix('{') {
            let inner = inner
                .strip_suffix('}')
                .ok_or_else(|| format!("Invalid metric filter pattern: {pattern}"))?;
            let tokens = tokens(inner)?;
            let mut at = 0;
            let expr = or(&tokens, &mut at)?;
            if at != tokens.len() {
                return Err(format!("Invalid metric filter pattern: {pattern}"));
            }
            return Ok(Self::Json(expr));
        }
        if p.starts_with('[') || p.contains('%') {
            return Err(format!("not read by this stand-in: {pattern}"));
        }
        let (mut all, mut any, mut none) = (Vec::new(), Vec::new(), Vec::new());
        for t in terms(p)? {
            if let Some(t) = t.strip_prefix('?') {
                any.push(unquote(t));
            } else if let Some(t) = t.strip_prefix('-') {
                none.push(unquote(t));
            } else {
                all.push(unquote(&t));
            }
        }
        Ok(Self::Terms { all, any, none })
    }

    /// Whether `message` matches: `Some` with the event (its JSON, or `Null` for a
    /// text event), for the metric's value and dimensions.
    pub fn matched(&self, message: &str) -> Option<Value> {
        match self {
            Self::All => Some(serde_json::from_str(message).unwrap_or(Value::Null)),
            Self::Terms { all, any, none } => {
                let ok = all.iter().all(|t| message.contains(t.as_str()))
                    && (any.is_empty() || any.iter().any(|t| message.contains(t.as_str())))
                    && !none.iter().any(|t| message.contains(t.as_str()));
                ok.then(|| serde_json::from_str(message).unwrap_or(Value::Null))
            }
            Self::Json(expr) => {
                let event: Value = serde_json::from_str(message).ok()?;
                event.is_object().then_some(())?;
                expr.holds(&event).then_some(event)
            }
        }
    }
}

impl Expr {
    fn holds(&self, event: &Value) -> bool {
        match self {
            Self::And(a, b) => a.holds(event) && b.holds(event),
            Self::Or(a, b) => a.holds(event) || b.holds(event),
            Self::NotExists(s) => select(event, s).is_none(),
            Self::Is(s, want) => select(event, s) == Some(want),
            Self::Compare(s, op, literal) => {
                let Some(got) = select(event, s) else {
                    return false;
                };
                match literal {
                    Literal::Number(want) => {
                        let Some(got) = got.as_f64() else {
                            return false;
                        };
                        match op.as_str() {
                            "=" => (got - want).abs() < f64::EPSILON,
                            "!=" => (got - want).abs() >= f64::EPSILON,
                            "<" => got < *want,
                            "<=" => got <= *want,
                            ">" => got > *want,
                            _ => got >= *want,
                        }
                    }
                    Literal::Text(want) => {
                        let Some(got) = scalar(got) else {
                            return false;
                        };
                        let equal = crate::wildcard(want, &got, '*');
                        if op == "!=" { !equal } else { equal }
                    }
                }
            }
        }
    }
}

fn unquote(t: &str) -> String {
    t.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t)
        .replace("\\\"", "\"")
}

/// Whitespace-separated terms, a quoted phrase as one.
fn terms(p: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = p.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut term = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c == '"' && !term.ends_with('\\') {
                quoted = !quoted;
            } else if c.is_whitespace() && !quoted {
                break;
            }
            term.push(c);
            chars.next();
        }
        if quoted {
            return Err(format!(
                "Invalid metric filter pattern (unclosed quote): {p}"
            ));
        }
        out.push(term);
    }
    Ok(out)
}

/// A JSON pattern's tokens: parentheses, `&&`, `||`, operators, quoted strings, words.
fn tokens(inner: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = inner.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if c.is_whitespace() {
            i += 1;
        } else if ["&&", "||", "!=", "<=", ">="].contains(&two.as_str()) {
            out.push(two);
            i += 2;
        } else if "()=<>".contains(c) {
            out.push(c.to_string());
            i += 1;
        } else if c == '"' {
            let mut s = String::from('"');
            i += 1;
            loop {
                let Some(&c) = chars.get(i) else {
                    return Err(format!(
                        "Invalid metric filter pattern (unclosed quote): {inner}"
                    ));
                };
                i += 1;
                if c == '\\' && chars.get(i) == Some(&'"') {
                    s.push('"');
                    i += 1;
                } else if c == '"' {
                    break;
                } else {
                    s.push(c);
                }
            }
            out.push(s);
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"()=<>!&|".contains(chars[i]) {
                i += 1;
            }
            if i == start {
                return Err(format!("Invalid metric filter pattern near '{c}': {inner}"));
            }
            out.push(chars[start..i].iter().collect());
        }
    }
    Ok(out)
}

fn or(t: &[String], at: &mut usize) -> Result<Expr, String> {
    let mut left = and(t, at)?;
    while t.get(*at).map(String::as_str) == Some("||") {
        *at += 1;
        left = Expr::Or(Box::new(left), Box::new(and(t, at)?));
    }
    Ok(left)
}

fn and(t: &[String], at: &mut usize) -> Result<Expr, String> {
    let mut left = atom(t, at)?;
    while t.get(*at).map(String::as_str) == Some("&&") {
        *at += 1;
        left = Expr::And(Box::new(left), Box::new(atom(t, at)?));
    }
    Ok(left)
}

fn atom(t: &[String], at: &mut usize) -> Result<Expr, String> {
    let bad = |what: &str| format!("Invalid metric filter pattern: {what}");
    let first = t.get(*at).ok_or_else(|| bad("it ends early"))?.clone();
    *at += 1;
    if first == "(" {
        let e = or(t, at)?;
        if t.get(*at).map(String::as_str) != Some(")") {
            return Err(bad("a parenthesis is not closed"));
        }
        *at += 1;
        return Ok(e);
    }
    if !first.starts_with('$') {
        return Err(bad(&format!("'{first}' is not a selector such as $.field")));
    }
    let word = |i: usize| t.get(i).map(|s| s.to_ascii_uppercase());
    match word(*at).as_deref() {
        Some("IS") => {
            let v = match word(*at + 1).as_deref() {
                Some("TRUE") => Value::Bool(true),
                Some("FALSE") => Value::Bool(false),
                Some("NULL") => Value::Null,
                _ => return Err(bad("IS takes TRUE, FALSE or NULL")),
            };
            *at += 2;
            Ok(Expr::Is(first, v))
        }
        Some("NOT") if word(*at + 1).as_deref() == Some("EXISTS") => {
            *at += 2;
            Ok(Expr::NotExists(first))
        }
        Some(op @ ("=" | "!=" | "<" | "<=" | ">" | ">=")) => {
            let op = op.to_owned();
            let raw = t
                .get(*at + 1)
                .ok_or_else(|| bad("a comparison lacks its value"))?;
            *at += 2;
            let literal = match raw.strip_prefix('"') {
                Some(text) => Literal::Text(text.to_owned()),
                None => match raw.parse::<f64>() {
                    Ok(n) => Literal::Number(n),
                    Err(_) => Literal::Text(raw.clone()),
                },
            };
            if matches!(literal, Literal::Text(_)) && !["=", "!="].contains(&op.as_str()) {
                return Err(bad("only = and != compare strings"));
            }
            Ok(Expr::Compare(first, op, literal))
        }
        _ => Err(bad(&format!("{first} is not followed by a comparison"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, message: &str) -> bool {
        Pattern::parse(pattern).unwrap().matched(message).is_some()
    }

    #[test]
    fn the_stacks_run_finished_filters_match_as_cloudwatch_logs_documents() {
        let failed = r#"{ $.event = "run_finished" && $.success IS FALSE && $.dry_run IS FALSE }"#;
        assert!(m(
            failed,
            r#"{"event":"run_finished","success":false,"dry_run":false}"#
        ));
        assert!(!m(
            failed,
            r#"{"event":"run_finished","success":false,"dry_run":true}"#
        ));
        assert!(!m(
            failed,
            r#"{"event":"run_finished","success":true,"dry_run":false}"#
        ));
        // A selector the event lacks matches nothing; a text line never matches JSON.
        assert!(!m(failed, r#"{"event":"run_finished","success":false}"#));
        assert!(!m(failed, "run_finished success false"));
        // `IS FALSE` is the boolean, not the string.
        assert!(!m(
            failed,
            r#"{"event":"run_finished","success":"false","dry_run":false}"#
        ));
    }

    #[test]
    fn json_patterns_compare_numbers_strings_wildcards_and_group() {
        let e = r#"{"a":"abc","n":5,"x":{"y":[1,{"z":null}]}}"#;
        assert!(m(r"{ $.n >= 5 && $.n < 6 }", e));
        assert!(!m(r"{ $.n > 5 }", e));
        assert!(m(r#"{ $.a = "ab*" }"#, e));
        assert!(m(r#"{ $.a != "x*" }"#, e));
        assert!(m(r"{ ($.n = 1 || $.a = abc) && $.missing NOT EXISTS }", e));
        assert!(m(r"{ $.x.y[1].z IS NULL }", e));
        assert!(m(r"{ $.x.y[0] = 1 }", e));
        assert!(!m(r"{ $.a NOT EXISTS }", e));
        // && binds tighter than ||.
        assert!(m(r#"{ $.n = 1 && $.a = "nope" || $.n = 5 }"#, e));
        for bad in [
            r"{ $.a = }",
            r#"{ a = "b" }"#,
            r#"{ $.a = "b" "#,
            r#"{ $.a < "b" }"#,
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn term_patterns_need_every_term_any_question_term_and_no_minus_term() {
        assert!(m("", "anything"));
        assert!(m("ERROR Main", "ERROR in Main thread"));
        assert!(!m("ERROR Main", "ERROR in worker"));
        assert!(m(r#""in Main""#, "ERROR in Main thread"));
        assert!(m("?WARN ?ERROR", "ERROR here"));
        assert!(!m("ERROR -Main", "ERROR in Main"));
        assert!(!m("error", "ERROR"), "terms are case-sensitive");
    }

    #[test]
    fn a_metric_value_is_a_number_or_a_field_of_the_event() {
        let e: Value = serde_json::from_str(r#"{"ms": 250, "s": "3"}"#).unwrap();
        assert_eq!(metric_value("1", &e), Some(1.0));
        assert_eq!(metric_value("$.ms", &e), Some(250.0));
        assert_eq!(metric_value("$.s", &e), Some(3.0));
        assert_eq!(metric_value("$.none", &e), None);
    }
}
