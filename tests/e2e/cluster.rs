//! Redis Cluster: three masters with a replica each, started by the test
//! (`reaper_testkit::RedisCluster`). The queue is named with the hash tag that puts every key
//! of it — and apalis' own queue list — in one slot, so apalis' scripts and the intake run on
//! the node that holds them; the client follows `MOVED`/`ASK` and the slot map after the
//! master holding the queue is killed mid-run (the scenario of `sentinel.rs`).

use reaper_core::config::{APALIS_CLUSTER_TAG, APALIS_QUEUE_LIST, redis_cluster_slot};
use reaper_testkit::{RedisCluster, TestDatabase};
use redis::AsyncCommands;

use crate::daemon::RedisDeployment;
use crate::sentinel::{jobs_survive_a_failover, url_list};

#[tokio::test]
async fn killing_the_queue_s_master_mid_run_delays_jobs_but_every_one_finishes_exactly_once() {
    let cluster = RedisCluster::start();
    let nodes = cluster.urls();
    let queue = format!("{APALIS_CLUSTER_TAG}:jobs");
    let slot = redis_cluster_slot(&queue);
    assert_eq!(slot, redis_cluster_slot(APALIS_QUEUE_LIST));
    let keys = format!("cluster = {{ nodes = [{}] }}", url_list(&nodes));
    let d = RedisDeployment::at(
        TestDatabase::postgres().await,
        10_000,
        &nodes[0],
        &queue,
        &keys,
    )
    .await;
    let before = cluster.master_of(slot);
    let cluster = std::sync::Arc::new(std::sync::Mutex::new(cluster));
    let killed = cluster.clone();
    let kill = move || {
        killed
            .lock()
            .unwrap()
            .kill_master_and_wait_for_promotion(slot)
    };
    let intake = async |key: String, job: String| {
        let mut connection = redis::cluster::ClusterClient::new(nodes.clone())
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
        let _: i64 = connection.lpush(key, job).await.unwrap();
    };
    // The cluster client waits for the slot's new master and retries: the failover shows as
    // commands that wait (readiness: no answer), not as lost connections.
    jobs_survive_a_failover(&d, &queue, kill, intake).await;
    let after = cluster.lock().unwrap().master_of(slot);
    assert_ne!(
        before, after,
        "the queue's slot did not move to another node"
    );
}
