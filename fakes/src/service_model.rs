//! AWS's request constraints, read from the service models botocore ships as data
//! (`botocore/data/SERVICE/VERSION/service-2.json.gz`, the models the AWS SDKs are
//! generated from): a request the real service would refuse for a member's length, its
//! pattern, its enum, its range, a list's or map's size, or a missing required member, is
//! refused here as that service refuses it, before moto (which checks few of them) sees
//! it.
//!
//! - Constraints are the Smithy traits the models carry (`min`, `max`, `pattern`, `enum`,
//!   `required`); a string's length counts characters, a list's or map's its entries.
//! - A pattern must match the whole value, as the services apply it: IAM refuses a role
//!   name with one character outside `[\w+=,.@-]+` (kubecost/docs pull request 36, "The
//!   specified value for roleName is invalid"; CloudWatch Logs likewise a group name with a
//!   space), though the Smithy IDL leaves a `pattern` unanchored. A pattern with a Java
//!   class (`\p{Print}`) gets the class's meaning in Java's default, ASCII mode.
//! - The refusal: JSON services answer 400 `ValidationException` ("1 validation error
//!   detected: Value 'x' at 'family' failed to satisfy constraint: Member must have
//!   length less than or equal to 255"), IAM, STS and CloudWatch `ValidationError`, SNS
//!   `InvalidParameter`, EC2 `InvalidParameterValue`, each in its protocol's shape. A
//!   sensitive member's value is never echoed. (The wording is the one AWS's validation
//!   messages carry; which code ECS uses for a model constraint is UNVERIFIED: it is given
//!   `ValidationException` like the other JSON services.)
//!
//! The models are found beside the moto this workspace runs (`.venv/`, or the
//! `MOTO_SERVER` override's environment), or in `FAKES_BOTOCORE_DATA`; the Makefile pins
//! their botocore version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

/// The models of the services the proxy sees, each read when first needed.
#[derive(Debug)]
pub struct Models {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, Option<Arc<Model>>>>,
}

#[derive(Debug)]
struct Model {
    protocol: String,
    operations: Map<String, Value>,
    shapes: Map<String, Value>,
    patterns: Mutex<HashMap<String, Option<Arc<fancy_regex::Regex>>>>,
}

/// One refusal: the error code and message the service answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: &'static str,
    pub message: String,
}

/// A request as the proxy received it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The signing name (`ecs`, `monitoring`...).
    pub service: &'a str,
    /// The operation, where the protocol names it (JSON's target, the query `Action`).
    pub operation: Option<&'a str>,
    pub method: &'a str,
    /// The path with its query string.
    pub path: &'a str,
    pub body: &'a [u8],
}

impl Models {
    /// The models beside this workspace's moto, or `None` when there are none.
    pub fn shared() -> Option<&'static Self> {
        static MODELS: OnceLock<Option<Models>> = OnceLock::new();
        MODELS
            .get_or_init(|| {
                let found = data_dir().map(|dir| Self::at(&dir));
                if found.is_none() {
                    // Kinder than AWS without a word is what a stand-in must not be.
                    eprintln!(
                        "warning: no botocore service models found: the AWS proxy does not check requests against the services' published constraints; run `make tools` (moto's .venv/) or set FAKES_BOTOCORE_DATA to a botocore `data` directory"
                    );
                }
                found
            })
            .as_ref()
    }

    /// The models under `dir` (a botocore `data` directory).
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The constraints `request` breaks, as its service refuses them; `None` when it
    /// keeps them all (or its service or operation is not modelled here).
    pub fn check(&self, request: &Request<'_>) -> Option<Violation> {
        let name = match request.service {
            "monitoring" => "cloudwatch",
            other => other,
        };
        let model = self.model(name)?;
        let (operation, input) = model.input(request)?;
        let shape = model.operations.get(&operation)?["input"]["shape"].as_str()?;
        let mut errors = Vec::new();
        model.walk(shape, Some(&input), "", false, &mut errors);
        if errors.is_empty() {
            return None;
        }
        let count = errors.len();
        let message = format!(
            "{count} validation error{} detected: {}",
            if count == 1 { "" } else { "s" },
            errors.join("; ")
        );
        Some(Violation {
            code: match name {
                "iam" | "sts" | "cloudwatch" => "ValidationError",
                "sns" => "InvalidParameter",
                "ec2" => "InvalidParameterValue",
                _ => "ValidationException",
            },
            message,
        })
    }

    fn model(&self, service: &str) -> Option<Arc<Model>> {
        let mut loaded = self.loaded.lock().expect("models lock");
        loaded
            .entry(service.to_owned())
            .or_insert_with(|| Model::read(&self.dir.join(service)).map(Arc::new))
            .clone()
    }
}

