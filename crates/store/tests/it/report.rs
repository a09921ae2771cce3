//! `Store::usage`: cost and GPU time per group over a window, exact, with
//! live allocations accrued up to `now`.

use warden_core::{GpuModel, TeamName, Usd};
use warden_store::{
    AllocationRequest, EndTarget, GroupBy, GroupKey, GroupUsage, Store, UnixMicros, UsageQuery,
    COST_SCALE,
};

use crate::support::{at, granted, launch, on_both_backends};

const HOUR: i64 = 3600;

fn team(name: &str) -> TeamName {
    TeamName::parse(name).unwrap()
}

fn model(name: &str) -> Option<GpuModel> {
    Some(GpuModel::parse(name).unwrap())
}

/// Records `req` as running over [start, end) (`None`: still live).
async fn ran(store: &Store, req: AllocationRequest, start: i64, end: Option<i64>) {
    let id = granted(store.reserve(&req, &[], at(start)).await.unwrap());
    if let Some(end) = end {
        store.end(&EndTarget::Id(id), at(end)).await.unwrap();
    }
}

/// The window [10 h, 20 h) sees, at $3/GPU/hour unless said otherwise:
///
/// - `a`: ml/alice, 2 H100, 8 h to 12 h (started before, ended inside): 2 h.
/// - `b`: ml/bob, 1 A100, 11 h to 13 h (inside): 2 h.
/// - `c`: ml/alice, 1 H100, from 9 h, live (started before, live): to `now`.
/// - `d`: cv/carol, 4 H100, from 19.5 h, live (started inside, live).
/// - `e1`, `e2`: cv, no user, no GPU, $1/h, one second each at 15 h and
///   16 h: $0.000277(7) each, $0.000555(5) together.
///
/// and not: `f` (after), `g` (before), `h` (ends as the window starts),
/// `i` (starts as it ends).
async fn seed(store: &Store) {
    ran(
        store,
        launch("ml", Some("alice"), "a", Some("H100"), 2),
        8 * HOUR,
        Some(12 * HOUR),
    )
    .await;
    ran(
        store,
        launch("ml", Some("bob"), "b", Some("A100"), 1),
        11 * HOUR,
        Some(13 * HOUR),
    )
    .await;
    ran(
        store,
        launch("ml", Some("alice"), "c", Some("H100"), 1),
        9 * HOUR,
        None,
    )
    .await;
    ran(
        store,
        launch("cv", Some("carol"), "d", Some("H100"), 4),
        39 * HOUR / 2,
        None,
    )
    .await;
    for (name, start) in [("e1", 15 * HOUR), ("e2", 16 * HOUR)] {
        let req = AllocationRequest {
            hourly: Usd::from_micros(1_000_000),
            ..launch("cv", None, name, None, 0)
        };
        ran(store, req, start, Some(start + 1)).await;
    }
    ran(
        store,
        launch("ml", Some("alice"), "f", Some("H100"), 1),
        21 * HOUR,
        Some(22 * HOUR),
    )
    .await;
    ran(
        store,
        launch("ml", Some("alice"), "g", Some("H100"), 1),
        5 * HOUR,
        Some(9 * HOUR),
    )
    .await;
    ran(
        store,
        launch("ml", Some("alice"), "h", Some("H100"), 1),
        9 * HOUR,
        Some(10 * HOUR),
    )
    .await;
    ran(
        store,
        launch("cv", Some("carol"), "i", Some("H100"), 1),
        20 * HOUR,
        None,
    )
    .await;
}

async fn usage(
    store: &Store,
    by: GroupBy,
    team: Option<&TeamName>,
    now: UnixMicros,
) -> Vec<GroupUsage> {
    let q = UsageQuery {
        from: at(10 * HOUR),
        to: at(20 * HOUR),
        now,
        by,
        team,
    };
    store.usage(&q).await.unwrap()
}

/// (key, allocations, spend in micro-dollars, GPU-hours × 100).
fn summary(groups: &[GroupUsage]) -> Vec<(GroupKey, u64, i64, i128)> {
    groups
        .iter()
        .map(|g| {
            // GPU time is whole hundredths of an hour here; check that too.
            assert_eq!(g.gpu_micros % (COST_SCALE / 100), 0, "{g:?}");
            (
                g.key.clone(),
                g.allocations,
                g.spend().micros(),
                g.gpu_micros * 100 / COST_SCALE,
            )
        })
        .collect()
}

