//! `deployer cost`: the stack's monthly cost at list prices, offline.

use std::fmt::Write as _;

use infra::cost::{Assumptions, estimate};

use crate::cli::{Cli, CostArgs, Format};
use crate::error::Result;
use crate::output;

pub fn run(cli: &Cli, args: &CostArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let e = estimate(
        &env,
        &Assumptions {
            create_minutes: args.create_minutes,
            send_minutes: args.send_minutes,
            log_mb_per_run: args.log_mb_per_run,
            ..Assumptions::default()
        },
    );
    if args.output == Format::Json {
        return output::json(&serde_json::json!({
            "environment": env.name,
            "region": env.file.region,
            "currency": "USD",
            "lines": e.lines,
            "total": e.total,
            "notes": e.notes,
        }));
    }
    let mut s = format!(
        "Monthly cost of {} ({}), USD at list prices:\n\n",
        env.name, env.file.region
    );
    let _ = writeln!(
        s,
        "{:<44} {:>16} {:>30} {:>10}",
        "item", "quantity", "price", "per month"
    );
    for l in &e.lines {
        let _ = writeln!(
            s,
            "{:<44} {:>16} {:>30} {:>10}",
            l.item,
            l.quantity,
            l.unit_price,
            format!("${:.2}", l.monthly)
        );
    }
    let _ = writeln!(
        s,
        "{:<44} {:>16} {:>30} {:>10}\n",
        "total",
        "",
        "",
        format!("${:.2}", e.total)
    );
    for note in &e.notes {
        let _ = writeln!(s, "- {note}");
    }
    output::text(&s)
}
