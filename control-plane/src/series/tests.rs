use super::*;

const T0: i64 = 1_800_000_000_000; // a multiple of 10 minutes

async fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap()
}

fn point(pairs: &[(&str, Metric, u64)]) -> HashMap<String, Values> {
    let mut p: HashMap<String, Values> = HashMap::new();
    p.entry("fleet".into()).or_default();
    for &(scope, m, v) in pairs {
        p.entry(scope.into()).or_default()[m.id()] = v;
    }
    p
}

fn query(scope: &str, metrics: &[Metric], from: i64, to: i64, step: Option<i64>) -> SeriesQuery {
    SeriesQuery {
        scope: scope.into(),
        metrics: metrics.to_vec(),
        from_ms: from,
        to_ms: to,
        step_ms: step,
    }
}

/// Reads `metrics` of `scope` at `now`.
async fn read(
    series: &Series,
    scope: &str,
    metrics: &[Metric],
    from: i64,
    to: i64,
    step: Option<i64>,
    now: i64,
) -> Table {
    series
        .query(&query(scope, metrics, from, to, step), now)
        .await
        .unwrap()
}

/// Closes the 10 s buckets of `minutes` minutes from `T0`: 6 upgrades and 4 tunnels in
/// each, fleet-wide and on `node:a`.
async fn record_minutes(series: &Series, minutes: i64) {
    for i in 0..minutes * 6 {
        let t = T0 + i * 10_000;
        let p = point(&[
            ("fleet", Metric::Upgrades, 6),
            ("fleet", Metric::Tunnels, 4 + (i % 2) as u64 * 2),
            ("node:a", Metric::Upgrades, 6),
        ]);
        series.close(t, p, t + 10_000).await;
    }
}

#[tokio::test]
async fn buckets_are_read_back_as_rates_and_levels() {
    let dir = tempfile::tempdir().unwrap();
    let series = Series::new(store(&dir).await, 0, "cp");
    record_minutes(&series, 1).await;
    let now = T0 + 60_000;
    let t = read(
        &series,
        "fleet",
        &[Metric::Upgrades, Metric::Tunnels],
        T0,
        now,
        Some(10_000),
        now,
    )
    .await;
    assert_eq!(t.tier_step_ms, 10_000);
    assert_eq!(t.times.len(), 6);
    assert_eq!(t.columns[0].1[0], Some(0.6), "6 upgrades in 10 s");
    assert_eq!(t.columns[1].1[0], Some(4.0));
    assert_eq!(t.columns[1].1[1], Some(6.0));
    // A bucket the control plane did not record is null, not zero.
    let before = read(
        &series,
        "fleet",
        &[Metric::Upgrades],
        T0 - 20_000,
        T0 + 10_000,
        Some(10_000),
        now,
    )
    .await;
    assert_eq!(before.columns[0].1, vec![None, None, Some(0.6)]);
    // A step of 30 s over 10 s buckets: the same rate; the mean of 4, 6, 4 and 6, 4, 6.
    let wide = read(
        &series,
        "fleet",
        &[Metric::Upgrades, Metric::Tunnels],
        T0,
        now,
        Some(30_000),
        now,
    )
    .await;
    assert_eq!(wide.columns[0].1, vec![Some(0.6), Some(0.6)]);
    assert_eq!(wide.columns[1].1, vec![Some(14.0 / 3.0), Some(16.0 / 3.0)]);
}