on_both_backends! {
    /// Per team, user and GPU model: ended allocations count their overlap
    /// with the window, live ones up to `now` (here after the window), and
    /// each group is rounded down once.
    async fn usage_groups_by_team_user_and_model(db: &TestDb) {
        let store = db.store().await;
        seed(&store).await;
        let now = at(30 * HOUR);
        let (ml, cv) = (team("ml"), team("cv"));

        // ml: a $12 + b $6 + c $30 (10 h); cv: d $6 (0.5 h at $12/h) plus
        // 555 micro-dollars (not 277 + 277).
        assert_eq!(
            summary(&usage(&store, GroupBy::Team, None, now).await),
            [
                (GroupKey::Team { team: cv.clone() }, 3, 6_000_555, 200),
                (GroupKey::Team { team: ml.clone() }, 3, 48_000_000, 1600),
            ]
        );
        let user = |team: &TeamName, user: Option<&str>| GroupKey::User {
            team: team.clone(),
            user: user.map(str::to_owned),
        };
        assert_eq!(
            summary(&usage(&store, GroupBy::User, None, now).await),
            [
                (user(&cv, None), 2, 555, 0),
                (user(&cv, Some("carol")), 1, 6_000_000, 200),
                (user(&ml, Some("alice")), 2, 42_000_000, 1400),
                (user(&ml, Some("bob")), 1, 6_000_000, 200),
            ]
        );
        let gpu = |m: Option<&str>| GroupKey::GpuModel { gpu_model: m.and_then(model) };
        assert_eq!(
            summary(&usage(&store, GroupBy::GpuModel, None, now).await),
            [
                (gpu(None), 2, 555, 0),
                (gpu(Some("A100")), 1, 6_000_000, 200),
                (gpu(Some("H100")), 3, 48_000_000, 1600),
            ]
        );
        // One team only.
        let line = |t: &TeamName, m: Option<&str>| GroupKey::TeamGpuModel {
            team: t.clone(),
            gpu_model: m.and_then(model),
        };
        assert_eq!(
            summary(&usage(&store, GroupBy::TeamGpuModel, Some(&ml), now).await),
            [
                (line(&ml, Some("A100")), 1, 6_000_000, 200),
                (line(&ml, Some("H100")), 2, 42_000_000, 1400),
            ]
        );
        // An empty or reversed window, and a team with nothing.
        let empty = UsageQuery {
            from: at(20 * HOUR),
            to: at(10 * HOUR),
            now,
            by: GroupBy::Team,
            team: None,
        };
        assert_eq!(store.usage(&empty).await.unwrap(), []);
        assert_eq!(usage(&store, GroupBy::Team, Some(&team("nlp")), now).await, []);
    }

    /// Before the window is over, live allocations have accrued only up to
    /// `now`, and one that starts after `now` has cost nothing yet: the
    /// period-to-date spend a budget check counts, equal to `Store::spend`
    /// up to `now`.
    async fn live_allocations_accrue_up_to_now(db: &TestDb) {
        let store = db.store().await;
        seed(&store).await;
        let ml = team("ml");
        // At 15 h: a $12, b $6, c 5 h = $15.
        let now = at(15 * HOUR);
        let groups = usage(&store, GroupBy::Team, Some(&ml), now).await;
        assert_eq!(summary(&groups), [(GroupKey::Team { team: ml.clone() }, 3, 33_000_000, 1100)]);
        assert_eq!(groups[0].spend(), store.spend(&ml, at(10 * HOUR), now).await.unwrap());
        // At 19.75 h cv's d has run a quarter of an hour ($3); i has not
        // started (e1, e2 are over).
        let cv = team("cv");
        let groups = usage(&store, GroupBy::Team, Some(&cv), at(79 * HOUR / 4)).await;
        assert_eq!(summary(&groups), [(GroupKey::Team { team: cv.clone() }, 3, 3_000_555, 100)]);
    }

    /// Once the window is over, each team's usage is exactly its spend, and
    /// grouping finer never changes the exact sums: chargeback lines (team
    /// and model) add up to their team, and teams to the whole.
    async fn finer_groups_add_up_exactly(db: &TestDb) {
        let store = db.store().await;
        seed(&store).await;
        let now = at(30 * HOUR);
        let teams = usage(&store, GroupBy::Team, None, now).await;
        let lines = usage(&store, GroupBy::TeamGpuModel, None, now).await;
        let users = usage(&store, GroupBy::User, None, now).await;
        for t in &teams {
            let team = t.key.team().unwrap();
            let spend = store.spend(team, at(10 * HOUR), at(20 * HOUR)).await.unwrap();
            assert_eq!(t.spend(), spend, "{team}");
            for finer in [&lines, &users] {
                let mine: Vec<_> = finer.iter().filter(|g| g.key.team() == Some(team)).collect();
                assert_eq!(mine.iter().map(|g| g.cost_scaled).sum::<i128>(), t.cost_scaled);
                assert_eq!(mine.iter().map(|g| g.gpu_micros).sum::<i128>(), t.gpu_micros);
                assert_eq!(mine.iter().map(|g| g.allocations).sum::<u64>(), t.allocations);
            }
        }
        let models = usage(&store, GroupBy::GpuModel, None, now).await;
        let total = |groups: &[GroupUsage]| groups.iter().map(|g| g.cost_scaled).sum::<i128>();
        assert_eq!(total(&models), total(&teams));
        assert_eq!(total(&lines), total(&teams));
    }
}
