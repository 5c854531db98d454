//! The resource kinds of the stack, as typed desired state. Values known only once a
//! dependency exists (a security group's id, the current task-definition revision) are
//! `Ref`s the deployer resolves when it applies.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::policy::PolicyDocument;

pub type Tags = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    EcrRepository,
    LogGroup,
    LogResourcePolicy,
    MetricFilter,
    IamRole,
    EcsCluster,
    SecurityGroup,
    TaskDefinition,
    ScheduleGroup,
    Schedule,
    EventRule,
    SnsTopic,
    SnsSubscription,
    Alarm,
    DynamodbTable,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcrRepository => "ecr-repository",
            Self::LogGroup => "log-group",
            Self::LogResourcePolicy => "log-resource-policy",
            Self::MetricFilter => "metric-filter",
            Self::IamRole => "iam-role",
            Self::EcsCluster => "ecs-cluster",
            Self::SecurityGroup => "security-group",
            Self::TaskDefinition => "task-definition",
            Self::ScheduleGroup => "schedule-group",
            Self::Schedule => "schedule",
            Self::EventRule => "event-rule",
            Self::SnsTopic => "sns-topic",
            Self::SnsSubscription => "sns-subscription",
            Self::Alarm => "alarm",
            Self::DynamodbTable => "dynamodb-table",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kind/name`, unique within a stack.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    pub kind: Kind,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A value taken from another resource of the stack once it exists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ref {
    pub target: ResourceId,
    pub attribute: Attribute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attribute {
    /// A generated id (security group `sg-...`).
    Id,
    /// An ARN that AWS chooses (the current task-definition revision).
    Arn,
}

impl Ref {
    pub fn id(target: ResourceId) -> Self {
        Self {
            target,
            attribute: Attribute::Id,
        }
    }
    pub fn arn(target: ResourceId) -> Self {
        Self {
            target,
            attribute: Attribute::Arn,
        }
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attr = match self.attribute {
            Attribute::Id => "id",
            Attribute::Arn => "arn",
        };
        write!(f, "${{{}.{attr}}}", self.target)
    }
}

impl Serialize for Ref {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A property that may still wait on another resource: a `Ref` until that resource
/// exists, then the value. Both serialize as a string, so a plan shows
/// `${task-definition/NAME.arn}` where the value is known only after apply.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input {
    Ref(Ref),
    Known(String),
}

impl Input {
    /// Replaces a `Ref` with its value when `lookup` knows it.
    pub fn resolve(&mut self, lookup: &impl Fn(&Ref) -> Option<String>) {
        if let Self::Ref(r) = self
            && let Some(v) = lookup(r)
        {
            *self = Self::Known(v);
        }
    }
}

impl From<Ref> for Input {
    fn from(r: Ref) -> Self {
        Self::Ref(r)
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ref(r) => r.fmt(f),
            Self::Known(v) => f.write_str(v),
        }
    }
}

impl Serialize for Input {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One resource of the stack: its physical name, what it should be, and what must
/// exist before it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    pub kind: Kind,
    pub name: String,
    /// The ARN it will have, when that is known before it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    pub depends_on: Vec<ResourceId>,
    /// Empty for kinds AWS cannot tag (metric filters, subscriptions, schedules: these
    /// are owned through their tagged parent).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    pub properties: Spec,
}

impl Resource {
    pub fn new(name: impl Into<String>, properties: Spec) -> Self {
        Self {
            kind: properties.kind(),
            name: name.into(),
            arn: None,
            depends_on: Vec::new(),
            tags: Tags::new(),
            properties,
        }
    }

    pub fn id(&self) -> ResourceId {
        ResourceId::new(self.kind, self.name.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    EcrRepository(EcrRepository),
    LogGroup(LogGroup),
    LogResourcePolicy(LogResourcePolicy),
    MetricFilter(MetricFilter),
    IamRole(IamRole),
    EcsCluster(EcsCluster),
    SecurityGroup(SecurityGroup),
    TaskDefinition(TaskDefinition),
    ScheduleGroup(ScheduleGroup),
    Schedule(Schedule),
    EventRule(EventRule),
    SnsTopic(SnsTopic),
    SnsSubscription(SnsSubscription),
    Alarm(Alarm),
    DynamodbTable(DynamodbTable),
}

impl Spec {
    /// Replaces every `Ref` whose value `lookup` knows.
    pub fn resolve(&mut self, lookup: &impl Fn(&Ref) -> Option<String>) {
        match self {
            Self::Schedule(s) => s.target.resolve(lookup),
            Self::EventRule(EventRule {
                target: RuleTarget::Ecs { target, .. },
                ..
            }) => target.resolve(lookup),
            _ => {}
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::EcrRepository(_) => Kind::EcrRepository,
            Self::LogGroup(_) => Kind::LogGroup,
            Self::LogResourcePolicy(_) => Kind::LogResourcePolicy,
            Self::MetricFilter(_) => Kind::MetricFilter,
            Self::IamRole(_) => Kind::IamRole,
            Self::EcsCluster(_) => Kind::EcsCluster,
            Self::SecurityGroup(_) => Kind::SecurityGroup,
            Self::TaskDefinition(_) => Kind::TaskDefinition,
            Self::ScheduleGroup(_) => Kind::ScheduleGroup,
            Self::Schedule(_) => Kind::Schedule,
            Self::EventRule(_) => Kind::EventRule,
            Self::SnsTopic(_) => Kind::SnsTopic,
            Self::SnsSubscription(_) => Kind::SnsSubscription,
            Self::Alarm(_) => Kind::Alarm,
            Self::DynamodbTable(_) => Kind::DynamodbTable,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EcrRepository {
    pub scan_on_push: bool,
    /// `IMMUTABLE`, `MUTABLE` or `IMMUTABLE_WITH_EXCLUSION`.
    pub tag_mutability: String,
    /// With `IMMUTABLE_WITH_EXCLUSION`: the tags that may move (wildcard filters).
    pub mutable_tags: Vec<String>,
    /// The lifecycle policy document (JSON text as ECR stores it, parsed).
    pub lifecycle_policy: Value,
}

/// A DynamoDB table keyed by one string attribute, billed per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DynamodbTable {
    pub partition_key: String,
    /// `PAY_PER_REQUEST`.
    pub billing_mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogGroup {
    pub retention_days: u32,
}

/// A CloudWatch Logs resource policy (account-wide, by name): which AWS services may
/// write to which log groups. Untaggable; at most 10 in an account and region
/// (CloudWatch Logs API reference, PutResourcePolicy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogResourcePolicy {
    pub document: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricFilter {
    pub log_group: String,
    pub filter_pattern: String,
    pub metric_namespace: String,
    pub metric_name: String,
    pub metric_value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IamRole {
    pub description: String,
    pub trust_policy: PolicyDocument,
    /// Inline policy name -> document.
    pub inline_policies: BTreeMap<String, PolicyDocument>,
    pub managed_policy_arns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EcsCluster {
    pub container_insights: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityGroup {
    pub description: String,
    pub vpc_id: String,
    pub ingress: Vec<SecurityGroupRule>,
    pub egress: Vec<SecurityGroupRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SecurityGroupRule {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub cidr: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskDefinition {
    pub family: String,
    pub cpu: String,
    pub memory: String,
    pub network_mode: String,
    pub requires_compatibilities: Vec<String>,
    pub cpu_architecture: String,
    pub operating_system_family: String,
    pub execution_role_arn: String,
    pub task_role_arn: String,
    /// Ephemeral volumes (Fargate task storage); `/tmp` is one, as the root is read-only.
    pub volumes: Vec<String>,
    pub container: ContainerDefinition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerDefinition {
    pub name: String,
    /// `REGISTRY/REPOSITORY@sha256:...`: pinned by digest, never a tag.
    pub image: String,
    pub essential: bool,
    /// Hard limit in MiB, equal to the task's memory.
    pub memory: u32,
    pub readonly_root_filesystem: bool,
    /// Variable name -> value, sorted.
    pub environment: BTreeMap<String, String>,
    pub mount_points: Vec<MountPoint>,
    pub log_driver: String,
    pub log_options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountPoint {
    pub source_volume: String,
    pub container_path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleGroup {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    pub group: String,
    /// `cron(...)`.
    pub expression: String,
    pub timezone: String,
    pub enabled: bool,
    pub description: String,
    pub target: EcsTarget,
}

/// How a schedule or rule starts the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EcsTarget {
    pub cluster_arn: String,
    pub role_arn: String,
    pub task_definition: Input,
    pub launch_type: String,
    pub platform_version: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<Input>,
    pub assign_public_ip: bool,
    pub container: String,
    pub command: Vec<String>,
    /// Variables added to the container's (the schedule's `JOB_TIMEOUT`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Task-level size overrides (ECS TaskOverride `cpu`/`memory`, strings), when the
    /// schedule has its own size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    pub propagate_tags: bool,
    /// Starting the task again after a failed start is safe: the jobs are idempotent.
    pub retry_attempts: u32,
    pub max_event_age_seconds: u32,
}

impl EcsTarget {
    pub fn resolve(&mut self, lookup: &impl Fn(&Ref) -> Option<String>) {
        self.task_definition.resolve(lookup);
        for sg in &mut self.security_groups {
            sg.resolve(lookup);
        }
    }

    /// The task override the target passes as its input.
    pub fn input(&self) -> Value {
        // The input is the RunTask `overrides` (a TaskOverride): task-level cpu and
        // memory sit beside containerOverrides (ECS API, "TaskOverride"; the CDK's
        // events-targets EcsTask `cpu`/`memory` props write them there).
        let mut v = serde_json::json!({
            "containerOverrides": [{ "name": self.container, "command": self.command }]
        });
        if !self.environment.is_empty() {
            v["containerOverrides"][0]["environment"] = self
                .environment
                .iter()
                .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
                .collect();
        }
        if let Some(cpu) = &self.cpu {
            v["cpu"] = Value::String(cpu.clone());
        }
        if let Some(memory) = &self.memory {
            v["memory"] = Value::String(memory.clone());
            // The container's hard limit is the task definition's memory: a smaller task
            // must lower it too, or RunTask refuses the task (ECS ContainerDefinition,
            // memory: the containers' memory may not exceed the task's).
            if let Ok(mib) = memory.parse::<u32>() {
                v["containerOverrides"][0]["memory"] = Value::from(mib);
            }
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRule {
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_expression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_pattern: Option<Value>,
    pub enabled: bool,
    pub target: RuleTarget,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum RuleTarget {
    Sns {
        id: String,
        topic_arn: String,
        /// JSON path name -> path, for the input transformer.
        input_paths: BTreeMap<String, String>,
        input_template: String,
    },
    Ecs {
        id: String,
        #[serde(flatten)]
        target: Box<EcsTarget>,
    },
    /// A CloudWatch Logs group: each matching event is written as one JSON line.
    Logs { id: String, log_group_arn: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnsTopic {
    pub display_name: String,
    pub policy: PolicyDocument,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnsSubscription {
    pub topic_arn: String,
    pub protocol: String,
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    pub description: String,
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: BTreeMap<String, String>,
    pub statistic: String,
    pub period_seconds: i32,
    pub evaluation_periods: i32,
    pub datapoints_to_alarm: i32,
    pub threshold: f64,
    pub comparison: String,
    pub treat_missing_data: String,
    pub alarm_actions: Vec<String>,
    pub ok_actions: Vec<String>,
}
