//! The job's log group, which its metric filters read.

use super::{Builder, Made};
use crate::resources::{LogGroup, Resource, Spec};

pub fn job_logs(b: &mut Builder<'_>) -> Made {
    let logs = &b.file().logs;
    let arn = b.arn("logs", &format!("log-group:{}", logs.group));
    b.made(
        Resource::new(
            &logs.group,
            Spec::LogGroup(LogGroup {
                retention_days: logs.retention_days,
            }),
        ),
        arn,
        &[],
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constructs::testing::prod;

    #[test]
    fn the_group_keeps_the_files_retention() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        let made = job_logs(&mut b);
        assert!(
            made.arn
                .ends_with(&format!("log-group:{}", env.file.logs.group))
        );
        assert_eq!(
            b.resources()[0].properties,
            Spec::LogGroup(LogGroup {
                retention_days: env.file.logs.retention_days
            })
        );
    }
}
