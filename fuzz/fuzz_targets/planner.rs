//! The filter-to-SQL planner: any job that validates, planned for every backend and statement
//! family; each statement binds every value (placeholders = parameters) and quotes only
//! catalog names (`reaper_fuzz::check_statement`).
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use reaper_core::sql::{self, Backend, RowLocking};
use reaper_core::value::KeyValue;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let catalog = reaper_fuzz::catalog();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let Ok(request) = reaper_core::validate::check_json(&value, &catalog, now) else {
        return;
    };
    let job = reaper_core::validate::validate(&request, &catalog, now).unwrap();
    let target = &job.target;
    let mut names: BTreeSet<String> = target.columns.keys().cloned().collect();
    names.extend([target.table.clone(), target.primary_key.clone()]);
    names.extend(target.schema.clone());
    names.extend(target.soft_delete_column.clone());
    let after = match target.key_type {
        reaper_core::catalog::KeyType::Int => KeyValue::Int(i64::from(data.len() as u32)),
        _ => KeyValue::Text("00000000-0000-0000-0000-000000000001".into()),
    };
    for backend in [Backend::Postgres, Backend::MySql, Backend::Sqlite] {
        let mut statements = vec![
            sql::select_keys(backend, &job, Some(&after), 100),
            sql::count_matching(backend, &job, Some(10)),
        ];
        match backend {
            Backend::Postgres => {
                for locking in [RowLocking::Direct, RowLocking::SkipLocked] {
                    let ctx = sql::postgres::BatchContext {
                        job_id: "j",
                        lease_token: "t",
                        now,
                        lease_until: now,
                        locking,
                        held: &[],
                        count_held: false,
                    };
                    statements.push(sql::postgres::delete_batch(&job, Some(&after), 100, &ctx));
                }
            }
            Backend::MySql => {
                statements.push(sql::mysql::lock_batch(&job, None, 100, RowLocking::Direct, &[]));
                statements.push(sql::mysql::delete_window(&job, None, &after, now, &[]));
                statements.push(sql::mysql::delete_keys(
                    &job,
                    std::slice::from_ref(&after),
                    now,
                ));
            }
            Backend::Sqlite => {
                statements.push(sql::sqlite::delete_batch(&job, Some(&after), 100, now))
            }
        }
        for statement in &statements {
            reaper_fuzz::check_statement(backend, statement, &names);
        }
    }
});