/// The refusal as an HTTP response, in `service`'s protocol.
pub fn refusal(service: &str, violation: &Violation) -> Vec<u8> {
    let escaped = violation
        .message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let (content_type, body) = match service {
        "iam" | "sts" | "monitoring" | "sns" => (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{}</Code><Message>{escaped}</Message></Error><RequestId>model-check</RequestId></ErrorResponse>",
                violation.code
            ),
        ),
        "ec2" => (
            "text/xml",
            format!(
                "<Response><Errors><Error><Code>{}</Code><Message>{escaped}</Message></Error></Errors><RequestID>model-check</RequestID></Response>",
                violation.code
            ),
        ),
        "scheduler" => (
            "application/json",
            serde_json::json!({"Message": violation.message}).to_string(),
        ),
        _ => (
            "application/x-amz-json-1.1",
            serde_json::json!({"__type": violation.code, "message": violation.message}).to_string(),
        ),
    };
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: {content_type}\r\nx-amzn-ErrorType: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        violation.code,
        body.len()
    )
    .into_bytes()
}

/// `FAKES_BOTOCORE_DATA`, else the botocore beside the moto the emulators run.
fn data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FAKES_BOTOCORE_DATA") {
        return Some(PathBuf::from(dir));
    }
    let venv = std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .and_then(|bin| Some(bin.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| crate::emulators::workspace_root().join(".venv"));
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/botocore/data"))
        .find(|d| d.is_dir())
}

