//! Listing accesses by subject and by agency (ListAccesses): the scope's
//! entries and no others, newest first, each once across pages (ties on the
//! time included), entries written before migration 0007 as well as after,
//! and through the scope's index rather than a scan of the trail.

use crate::{
    AuditLog, Backend, Database,
    audit::{AccessScope, AuditEntry, accesses_sql},
    test_databases::{TempPostgres, temp_sqlite},
};

/// (chain, at_us, caller, subject). Agency `taxes` starts with `tax`, a
/// careless prefix filter would mix them; `portal` is no agency system;
/// several entries share a microsecond, in both chains.
const ENTRIES: [(&str, i64, &str, &str); 12] = [
    ("a", 10, "agency/tax/system/collector", "s1"),
    ("a", 11, "agency/taxes/system/collector", "s1"),
    ("a", 12, "agency/egov/system/portal", "s2"),
    ("a", 12, "agency/tax/system/auditor", "s1"),
    ("a", 12, "agency/tax/system/collector", "s2"),
    ("a", 13, "portal", "s1"),
    ("b", 12, "agency/tax/system/collector", "s1"),
    ("b", 12, "agency/taxes/system/x", "s2"),
    ("b", 14, "agency/tax/system/collector", "s1"),
    ("b", 15, "agency/egov/system/portal", "s1"),
    ("b", 15, "agency/tax/system/y", "s2"),
    ("b", 16, "agency/tax/system/collector", "s1"),
];

/// The first six are written on the schema before migration 0007.
const BEFORE_0007: usize = 6;

fn entry(at_us: i64, caller: &str, subject: &str) -> AuditEntry {
    AuditEntry {
        at_us,
        caller: caller.to_string(),
        subject_id: subject.to_string(),
        record_type: "birth_certificate".to_string(),
        purpose: "test".to_string(),
        fields: "*".to_string(),
        decision: "allowed".to_string(),
        reason: String::new(),
        request_id: format!("req-{at_us}"),
        trace_id: String::new(),
        records: 1,
    }
}

/// Appends `entries` to their chains with the trail's own writer.
async fn append(log: &AuditLog, entries: &[(&str, i64, &str, &str)]) {
    let mut appender = log.appender();
    for chain in ["a", "b"] {
        let of_chain: Vec<AuditEntry> = entries
            .iter()
            .filter(|(c, ..)| *c == chain)
            .map(|&(_, at, caller, subject)| entry(at, caller, subject))
            .collect();
        let head = log.head(chain).await.expect("head");
        appender
            .append(chain, head, of_chain)
            .await
            .expect("append");
    }
}

/// (at_us, chain, seq) of every entry of `scope`, page by page.
async fn every_page(log: &AuditLog, scope: &AccessScope, size: i64) -> Vec<(i64, String, i64)> {
    let mut listed = Vec::new();
    let mut before = None;
    loop {
        let page = log.accesses(scope, before, size).await.expect("page");
        assert!(page.len() as i64 <= size, "a page holds at most its size");
        let Some(last) = page.last() else {
            return listed;
        };
        before = Some((last.entry.at_us, last.chain.clone(), last.seq));
        listed.extend(page.iter().map(|e| (e.entry.at_us, e.chain.clone(), e.seq)));
    }
}

/// What the scope must list, from `ENTRIES` alone: an agency's callers are
/// `agency/<agency>/system/…` (the filter before migration 0007).
fn expected(scope: &AccessScope) -> Vec<(i64, String, i64)> {
    let mut seqs = std::collections::HashMap::new();
    let mut all: Vec<_> = ENTRIES
        .iter()
        .map(|&(chain, at, caller, subject)| {
            let seq = seqs.entry(chain).or_insert(0);
            *seq += 1;
            (at, chain.to_string(), *seq, caller, subject)
        })
        .filter(|(.., caller, subject)| match scope {
            AccessScope::Subject(s) => subject == s,
            AccessScope::Agency(a) => caller.starts_with(&format!("agency/{a}/system/")),
        })
        .map(|(at, chain, seq, ..)| (at, chain, seq))
        .collect();
    all.sort_by(|x, y| y.cmp(x));
    all
}

