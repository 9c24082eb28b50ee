//! The data files: catalog, runbooks, fleet and scenarios. The repository's `data/` folder
//! is compiled in, so every binary works from anywhere; `--data-dir DIR` reads the same
//! layout from disk instead (`catalog.toml`, `runbooks/*.md`, `fleet.toml`,
//! `scenarios/*.toml`).

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::catalog::Catalog;
use crate::fleet::scenario::Scenario;
use crate::fleet::sim::{Fleet, FleetSpec};

macro_rules! embedded {
    ($dir:literal: $($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../data/", $dir, "/", $name)))),*]
    };
}

const CATALOG: &str = include_str!("../data/catalog.toml");
const FLEET: &str = include_str!("../data/fleet.toml");
const RUNBOOKS: &[(&str, &str)] = embedded!("runbooks":
    "catalog-api.md", "checkout-api.md", "orders-worker.md",
    "payments-api.md", "payments-db.md", "search-indexer.md",
);
const SCENARIOS: &[(&str, &str)] = embedded!("scenarios":
    "bad-config-crashloop.toml", "cert-expired.toml", "cpu-throttling.toml",
    "db-outage.toml", "db-replication-lag.toml", "disk-full.toml",
    "oom-kill.toml", "oom-kill-recurring.toml", "slow-dependency.toml",
);

/// Reads `file` under `dir`, or the embedded copy when `dir` is `None`.
fn read(dir: Option<&Path>, file: &str, embedded: &str) -> Result<String, String> {
    match dir {
        None => Ok(embedded.to_owned()),
        Some(dir) => std::fs::read_to_string(dir.join(file))
            .map_err(|e| format!("cannot read {}: {e}", dir.join(file).display())),
    }
}

/// `(file name, text)` of every file with `extension` in `dir/sub`, or the embedded ones.
fn read_all(
    dir: Option<&Path>,
    sub: &str,
    extension: &str,
    embedded: &[(&str, &str)],
) -> Result<Vec<(String, String)>, String> {
    let Some(dir) = dir else {
        return Ok(embedded
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect());
    };
    let folder = dir.join(sub);
    let entries =
        std::fs::read_dir(&folder).map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(extension) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            files.push((name, text));
        }
    }
    files.sort();
    Ok(files)
}

pub fn load_catalog(dir: Option<&Path>) -> Result<Catalog, String> {
    let catalog = read(dir, "catalog.toml", CATALOG)?;
    let runbooks = read_all(dir, "runbooks", "md", RUNBOOKS)?;
    Catalog::parse(&catalog, &runbooks).map_err(|e| e.to_string())
}

pub fn load_scenarios(dir: Option<&Path>) -> Result<Vec<Scenario>, String> {
    read_all(dir, "scenarios", "toml", SCENARIOS)?
        .iter()
        .map(|(name, text)| Scenario::parse(name, text))
        .collect()
}

/// A healthy fleet at `now` with every scenario ready to inject.
pub fn load_fleet(dir: Option<&Path>, now: DateTime<Utc>) -> Result<Fleet, String> {
    let spec = FleetSpec::parse(&read(dir, "fleet.toml", FLEET)?)?;
    Fleet::new(spec, load_scenarios(dir)?, now)
}
