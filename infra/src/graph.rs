//! Dependency order of a stack's resources: waves of resources whose dependencies all
//! lie in earlier waves. Creation walks the waves forward, deletion backward.

use std::collections::{BTreeMap, BTreeSet};

use crate::resources::{Resource, ResourceId};

/// Why resources cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("{from} depends on {to}, which is not in the stack")]
    Missing { from: ResourceId, to: ResourceId },
    #[error("dependency cycle among: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Cycle(Vec<ResourceId>),
    #[error("{0} appears twice in the stack")]
    Duplicate(ResourceId),
}

/// Groups resources into waves (Kahn's algorithm); order within a wave follows the input.
pub fn waves(resources: &[Resource]) -> Result<Vec<Vec<&Resource>>, GraphError> {
    let mut index = BTreeMap::new();
    for (i, r) in resources.iter().enumerate() {
        if index.insert(r.id(), i).is_some() {
            return Err(GraphError::Duplicate(r.id()));
        }
    }
    for r in resources {
        if let Some(to) = r.depends_on.iter().find(|d| !index.contains_key(*d)) {
            return Err(GraphError::Missing {
                from: r.id(),
                to: to.clone(),
            });
        }
    }
    let mut placed: BTreeSet<ResourceId> = BTreeSet::new();
    let mut waves = Vec::new();
    while placed.len() < resources.len() {
        let wave: Vec<&Resource> = resources
            .iter()
            .filter(|r| {
                !placed.contains(&r.id()) && r.depends_on.iter().all(|d| placed.contains(d))
            })
            .collect();
        if wave.is_empty() {
            let mut stuck: Vec<ResourceId> = resources
                .iter()
                .map(Resource::id)
                .filter(|id| !placed.contains(id))
                .collect();
            stuck.sort();
            return Err(GraphError::Cycle(stuck));
        }
        placed.extend(wave.iter().map(|r| r.id()));
        waves.push(wave);
    }
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{LogGroup, Spec};

    fn group(name: &str, deps: &[&str]) -> Resource {
        let mut r = Resource::new(name, Spec::LogGroup(LogGroup { retention_days: 1 }));
        r.depends_on = deps
            .iter()
            .map(|d| ResourceId::new(crate::resources::Kind::LogGroup, *d))
            .collect();
        r
    }

    #[test]
    fn independent_resources_share_a_wave_and_dependents_follow() {
        let rs = [
            group("a", &[]),
            group("b", &[]),
            group("c", &["a", "b"]),
            group("d", &["c"]),
        ];
        let names: Vec<Vec<&str>> = waves(&rs)
            .unwrap()
            .iter()
            .map(|w| w.iter().map(|r| r.name.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["a", "b"], vec!["c"], vec!["d"]]);
    }

    #[test]
    fn cycles_missing_and_duplicate_resources_are_reported() {
        let cycle = [group("a", &["b"]), group("b", &["a"])];
        assert!(matches!(waves(&cycle), Err(GraphError::Cycle(ids)) if ids.len() == 2));
        let missing = [group("a", &["zz"])];
        assert!(
            waves(&missing)
                .unwrap_err()
                .to_string()
                .contains("log-group/zz")
        );
        let dup = [group("a", &[]), group("a", &[])];
        assert!(matches!(waves(&dup), Err(GraphError::Duplicate(_))));
    }
}