impl Model {
    /// The newest model version under `dir` (`dir/VERSION/service-2.json.gz`).
    fn read(dir: &Path) -> Option<Self> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("service-2.json.gz").is_file())
            .collect();
        versions.sort();
        let file = std::fs::File::open(versions.last()?.join("service-2.json.gz")).ok()?;
        let json: Value = serde_json::from_reader(flate2::read::GzDecoder::new(file)).ok()?;
        let Value::Object(mut json) = json else {
            return None;
        };
        let protocol = json["metadata"]["protocol"].as_str()?.to_owned();
        let Some(Value::Object(operations)) = json.remove("operations") else {
            return None;
        };
        let Some(Value::Object(shapes)) = json.remove("shapes") else {
            return None;
        };
        Some(Self {
            protocol,
            operations,
            shapes,
            patterns: Mutex::new(HashMap::new()),
        })
    }

    /// The operation and its input as a JSON tree of member names, whatever the protocol
    /// carried it in; `None` for a body this protocol cannot read (CBOR, a blob).
    fn input(&self, request: &Request<'_>) -> Option<(String, Value)> {
        // By what the request carries: a model may offer several protocols (CloudWatch
        // answers CBOR, JSON and query; the SDK this workspace pins speaks query).
        let form = request.body.starts_with(b"Action=")
            || request.body.windows(8).any(|w| w == b"&Action=");
        let protocol = match (request.operation, form, self.protocol.as_str()) {
            (_, true, "ec2") => "ec2",
            (_, true, _) => "query",
            (Some(_), false, "json" | "smithy-rpc-v2-cbor")
                if !request.path.contains("/operation/") =>
            {
                "json"
            }
            (_, false, other) => other,
        };
        match protocol {
            "json" => {
                let body = if request.body.is_empty() {
                    Value::Object(Map::new())
                } else {
                    serde_json::from_slice(request.body).ok()?
                };
                let op = request.operation?.to_owned();
                let shape = self.operations.get(&op)?["input"]["shape"].as_str()?;
                Some((op.clone(), self.renamed(shape, body)))
            }
            "query" | "ec2" => {
                let form: HashMap<String, String> =
                    crate::quotas::form(request.body).into_iter().collect();
                let op = form.get("Action")?.clone();
                let shape = self.operations.get(&op)?["input"]["shape"].as_str()?;
                let input = self
                    .form_value(shape, "", &form)
                    .unwrap_or_else(|| Value::Object(Map::new()));
                Some((op, input))
            }
            "rest-json" => self.rest_input(request),
            _ => None,
        }
    }

    /// A JSON body keyed by each member's wire name (`locationName`), rekeyed by member
    /// name.
    fn renamed(&self, shape: &str, value: Value) -> Value {
        let s = &self.shapes[shape];
        match (s["type"].as_str(), value) {
            (Some("structure"), Value::Object(mut fields)) => {
                let mut out = Map::new();
                for (member, def) in s["members"].as_object().into_iter().flatten() {
                    let wire = def["locationName"].as_str().unwrap_or(member);
                    if let Some(v) = fields.remove(wire) {
                        out.insert(
                            member.clone(),
                            self.renamed(def["shape"].as_str().unwrap_or_default(), v),
                        );
                    }
                }
                Value::Object(out)
            }
            (Some("list"), Value::Array(items)) => {
                let member = s["member"]["shape"].as_str().unwrap_or_default();
                Value::Array(items.into_iter().map(|v| self.renamed(member, v)).collect())
            }
            (_, other) => other,
        }
    }

    /// A REST-JSON request: the operation by method and URI template, its input from the
    /// path's labels, the query string and the body.
    fn rest_input(&self, request: &Request<'_>) -> Option<(String, Value)> {
        let (path, query) = request.path.split_once('?').unwrap_or((request.path, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        for (op, def) in &self.operations {
            if def["http"]["method"].as_str() != Some(request.method) {
                continue;
            }
            let template = def["http"]["requestUri"].as_str().unwrap_or_default();
            let template = template.split('?').next().unwrap_or_default();
            let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut labels = HashMap::new();
            let fits = parts.iter().zip(&segments).all(|(t, s)| {
                if let Some(label) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    let value = percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned();
                    labels.insert(label.trim_end_matches('+').to_owned(), value);
                    true
                } else {
                    t == s
                }
            });
            if !fits {
                continue;
            }
            let shape_name = def["input"]["shape"].as_str()?;
            let shape = &self.shapes[shape_name];
            let mut body: Map<String, Value> = if request.body.is_empty() {
                Map::new()
            } else {
                serde_json::from_slice(request.body).ok()?
            };
            let mut input = Map::new();
            let queries: HashMap<String, String> =
                crate::quotas::form(query.as_bytes()).into_iter().collect();
            for (member, m) in shape["members"].as_object().into_iter().flatten() {
                let wire = m["locationName"].as_str().unwrap_or(member);
                let value = match m["location"].as_str() {
                    Some("uri") => labels.get(wire).cloned().map(Value::String),
                    Some("querystring") => queries
                        .get(wire)
                        .cloned()
                        .map(|v| scalar(&self.shapes[m["shape"].as_str().unwrap_or_default()], v)),
                    Some(_) => None,
                    None => body.remove(wire),
                };
                if let Some(v) = value {
                    input.insert(member.clone(), v);
                }
            }
            return Some((op.clone(), Value::Object(input)));
        }
        None
    }

    /// A query-protocol (or EC2) form's members under `prefix`, as `shape` serializes them
    /// (botocore's `QuerySerializer` and `EC2Serializer`).
    fn form_value(
        &self,
        shape: &str,
        prefix: &str,
        form: &HashMap<String, String>,
    ) -> Option<Value> {
        let s = &self.shapes[shape];
        let join = |name: &str| {
            if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}.{name}")
            }
        };
        let present = |key: &str| {
            form.keys()
                .any(|k| k == key || k.starts_with(&format!("{key}.")))
        };
        match s["type"].as_str()? {
            "structure" => {
                let mut out = Map::new();
                for (member, m) in s["members"].as_object().into_iter().flatten() {
                    let name = self.wire_name(member, m);
                    if let Some(v) = self.form_value(m["shape"].as_str()?, &join(&name), form) {
                        out.insert(member.clone(), v);
                    }
                }
                (prefix.is_empty() || !out.is_empty()).then_some(Value::Object(out))
            }
            "list" => {
                if form.get(prefix).is_some_and(String::is_empty) {
                    return Some(Value::Array(Vec::new()));
                }
                let flattened = self.protocol == "ec2" || s["flattened"].as_bool() == Some(true);
                let items = if flattened {
                    prefix.to_owned()
                } else {
                    format!(
                        "{prefix}.{}",
                        s["member"]["locationName"].as_str().unwrap_or("member")
                    )
                };
                let member = s["member"]["shape"].as_str()?;
                let mut out = Vec::new();
                for n in 1.. {
                    let key = format!("{items}.{n}");
                    if !present(&key) {
                        break;
                    }
                    out.push(self.form_value(member, &key, form)?);
                }
                (!out.is_empty()).then_some(Value::Array(out))
            }
            "map" => {
                let entries = if s["flattened"].as_bool() == Some(true) {
                    prefix.to_owned()
                } else {
                    format!("{prefix}.entry")
                };
                let key_name = s["key"]["locationName"].as_str().unwrap_or("key");
                let value_name = s["value"]["locationName"].as_str().unwrap_or("value");
                let mut out = Map::new();
                for n in 1.. {
                    let entry = format!("{entries}.{n}");
                    let Some(k) = form.get(&format!("{entry}.{key_name}")) else {
                        break;
                    };
                    let v = self
                        .form_value(
                            s["value"]["shape"].as_str()?,
                            &format!("{entry}.{value_name}"),
                            form,
                        )
                        .unwrap_or(Value::Null);
                    out.insert(k.clone(), v);
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            _ => form.get(prefix).map(|v| scalar(s, v.clone())),
        }
    }

    /// A member's name on the wire: EC2's `queryName`, or its capitalized `locationName`;
    /// a query service's `locationName`; else the member's own.
    fn wire_name(&self, member: &str, m: &Value) -> String {
        if self.protocol == "ec2" {
            if let Some(q) = m["queryName"].as_str() {
                return q.to_owned();
            }
            if let Some(l) = m["locationName"].as_str() {
                let mut c = l.chars();
                return c.next().map_or_else(String::new, |f| {
                    f.to_uppercase().chain(c).collect::<String>()
                });
            }
            return member.to_owned();
        }
        m["locationName"].as_str().unwrap_or(member).to_owned()
    }

    /// Every constraint of `shape` that `value` breaks, as AWS words it, at `path`.
    fn walk(
        &self,
        shape: &str,
        value: Option<&Value>,
        path: &str,
        sensitive: bool,
        errors: &mut Vec<String>,
    ) {
        let s = &self.shapes[shape];
        let sensitive = sensitive || s["sensitive"].as_bool() == Some(true);
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return;
        };
        let shown = || {
            if sensitive {
                "'***'".to_owned()
            } else {
                match value {
                    Value::String(t) => format!("'{t}'"),
                    Value::Array(_) | Value::Object(_) => "'[...]'".to_owned(),
                    other => format!("'{other}'"),
                }
            }
        };
        let mut own = Vec::new();
        let mut fail = |what: String| {
            own.push(format!(
                "Value {} at '{path}' failed to satisfy constraint: Member must {what}",
                shown()
            ));
        };
        let (min, max) = (s["min"].as_f64(), s["max"].as_f64());
        match s["type"].as_str().unwrap_or_default() {
            "structure" => {
                let fields = value.as_object();
                for (member, m) in s["members"].as_object().into_iter().flatten() {
                    let inner = lower_first(member);
                    let at = if path.is_empty() {
                        inner
                    } else {
                        format!("{path}.{inner}")
                    };
                    let v = fields.and_then(|f| f.get(member));
                    let required = s["required"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x == member.as_str()));
                    if required && v.is_none_or(Value::is_null) {
                        errors.push(format!(
                            "Value null at '{at}' failed to satisfy constraint: Member must not be null"
                        ));
                        continue;
                    }
                    self.walk(
                        m["shape"].as_str().unwrap_or_default(),
                        v,
                        &at,
                        sensitive,
                        errors,
                    );
                }
            }
            "list" => {
                let items = value.as_array().map_or(&[][..], Vec::as_slice);
                length(items.len(), min, max, &mut fail);
                let member = s["member"]["shape"].as_str().unwrap_or_default();
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{path}.{}.member", i + 1);
                    self.walk(member, Some(item), &at, sensitive, errors);
                }
            }
            "map" => {
                let Some(entries) = value.as_object() else {
                    return;
                };
                length(entries.len(), min, max, &mut fail);
                let (k, v) = (
                    s["key"]["shape"].as_str().unwrap_or_default(),
                    s["value"]["shape"].as_str().unwrap_or_default(),
                );
                for (key, item) in entries {
                    let at = format!("{path}.{key}");
                    self.walk(k, Some(&Value::String(key.clone())), &at, sensitive, errors);
                    self.walk(v, Some(item), &at, sensitive, errors);
                }
            }
            "string" => {
                let Some(text) = value.as_str() else {
                    return;
                };
                length(text.chars().count(), min, max, &mut fail);
                if let Some(allowed) = s["enum"].as_array()
                    && !allowed.iter().any(|a| a == text)
                {
                    let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                    fail(format!("satisfy enum value set: [{}]", names.join(", ")));
                }
                if let Some(pattern) = s["pattern"].as_str()
                    && let Some(re) = self.pattern(pattern)
                    && !re.is_match(text).unwrap_or(true)
                {
                    fail(format!("satisfy regular expression pattern: {pattern}"));
                }
            }
            "integer" | "long" | "float" | "double" => {
                let n = value
                    .as_f64()
                    .or_else(|| value.as_str().and_then(|t| t.parse().ok()));
                if let Some(n) = n {
                    if min.is_some_and(|m| n < m) {
                        fail(format!(
                            "have value greater than or equal to {}",
                            min.unwrap_or_default()
                        ));
                    }
                    if max.is_some_and(|m| n > m) {
                        fail(format!(
                            "have value less than or equal to {}",
                            max.unwrap_or_default()
                        ));
                    }
                }
            }
            _ => {}
        }
        errors.append(&mut own);
    }

    /// `pattern`, anchored at both ends, compiled once; `None` for one this engine cannot
    /// read (the test `every_pattern_of_the_services_the_stack_calls_compiles` keeps
    /// that from happening unseen).
    fn pattern(&self, pattern: &str) -> Option<Arc<fancy_regex::Regex>> {
        let mut compiled = self.patterns.lock().expect("pattern lock");
        compiled
            .entry(pattern.to_owned())
            .or_insert_with(|| {
                fancy_regex::Regex::new(&format!("^(?:{})$", java_classes(pattern)))
                    .ok()
                    .map(Arc::new)
            })
            .clone()
    }
}

