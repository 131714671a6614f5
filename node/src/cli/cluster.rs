//! `cairn cluster add-node ID ADDR` and `cairn cluster remove-node ID`: membership changes,
//! made by the leader (the client finds it and follows leader changes).

use std::process::ExitCode;

use cairn_client::Membership;
use cairn_node::address::check_host_port;
use clap::{Args, Subcommand};

use super::output::{fail, usage};
use super::ClientOptions;

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Add a running node: it joins as a learner, catches up, then becomes a voter.
    AddNode(AddNodeArgs),
    /// Remove a node (a leader hands leadership over first).
    RemoveNode(RemoveNodeArgs),
}

#[derive(Args, Debug)]
pub struct AddNodeArgs {
    /// The new node's id (the --id it was started with).
    pub id: String,
    /// HOST:PORT at which the other members reach it (its entry in --peers).
    pub addr: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct RemoveNodeArgs {
    /// The id of the node to remove.
    pub id: String,
    /// Allow leaving fewer than three voters (a cluster of two stops if either fails).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// A node id, checked here rather than by clap so that a mistake is one line on stderr.
fn parse_id(id: &str) -> Result<u64, String> {
    id.trim()
        .parse()
        .map_err(|_| format!("ID: {id:?} is not a node id (a number)"))
}

fn ids(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "none".to_owned();
    }
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn print(done: &str, membership: &Membership, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "voters": membership.voters,
                "learners": membership.learners,
                "unchanged": membership.unchanged,
                "leader_id": membership.leader_id,
            })
        );
    } else {
        let note = if membership.unchanged {
            " (already so: nothing changed)"
        } else {
            ""
        };
        println!(
            "{done}{note}: voters {}; learners {}; leader node {}",
            ids(&membership.voters),
            ids(&membership.learners),
            membership.leader_id
        );
    }
}

pub async fn run(args: ClusterArgs) -> ExitCode {
    match args.command {
        ClusterCommand::AddNode(args) => add_node(args).await,
        ClusterCommand::RemoveNode(args) => remove_node(args).await,
    }
}

async fn add_node(args: AddNodeArgs) -> ExitCode {
    let id = match parse_id(&args.id) {
        Ok(id) => id,
        Err(e) => return usage(e),
    };
    let addr = args.addr.trim();
    if let Err(e) = check_host_port("ADDR", addr) {
        return usage(e);
    }
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.add_node(id, addr).await {
        Ok(membership) => {
            print(
                &format!("added node {id} at {addr}"),
                &membership,
                args.client.json,
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn remove_node(args: RemoveNodeArgs) -> ExitCode {
    let id = match parse_id(&args.id) {
        Ok(id) => id,
        Err(e) => return usage(e),
    };
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let removed = if args.force {
        client.force_remove_node(id).await
    } else {
        client.remove_node(id).await
    };
    match removed {
        Ok(membership) => {
            print(&format!("removed node {id}"), &membership, args.client.json);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
