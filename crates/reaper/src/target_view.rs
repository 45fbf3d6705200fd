//! Targets under live control as the API, the CLI and `/metrics` show them: each catalog target
//! with its stored control (`reaper_engine::controls`) and, for one target, its history.
//!
//! This module decides nothing about controls (the core does) and answers no request.

use reaper_core::catalog::Catalog;
use reaper_core::controls::Effective;
use reaper_core::views::TargetView;
use reaper_engine::{Database, EngineError, controls, instruments};

/// How many recorded changes one target's view shows.
pub(crate) const CHANGES_SHOWN: u32 = 50;

/// Every catalog target, by name, with its control.
pub(crate) async fn all(db: &Database, catalog: &Catalog) -> Result<Vec<TargetView>, EngineError> {
    let stored = controls::list(db).await?;
    Ok(catalog
        .names()
        .into_iter()
        .filter_map(|name| catalog.get(name))
        .map(|target| {
            let control = stored.iter().find(|control| control.target == target.name);
            TargetView::new(target, control, Vec::new())
        })
        .collect())
}

/// One target with its control and recent changes; `None` when the catalog has no such target.
pub(crate) async fn one(
    db: &Database,
    catalog: &Catalog,
    name: &str,
) -> Result<Option<TargetView>, EngineError> {
    let Some(target) = catalog.get(name) else {
        return Ok(None);
    };
    let control = controls::get(db, name).await?;
    let changes = controls::changes(db, name, CHANGES_SHOWN).await?;
    Ok(Some(TargetView::new(target, control.as_ref(), changes)))
}

/// Sets every catalog target's throttle gauges from the stored controls (at scrape time).
pub(crate) async fn record_metrics(db: &Database, catalog: &Catalog) -> Result<(), EngineError> {
    let stored = controls::list(db).await?;
    for name in catalog.names() {
        let Some(target) = catalog.get(name) else {
            continue;
        };
        let control = stored.iter().find(|control| control.target == target.name);
        let effective = Effective::of(&target.throttle, control);
        instruments::throttle_state(name, effective.paused, effective.max_rows_per_second);
    }
    Ok(())
}