/// A string's, list's or map's size against its `min` and `max`.
fn length(n: usize, min: Option<f64>, max: Option<f64>, fail: &mut impl FnMut(String)) {
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    if let Some(m) = min.filter(|m| n < *m) {
        fail(format!("have length greater than or equal to {m}"));
    }
    if let Some(m) = max.filter(|m| n > *m) {
        fail(format!("have length less than or equal to {m}"));
    }
}

/// A form's text as `shape`'s scalar: numbers and booleans as JSON's.
fn scalar(shape: &Value, text: String) -> Value {
    match shape["type"].as_str() {
        Some("integer" | "long") => text.parse::<i64>().map_or(Value::String(text), Value::from),
        Some("float" | "double") => text.parse::<f64>().map_or(Value::String(text), Value::from),
        Some("boolean") => Value::Bool(text == "true"),
        _ => Value::String(text),
    }
}

/// Java's POSIX classes, which the models use and Rust's engines lack, as Java reads
/// them by default (US-ASCII only; `java.util.regex.Pattern`).
fn java_classes(pattern: &str) -> String {
    pattern
        // Java reads `-` after a class shorthand in a set as itself (`[\w-_]`).
        .replace(r"\w-", r"\w\-")
        .replace(r"\d-", r"\d\-")
        .replace(r"\s-", r"\s\-")
        // A UTF-16 surrogate pair's range, as the code points it spells.
        .replace(r"\uD800\uDC00-\uDBFF\uDFFF", r"\x{10000}-\x{10FFFF}")
        .replace(r"\p{Print}", r"[\x20-\x7E]")
        .replace(r"\p{Graph}", r"[\x21-\x7E]")
        .replace(r"\p{Alnum}", "[A-Za-z0-9]")
        .replace(r"\p{Alpha}", "[A-Za-z]")
        .replace(r"\p{Punct}", r"[!-/:-@\[-`{-~]")
}