async fn lists_each_scope_across_pages(url: &str) {
    let db = Database::connect(url).await.expect("database");
    let migrations = match db.backend {
        Backend::Sqlite => &crate::showcase::SQLITE_MIGRATIONS,
        Backend::Postgres => &crate::showcase::POSTGRES_MIGRATIONS,
    };
    migrations.run_to(6, &db.pool).await.expect("old schema");
    append(&AuditLog::new(db.clone()), &ENTRIES[..BEFORE_0007]).await;
    db.close().await;

    let log = AuditLog::open(url).await.expect("migrated");
    append(&log, &ENTRIES[BEFORE_0007..]).await;
    for scope in [
        AccessScope::Agency("tax".into()),
        AccessScope::Agency("taxes".into()),
        AccessScope::Agency("egov".into()),
        AccessScope::Agency("nobody".into()),
        AccessScope::Subject("s1".into()),
        AccessScope::Subject("s2".into()),
    ] {
        let expected = expected(&scope);
        for size in [1, 2, 3, 100] {
            assert_eq!(
                every_page(&log, &scope, size).await,
                expected,
                "{scope:?} in pages of {size}"
            );
        }
    }
    assert_eq!(expected(&AccessScope::Agency("tax".into())).len(), 7);
}

#[tokio::test]
async fn sqlite_lists_accesses_by_scope_across_pages() {
    let (_dir, url) = temp_sqlite("audit.db");
    lists_each_scope_across_pages(&url).await;
}

#[tokio::test]
async fn postgres_lists_accesses_by_scope_across_pages() {
    let Some(database) = TempPostgres::create("audit_scope").await else {
        return;
    };
    lists_each_scope_across_pages(&database.url).await;
    database.drop().await;
}

/// SQLite's plan for a later page of each scope: a search of the scope's
/// index bounded by the time, never a scan of the trail.
#[tokio::test]
async fn sqlite_pages_accesses_through_the_scope_index() {
    let (_dir, url) = temp_sqlite("audit.db");
    let log = AuditLog::open(&url).await.expect("audit");
    append(&log, &ENTRIES).await;
    let db = Database::connect(&url).await.expect("database");
    for (scope, search) in [
        (
            AccessScope::Agency("tax".into()),
            "SEARCH audit_log USING INDEX audit_by_agency (agency=? AND at_us<?)",
        ),
        (
            AccessScope::Subject("s1".into()),
            "SEARCH audit_log USING INDEX audit_by_subject (subject_id=? AND at_us<?)",
        ),
    ] {
        let sql = format!("EXPLAIN QUERY PLAN {}", accesses_sql(&scope, true));
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(scope.value())
            .bind(14i64)
            .bind("b")
            .bind(3i64)
            .bind(10i64)
            .fetch_all(&db.pool)
            .await
            .expect("plan");
        let steps: Vec<&str> = plan.iter().map(|(.., detail)| detail.as_str()).collect();
        assert!(steps.contains(&search), "{scope:?}: {steps:?}");
        assert!(
            !steps.iter().any(|s| s.starts_with("SCAN")),
            "{scope:?}: {steps:?}"
        );
    }
}

/// PostgreSQL's plan for a later page, with sequential scans priced out (a
/// test's table is small enough to be read whole): the page starts at its
/// place in the scope's index, bounded by the time.
#[tokio::test]
async fn postgres_pages_accesses_through_the_scope_index() {
    let Some(database) = TempPostgres::create("audit_plan").await else {
        return;
    };
    let log = AuditLog::open(&database.url).await.expect("audit");
    append(&log, &ENTRIES).await;
    let db = Database::connect(&database.url).await.expect("database");
    let mut conn = db.detached().await.expect("connection");
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut conn)
        .await
        .expect("set");
    for (scope, index) in [
        (AccessScope::Agency("tax".into()), "audit_by_agency"),
        (AccessScope::Subject("s1".into()), "audit_by_subject"),
    ] {
        let sql = format!("EXPLAIN {}", accesses_sql(&scope, true));
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(scope.value())
            .bind(14i64)
            .bind("b")
            .bind(3i64)
            .bind(10i64)
            .fetch_all(&mut conn)
            .await
            .expect("plan");
        let plan = plan.join("\n");
        assert!(plan.contains(&format!("using {index}")), "{plan}");
        assert!(
            plan.contains("Index Cond") && plan.contains("(at_us <= "),
            "{plan}"
        );
    }
    database.drop().await;
}
