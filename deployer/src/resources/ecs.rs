//! ECS: the cluster, and the task definition (every change is a new revision,
//! registered only when something really differs).

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    ClusterField, ClusterSetting, ClusterSettingName, Compatibility, ContainerDefinition,
    CpuArchitecture, KeyValuePair, LogConfiguration, LogDriver, MountPoint, NetworkMode, OsFamily,
    RuntimePlatform, Tag, TaskDefinitionField, TaskDefinitionStatus, Volume,
};
use infra::resources::{self, EcsCluster, Resource, Spec, Tags, TaskDefinition};

use super::Change;
use super::{Deleted, Live, Managed, Options, Outputs, arn_of, aws_error, code, tag_map};
use crate::aws::Aws;
use crate::error::{Error, Result};

async fn read_cluster(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    let out = aws
        .ecs
        .describe_clusters()
        .clusters(&r.name)
        .include(ClusterField::Tags)
        .include(ClusterField::Settings)
        .send()
        .await
        .map_err(aws_error("read", r.id()))?;
    // A deleted cluster lingers as INACTIVE.
    let Some(cluster) = out.clusters().iter().find(|c| c.status() == Some("ACTIVE")) else {
        return Ok(None);
    };
    let insights = cluster.settings().iter().any(|s| {
        s.name() == Some(&ClusterSettingName::ContainerInsights)
            && matches!(s.value(), Some("enabled" | "enhanced"))
    });
    Ok(Some(Live {
        spec: Spec::EcsCluster(EcsCluster {
            container_insights: insights,
        }),
        tags: Some(ecs_tags(cluster.tags())),
        outputs: Outputs {
            id: Some(r.name.clone()),
            arn: cluster.cluster_arn().map(str::to_owned),
        },
    }))
}

fn insights(d: &EcsCluster) -> ClusterSetting {
    ClusterSetting::builder()
        .name(ClusterSettingName::ContainerInsights)
        .value(if d.container_insights {
            "enabled"
        } else {
            "disabled"
        })
        .build()
}

async fn create_cluster(aws: &Aws, r: &Resource, d: &EcsCluster) -> Result<Outputs> {
    let out = aws
        .ecs
        .create_cluster()
        .cluster_name(&r.name)
        .settings(insights(d))
        .set_tags(Some(tags(&r.tags)))
        .send()
        .await
        .map_err(aws_error("create", r.id()))?;
    Ok(Outputs {
        id: Some(r.name.clone()),
        arn: out
            .cluster()
            .and_then(|c| c.cluster_arn())
            .map(str::to_owned),
    })
}

async fn delete_cluster(aws: &Aws, name: &str) -> Result<()> {
    match aws.ecs.delete_cluster().cluster(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ClusterNotFoundException") => Ok(()),
        Err(e) => Err(aws_error("delete cluster", name)(e)),
    }
}

async fn tag(aws: &Aws, arn: &str, t: &Tags) -> Result<()> {
    aws.ecs
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tags(t)))
        .send()
        .await
        .map_err(aws_error("tag", arn))?;
    Ok(())
}