#[tokio::test]
async fn coarser_tiers_are_folded_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let series = Series::new(store(&dir).await, 0, "cp");
    // The first fold starts at the bucket before the first close: the minutes from T0.
    record_minutes(&series, 5).await;
    drop(series);
    // A new process on the same database continues where the tiers were.
    let series = Series::new(store(&dir).await, 0, "cp");
    for i in 30..60 {
        let t = T0 + i * 10_000;
        series
            .close(t, point(&[("fleet", Metric::Upgrades, 6)]), t + 10_000)
            .await;
    }
    let rows = series
        .store
        .read_series(1, (Some("fleet"), None), T0, T0 + 600_000)
        .await
        .unwrap();
    let times: Vec<i64> = rows.iter().map(|r| r.t - T0).collect();
    assert_eq!(times, (0..10).map(|m| m * 60_000).collect::<Vec<_>>());
    for r in &rows {
        assert_eq!(
            metric::unpack(&r.vals)[Metric::Upgrades.id()],
            36,
            "6 × 6 per minute"
        );
    }
    // The mean of 4 and 6 tunnels, over the first five minutes.
    assert_eq!(metric::unpack(&rows[0].vals)[Metric::Tunnels.id()], 5);
    // The 10-minute tier closed at T0 + 10 min from the minute tier.
    let ten = series
        .store
        .read_series(2, (Some("fleet"), None), T0, T0)
        .await
        .unwrap();
    assert_eq!(metric::unpack(&ten[0].vals)[Metric::Upgrades.id()], 360);
    // A query over weeks reads the 10-minute tier.
    let now = T0 + 600_000;
    let t = read(
        &series,
        "fleet",
        &[Metric::Upgrades],
        now - 30 * DAY,
        now,
        None,
        now,
    )
    .await;
    assert_eq!(t.tier_step_ms, 10 * MINUTE);
    assert_eq!(t.columns[0].1.iter().flatten().count(), 1);
    assert_eq!(t.columns[0].1.iter().flatten().next(), Some(&0.6));
}

#[tokio::test]
async fn retention_drops_old_points_and_node_scopes_sooner() {
    let dir = tempfile::tempdir().unwrap();
    let series = Series::new(store(&dir).await, 0, "cp");
    record_minutes(&series, 2).await;
    let count = |tier: u8, scope: &'static str| {
        let store = series.store.clone();
        async move {
            store
                .read_series(tier, (Some(scope), None), 0, i64::MAX)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(count(0, "node:a").await, 12);
    // Two hours later: node scopes are past their hour in tier 0, the fleet is not.
    let later = T0 + 2 * HOUR;
    series.close(later - 10_000, point(&[]), later).await;
    assert_eq!(count(0, "node:a").await, 0);
    assert_eq!(count(0, "fleet").await, 13);
    // Seven hours later the fleet's first 10 s points went too (the one at two hours
    // and the new one stay); its minutes stay.
    let later = T0 + 7 * HOUR;
    series.close(later - 10_000, point(&[]), later).await;
    assert_eq!(count(0, "fleet").await, 2);
    assert!(count(1, "fleet").await >= 2);
}

#[tokio::test]
async fn queries_are_bounded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let series = Series::new(store(&dir).await, 0, "cp");
    let now = T0;
    let err = series
        .query(
            &query(
                "fleet",
                &[Metric::Tunnels],
                now - 30 * DAY,
                now,
                Some(10_000),
            ),
            now,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SeriesError::BadQuery { field: "step", .. }),
        "{err}"
    );
    let err = series
        .query(&query("fleet", &[Metric::Tunnels], now, now - 1, None), now)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SeriesError::BadQuery { field: "to", .. }),
        "{err}"
    );
}

/// Two replicas on one database each record their own nodes: a reader on either adds
/// them up, and a bucket both recorded counts once (rates and levels are not halved).
#[tokio::test]
async fn the_points_of_several_replicas_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let (a, b) = (
        Series::new(store.clone(), 0, "cp-a"),
        Series::new(store.clone(), 0, "cp-b"),
    );
    for i in 0..12 {
        let t = T0 + i * 10_000;
        let pa = point(&[
            ("fleet", Metric::Upgrades, 6),
            ("fleet", Metric::Tunnels, 4),
        ]);
        let pb = point(&[
            ("fleet", Metric::Upgrades, 4),
            ("fleet", Metric::Tunnels, 6),
        ]);
        a.close(t, pa, t + 10_000).await;
        b.close(t, pb, t + 10_000).await;
    }
    let now = T0 + 120_000;
    for series in [&a, &b] {
        let t = read(
            series,
            "fleet",
            &[Metric::Upgrades, Metric::Tunnels],
            T0,
            now,
            Some(10_000),
            now,
        )
        .await;
        assert_eq!(t.columns[0].1[0], Some(1.0), "10 upgrades in 10 s");
        assert_eq!(t.columns[1].1[0], Some(10.0), "4 + 6 tunnels");
        // The minute tier: each replica folded its own.
        let t = read(
            series,
            "fleet",
            &[Metric::Upgrades, Metric::Tunnels],
            T0,
            T0 + 119_999,
            Some(60_000),
            now,
        )
        .await;
        assert_eq!(t.tier_step_ms, 60_000);
        assert_eq!(t.columns[0].1[0], Some(1.0));
        assert_eq!(t.columns[1].1[0], Some(10.0));
    }
}
