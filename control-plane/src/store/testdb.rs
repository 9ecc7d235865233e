//! Databases for tests: a fresh SQLite file always, and a fresh PostgreSQL database when
//! `SLUICE_TEST_POSTGRES` names a server (an admin URL such as
//! `postgres://postgres@127.0.0.1:5433/postgres`; the test command starts one). With
//! `SLUICE_REQUIRE_POSTGRES=1` a missing server fails the test instead of leaving
//! PostgreSQL untested.

use sqlx::AnyPool;
use sqlx::Executor;

/// One database to run a test against.
pub struct TestDb {
    pub url: String,
    pub name: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// A new, empty database of each kind available.
pub async fn each() -> Vec<TestDb> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut out = vec![TestDb {
        url: dir.path().join("t.db").display().to_string(),
        name: "sqlite",
        _dir: Some(dir),
    }];
    match std::env::var("SLUICE_TEST_POSTGRES") {
        Ok(admin) if !admin.is_empty() => out.push(postgres(&admin).await),
        _ => assert!(
            std::env::var_os("SLUICE_REQUIRE_POSTGRES").is_none(),
            "SLUICE_REQUIRE_POSTGRES is set but SLUICE_TEST_POSTGRES names no server"
        ),
    }
    out
}

/// A new database on the server at `admin`.
pub async fn postgres(admin: &str) -> TestDb {
    sqlx::any::install_default_drivers();
    let name = format!("sluice_test_{:016x}", rand::random::<u64>());
    let pool = AnyPool::connect(admin)
        .await
        .expect("the PostgreSQL test server");
    pool.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("creating a test database");
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database name");
    TestDb {
        url: format!("{base}/{name}"),
        name: "postgres",
        _dir: None,
    }
}
