//! Real network partitions: each `cairn node` in a network namespace of its own, links cut
//! with iptables and degraded with tc, clients recording a history that the simulation's
//! checker judges. Root only (CI runs as root); elsewhere each scenario says loudly that it was
//! skipped. One scenario runs at a time; each heals within seconds and must end with every
//! node holding the same `$all` and a clean history.
//!
//! A scenario's history is kept in `target/tmp/partitions/NAME.jsonl`:
//! `cargo run -p cairn-simulation --bin cairn-sim -- --check FILE` judges it again.

mod driver;
mod netns;
mod recorder;

use std::time::Duration;

use driver::{run, MembershipChange, Roles, Scenario};
use netns::Net;

const FAULT: Duration = Duration::from_millis(3_000);

fn once(name: &'static str, nodes: u64, apply: fn(&Net, Roles) -> Result<Vec<String>, String>) {
    run(Scenario {
        name,
        nodes,
        cycles: 1,
        fault: FAULT,
        healed: Duration::ZERO,
        apply,
        clients_pinned_to_leader: false,
        membership: None,
    });
}

#[test]
fn a_leader_cut_from_its_peers_is_replaced_and_nothing_acknowledged_is_lost() {
    once("isolated-leader", 3, |net, r| {
        Ok(vec![net.isolate_from_peers(r.leader)])
    });
}

#[test]
fn a_follower_cut_from_everything_catches_up_after_the_heal() {
    once("isolated-follower", 3, |net, r| {
        Ok(vec![net.isolate(r.follower)])
    });
}

#[test]
fn a_leader_in_the_minority_of_five_commits_nothing_and_the_majority_goes_on() {
    once("minority-majority-split", 5, |net, r| {
        Ok(vec![net.split(&[r.leader, r.follower])])
    });
}

#[test]
fn a_leader_that_hears_no_follower_but_reaches_them_is_replaced() {
    once("one-way-leader-deaf", 3, |net, r| {
        Ok(vec![
            net.drop_from(r.follower, r.leader),
            net.drop_from(r.other_follower, r.leader),
        ])
    });
}

#[test]
fn followers_that_cannot_hear_the_leader_elect_another_and_lose_nothing() {
    once("one-way-leader-mute", 3, |net, r| {
        Ok(vec![
            net.drop_from(r.leader, r.follower),
            net.drop_from(r.leader, r.other_follower),
        ])
    });
}

#[test]
fn a_link_cut_between_leader_and_one_follower_only_leaves_a_working_cluster() {
    once("bridge", 3, |net, r| {
        Ok(vec![net.cut(r.leader, r.follower)])
    });
}

#[test]
fn lossy_links_on_every_node_lose_no_acknowledged_append() {
    once("lossy-links", 3, |net, _| {
        Ok((1..=3).map(|id| net.lossy(id, 20)).collect())
    });
}

#[test]
fn slow_links_on_every_node_lose_no_acknowledged_append() {
    once("slow-links", 3, |net, _| {
        Ok((1..=3).map(|id| net.throttle(id, 512, 400)).collect())
    });
}

#[test]
fn added_latency_on_every_node_loses_no_acknowledged_append() {
    once("added-latency", 3, |net, _| {
        (1..=3).map(|id| net.delay(id, 60, 30)).collect()
    });
}

#[test]
fn clients_writing_to_a_leader_cut_from_its_peers_get_no_acknowledgement_it_could_lose() {
    run(Scenario {
        name: "isolated-leader-pinned-clients",
        nodes: 3,
        cycles: 1,
        fault: FAULT,
        healed: Duration::ZERO,
        apply: |net, r| Ok(vec![net.isolate_from_peers(r.leader)]),
        clients_pinned_to_leader: true,
        membership: None,
    });
}

#[test]
fn a_flapping_link_to_the_leader_loses_nothing_and_the_cluster_settles() {
    run(Scenario {
        name: "flapping-leader-link",
        nodes: 3,
        cycles: 6,
        fault: Duration::from_millis(700),
        healed: Duration::from_millis(500),
        apply: |net, r| Ok(vec![net.isolate_from_peers(r.leader)]),
        clients_pinned_to_leader: false,
        membership: None,
    });
}

#[test]
fn each_new_leader_isolated_in_turn_loses_nothing() {
    run(Scenario {
        name: "leaders-isolated-in-turn",
        nodes: 3,
        cycles: 3,
        fault: Duration::from_millis(2_000),
        healed: Duration::from_millis(1_000),
        apply: |net, r| Ok(vec![net.isolate(r.leader)]),
        clients_pinned_to_leader: false,
        membership: None,
    });
}

#[test]
fn a_follower_removed_while_cut_off_stays_out_and_the_others_lose_nothing() {
    run(Scenario {
        name: "remove-node-during-partition",
        nodes: 4,
        cycles: 1,
        fault: FAULT,
        healed: Duration::ZERO,
        apply: |net, r| Ok(vec![net.isolate(r.other_follower)]),
        clients_pinned_to_leader: false,
        membership: Some(MembershipChange::RemoveOtherFollower),
    });
}

#[test]
fn a_node_added_while_the_leader_is_cut_off_joins_and_holds_everything() {
    run(Scenario {
        name: "add-node-during-leader-change",
        nodes: 4,
        cycles: 1,
        fault: FAULT,
        healed: Duration::ZERO,
        apply: |net, r| Ok(vec![net.isolate_from_peers(r.leader)]),
        clients_pinned_to_leader: false,
        membership: Some(MembershipChange::AddLastNode),
    });
}