/// The latest ACTIVE revision of the family, in the stack's shape.
pub async fn read_task_definition(aws: &Aws, family: &str) -> Result<Option<Live>> {
    let out = match aws
        .ecs
        .describe_task_definition()
        .task_definition(family)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
    {
        Ok(out) => out,
        // ECS answers an unknown family with a ClientException.
        Err(e) if code(&e) == Some("ClientException") => return Ok(None),
        Err(e) => return Err(aws_error("read task definition", family)(e)),
    };
    let Some(td) = out.task_definition() else {
        return Ok(None);
    };
    if td.status() != Some(&TaskDefinitionStatus::Active) {
        return Ok(None);
    }
    let Some(c) = td.container_definitions().first() else {
        return Ok(None);
    };
    let log = c.log_configuration();
    let spec = TaskDefinition {
        family: td.family().unwrap_or_default().to_owned(),
        cpu: td.cpu().unwrap_or_default().to_owned(),
        memory: td.memory().unwrap_or_default().to_owned(),
        network_mode: td.network_mode().map_or("", NetworkMode::as_str).to_owned(),
        requires_compatibilities: td
            .requires_compatibilities()
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        cpu_architecture: td
            .runtime_platform()
            .and_then(RuntimePlatform::cpu_architecture)
            .map_or("X86_64", CpuArchitecture::as_str)
            .to_owned(),
        operating_system_family: td
            .runtime_platform()
            .and_then(RuntimePlatform::operating_system_family)
            .map_or("LINUX", OsFamily::as_str)
            .to_owned(),
        execution_role_arn: td.execution_role_arn().unwrap_or_default().to_owned(),
        task_role_arn: td.task_role_arn().unwrap_or_default().to_owned(),
        volumes: td
            .volumes()
            .iter()
            .filter_map(|v| v.name().map(str::to_owned))
            .collect(),
        container: resources::ContainerDefinition {
            name: c.name().unwrap_or_default().to_owned(),
            image: c.image().unwrap_or_default().to_owned(),
            essential: c.essential().unwrap_or(true),
            memory: c.memory().and_then(|m| u32::try_from(m).ok()).unwrap_or(0),
            readonly_root_filesystem: c.readonly_root_filesystem().unwrap_or(false),
            environment: c
                .environment()
                .iter()
                .filter_map(|kv| Some((kv.name()?.to_owned(), kv.value().unwrap_or("").to_owned())))
                .collect(),
            mount_points: c
                .mount_points()
                .iter()
                .map(|m| resources::MountPoint {
                    source_volume: m.source_volume().unwrap_or_default().to_owned(),
                    container_path: m.container_path().unwrap_or_default().to_owned(),
                    read_only: m.read_only().unwrap_or(false),
                })
                .collect(),
            log_driver: log.map_or("", |l| l.log_driver().as_str()).to_owned(),
            log_options: log
                .and_then(LogConfiguration::options)
                .map(|o| o.clone().into_iter().collect::<BTreeMap<_, _>>())
                .unwrap_or_default(),
        },
    };
    Ok(Some(Live {
        spec: Spec::TaskDefinition(spec),
        tags: Some(ecs_tags(out.tags())),
        outputs: Outputs {
            id: Some(family.to_owned()),
            arn: td.task_definition_arn().map(str::to_owned),
        },
    }))
}

async fn register_task_definition(aws: &Aws, r: &Resource, d: &TaskDefinition) -> Result<Outputs> {
    let c = &d.container;
    let log = LogConfiguration::builder()
        .log_driver(LogDriver::from(c.log_driver.as_str()))
        .set_options(Some(c.log_options.clone().into_iter().collect()))
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let container = ContainerDefinition::builder()
        .name(&c.name)
        .image(&c.image)
        .essential(c.essential)
        .memory(i32::try_from(c.memory).unwrap_or(i32::MAX))
        .readonly_root_filesystem(c.readonly_root_filesystem)
        .set_environment(Some(
            c.environment
                .iter()
                .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                .collect(),
        ))
        .set_mount_points(Some(
            c.mount_points
                .iter()
                .map(|m| {
                    MountPoint::builder()
                        .source_volume(&m.source_volume)
                        .container_path(&m.container_path)
                        .read_only(m.read_only)
                        .build()
                })
                .collect(),
        ))
        .log_configuration(log)
        .build();
    let out = aws
        .ecs
        .register_task_definition()
        .family(&d.family)
        .cpu(&d.cpu)
        .memory(&d.memory)
        .network_mode(NetworkMode::from(d.network_mode.as_str()))
        .set_requires_compatibilities(Some(
            d.requires_compatibilities
                .iter()
                .map(|c| Compatibility::from(c.as_str()))
                .collect(),
        ))
        .runtime_platform(
            RuntimePlatform::builder()
                .cpu_architecture(CpuArchitecture::from(d.cpu_architecture.as_str()))
                .operating_system_family(OsFamily::from(d.operating_system_family.as_str()))
                .build(),
        )
        .execution_role_arn(&d.execution_role_arn)
        .task_role_arn(&d.task_role_arn)
        .set_volumes(Some(
            d.volumes
                .iter()
                .map(|v| Volume::builder().name(v).build())
                .collect(),
        ))
        .container_definitions(container)
        .set_tags(Some(tags(&r.tags)))
        .send()
        .await
        .map_err(aws_error("register", r.id()))?;
    Ok(Outputs {
        id: Some(d.family.clone()),
        arn: out
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .map(str::to_owned),
    })
}

