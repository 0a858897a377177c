//! An idle runtime costs no CPU: after writes, nothing polls or spins
//! while no new work comes. (A binary of its own: the process's CPU time
//! is the measure, so no other test may run beside it.)

mod common;

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeValLike;
use resilite::{Statement, Synchronous};

use common::{insert, start_with};

/// User and system CPU time used by this process so far.
fn cpu_used() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let used = usage.user_time() + usage.system_time();
    Duration::from_micros(used.num_microseconds() as u64)
}

/// At `synchronous = NORMAL` each commit is quick, so after each one the
/// writer's connection thread polls for its next write before it sleeps.
/// After a burst of such writes, a runtime left alone for a second uses
/// almost no CPU: every thread went to sleep (a thread left polling would
/// use most of a core).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_runtime_sleeps_after_a_burst_of_quick_writes() {
    let t = start_with(|c| c.database.synchronous = Synchronous::Normal).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    for v in 0..500 {
        t.rt.execute(insert("t", v)).await.unwrap();
    }
    // Let the checkpoint threads and the startup checks settle.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = cpu_used();
    let idle = Duration::from_secs(1);
    tokio::time::sleep(idle).await;
    let used = cpu_used() - before;
    assert!(
        used < Duration::from_millis(100),
        "the idle runtime used {used:?} of CPU in {idle:?}: some thread is busy while nothing is sent"
    );
}