fn lower_first(name: &str) -> String {
    let mut c = name.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_lowercase().chain(c).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> &'static Models {
        Models::shared().expect("botocore's models beside the workspace's moto (make tools)")
    }

    fn json(service: &str, operation: &str, body: &Value) -> Option<Violation> {
        let body = body.to_string();
        models().check(&Request {
            service,
            operation: Some(operation),
            method: "POST",
            path: "/",
            body: body.as_bytes(),
        })
    }

    fn query(service: &str, form: &str) -> Option<Violation> {
        models().check(&Request {
            service,
            operation: None,
            method: "POST",
            path: "/",
            body: form.as_bytes(),
        })
    }

    #[test]
    fn a_json_members_length_pattern_and_required_members_are_checked() {
        let fine = json(
            "logs",
            "CreateLogGroup",
            &serde_json::json!({"logGroupName": "/ecs/qbo-invoice-processor"}),
        );
        assert_eq!(fine, None);
        let long = json(
            "logs",
            "CreateLogGroup",
            &serde_json::json!({"logGroupName": "x".repeat(513)}),
        )
        .unwrap();
        assert_eq!(long.code, "ValidationException");
        assert!(
            long.message.starts_with("1 validation error detected: Value 'xxx")
                && long.message.ends_with(
                    "at 'logGroupName' failed to satisfy constraint: Member must have length less than or equal to 512"
                ),
            "{}",
            long.message
        );
        let bad = json(
            "logs",
            "CreateLogGroup",
            &serde_json::json!({"logGroupName": "has space"}),
        )
        .unwrap();
        assert!(
            bad.message.contains("regular expression pattern"),
            "{}",
            bad.message
        );
        let missing = json("logs", "CreateLogGroup", &serde_json::json!({})).unwrap();
        assert_eq!(
            missing.message,
            "1 validation error detected: Value null at 'logGroupName' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn enums_ranges_and_nested_lists_are_checked_and_secrets_not_echoed() {
        let tags = json(
            "ecs",
            "TagResource",
            &serde_json::json!({"resourceArn": "arn", "tags": [{"key": "k".repeat(129), "value": "v"}]}),
        )
        .unwrap();
        assert!(
            tags.message.contains("at 'tags.1.member.key'")
                && tags.message.contains("less than or equal to 128"),
            "{}",
            tags.message
        );
        let secret = json(
            "secretsmanager",
            "PutSecretValue",
            &serde_json::json!({"SecretId": "s", "SecretString": "p".repeat(65_537)}),
        )
        .unwrap();
        assert!(
            secret.message.contains("Value '***' at 'secretString'")
                && !secret.message.contains("ppp"),
            "{}",
            secret.message
        );
        let billing = json(
            "dynamodb",
            "UpdateTable",
            &serde_json::json!({"TableName": "t", "BillingMode": "FREE"}),
        )
        .unwrap();
        assert!(
            billing
                .message
                .contains("Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"),
            "{}",
            billing.message
        );
    }

    #[test]
    fn query_and_ec2_forms_are_read_as_their_serializers_write_them() {
        assert_eq!(
            query(
                "iam",
                "Action=CreateRole&RoleName=ecsTaskRole-QBOInvoiceProcessor&AssumeRolePolicyDocument=%7B%7D&Tags.member.1.Key=app&Tags.member.1.Value=qbo"
            ),
            None
        );
        let role = query(
            "iam",
            "Action=CreateRole&RoleName=has%20space&AssumeRolePolicyDocument=%7B%7D",
        )
        .unwrap();
        assert_eq!(role.code, "ValidationError");
        assert!(
            role.message.contains("Value 'has space' at 'roleName'"),
            "{}",
            role.message
        );
        let tag = query(
            "iam",
            &format!(
                "Action=TagRole&RoleName=r&Tags.member.1.Key={}&Tags.member.1.Value=v",
                "k".repeat(129)
            ),
        )
        .unwrap();
        assert!(
            tag.message.contains("at 'tags.1.member.key'"),
            "{}",
            tag.message
        );
        let alarm = query(
            "monitoring",
            &format!(
                "Action=PutMetricAlarm&AlarmName={}&EvaluationPeriods=1&ComparisonOperator=GreaterThanThreshold",
                "a".repeat(256)
            ),
        )
        .unwrap();
        assert!(
            alarm.message.contains("at 'alarmName'"),
            "{}",
            alarm.message
        );
        let periods = query(
            "monitoring",
            "Action=PutMetricAlarm&AlarmName=a&EvaluationPeriods=0&ComparisonOperator=GreaterThanThreshold",
        )
        .unwrap();
        assert!(
            periods.message.contains("at 'evaluationPeriods'")
                && periods.message.contains("greater than or equal to 1"),
            "{}",
            periods.message
        );
    }

    #[test]
    fn a_rest_json_call_is_read_from_its_path_query_and_body() {
        let name = "n".repeat(65);
        let path = format!("/schedules/{name}");
        let body = serde_json::json!({
            "ScheduleExpression": "cron(0 6 1 * ? *)",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {"Arn": "arn:aws:ecs:us-east-1:123456789012:cluster/c", "RoleArn": "arn:aws:iam::123456789012:role/r"}
        })
        .to_string();
        let long = models()
            .check(&Request {
                service: "scheduler",
                operation: Some("CreateSchedule"),
                method: "POST",
                path: &path,
                body: body.as_bytes(),
            })
            .unwrap();
        assert!(
            long.message.contains("at 'name'") && long.message.contains("less than or equal to 64"),
            "{}",
            long.message
        );
        let fine = models().check(&Request {
            service: "scheduler",
            operation: Some("CreateSchedule"),
            method: "POST",
            path: "/schedules/qbo-invoice-processor-create",
            body: body.as_bytes(),
        });
        assert_eq!(fine, None);
    }

    #[test]
    fn every_pattern_of_the_services_the_stack_calls_compiles() {
        for service in [
            "ecs",
            "logs",
            "events",
            "scheduler",
            "dynamodb",
            "secretsmanager",
            "ecr",
            "iam",
            "ec2",
            "sns",
            "cloudwatch",
            "sts",
        ] {
            let model = models().model(service).expect(service);
            for (name, shape) in &model.shapes {
                if let Some(p) = shape["pattern"].as_str() {
                    assert!(model.pattern(p).is_some(), "{service} {name}: {p}");
                }
            }
        }
    }
}