/// Deregisters every active revision of the family.
async fn deregister_family(aws: &Aws, family: &str) -> Result<()> {
    let mut pages = aws
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(TaskDefinitionStatus::Active)
        .into_paginator()
        .items()
        .send();
    let mut arns = Vec::new();
    while let Some(arn) = pages.next().await {
        arns.push(arn.map_err(aws_error("list revisions of task definition", family))?);
    }
    for arn in arns {
        // family_prefix also matches longer family names.
        if arn
            .rsplit_once('/')
            .and_then(|(_, f)| f.rsplit_once(':'))
            .map(|(f, _)| f)
            != Some(family)
        {
            continue;
        }
        aws.ecs
            .deregister_task_definition()
            .task_definition(&arn)
            .send()
            .await
            .map_err(aws_error("deregister", &arn))?;
    }
    Ok(())
}

fn tags(t: &Tags) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn ecs_tags(t: &[Tag]) -> Tags {
    tag_map(
        t.iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned()))),
    )
}

impl Managed for EcsCluster {
    const SERVICE: &'static str = "ecs";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read_cluster(aws, r).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        create_cluster(aws, r, self).await
    }

    async fn update(
        &self,
        aws: &Aws,
        r: &Resource,
        _live: &Self,
        _outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        aws.ecs
            .update_cluster_settings()
            .cluster(&r.name)
            .settings(insights(self))
            .send()
            .await
            .map_err(aws_error("update settings of", r.id()))?;
        Ok(Outputs::default())
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        tag(aws, arn_of(r, outputs)?, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        delete_cluster(aws, &r.name).await?;
        Ok(Deleted::Yes)
    }
}

impl Managed for TaskDefinition {
    const SERVICE: &'static str = "ecs";

    async fn read(&self, aws: &Aws, _r: &Resource) -> Result<Option<Live>> {
        read_task_definition(aws, &self.family).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        register_task_definition(aws, r, self).await
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        tag(aws, arn_of(r, outputs)?, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, _r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        deregister_family(aws, &self.family).await?;
        Ok(Deleted::Yes)
    }

    /// A registered revision cannot change: every difference is a new revision (the
    /// old one stays, for `rollback`).
    fn replaces(_change: &Change) -> bool {
        true
    }
}

/// The image the family's latest active revision runs, if any.
pub async fn deployed_image(aws: &Aws, family: &str) -> Result<Option<String>> {
    Ok(read_task_definition(aws, family)
        .await?
        .and_then(|live| match live.spec {
            Spec::TaskDefinition(td) => Some(td.container.image),
            _ => None,
        }))
}

/// The digest of that image.
pub async fn deployed_digest(aws: &Aws, family: &str) -> Result<Option<String>> {
    Ok(deployed_image(aws, family)
        .await?
        .and_then(|image| image.rsplit_once('@').map(|(_, digest)| digest.to_owned())))
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, Spec};

    use crate::resources::fixture::{judge, judge_tagged, resource};

    #[test]
    fn any_task_definition_difference_is_a_new_revision_but_tags_are_not() {
        let r = resource(Kind::TaskDefinition);
        let (paths, replaced) = judge(&r, |s| {
            let Spec::TaskDefinition(t) = s else { panic!() };
            t.container.image = "registry/repo@sha256:0ld".into();
        });
        assert_eq!(paths, ["properties.container.image"]);
        assert!(replaced);
        let mut tagged = r.clone();
        tagged.tags.insert("owner".into(), "billing".into());
        let (paths, replaced) = judge_tagged(&tagged, &r.tags, |_| {});
        assert_eq!(paths, ["tags.owner"]);
        assert!(!replaced);
    }

    #[test]
    fn cluster_settings_change_in_place() {
        let r = resource(Kind::EcsCluster);
        let (paths, replaced) = judge(&r, |s| {
            let Spec::EcsCluster(c) = s else { panic!() };
            c.container_insights = !c.container_insights;
        });
        assert_eq!(paths, ["properties.container_insights"]);
        assert!(!replaced);
    }
}
