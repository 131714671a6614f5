//! `cairn user add|remove|list|passwd`, `cairn token create|revoke|list`, `cairn grant` and
//! `cairn revoke` (to a user, or with `--role` to a role), `cairn role
//! add|remove|list|assign|unassign`: users, tokens, roles and grants (admins only). `token
//! create` prints the new token alone on stdout, so `TOKEN=$(cairn token create --user app)`
//! works.

use std::io::Read;
use std::process::ExitCode;

use cairn_client::proto::auth_change_request::Change;
use cairn_client::proto::{self, AddUser, CreateToken, GrantChange, RoleMember, SetPassword};
use clap::{Args, Subcommand};

use super::output::{fail, usage};
use super::ClientOptions;

/// Longest password read from stdin (`--new-password-stdin`); the node refuses longer ones.
pub const MAX_PASSWORD_STDIN_BYTES: u64 = 1_024;

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (without grants; `cairn grant` gives them). Without a password, the user
    /// signs in with tokens only.
    Add(UserPasswordArgs),
    /// Remove a user, its tokens and grants (never the last admin).
    Remove(UserNameArgs),
    /// List users and their grants.
    List(ListArgs),
    /// Set a user's password.
    Passwd(UserPasswordArgs),
}

#[derive(Args, Debug)]
pub struct UserNameArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct UserPasswordArgs {
    pub name: String,
    /// The user's new password (8 to 1,024 bytes). Prefer --new-password-stdin: a flag shows
    /// in the process list.
    #[arg(long, env = "CAIRN_NEW_PASSWORD", hide_env_values = true)]
    pub new_password: Option<String>,
    /// Read the new password from stdin (its first line).
    #[arg(long)]
    pub new_password_stdin: bool,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token for a user; prints the token alone (shown once: only its hash is kept).
    Create(TokenCreateArgs),
    /// Revoke a token by its id (`cairn token list`); every node refuses it within a second.
    Revoke(TokenRevokeArgs),
    /// List tokens: id, user, created, expires (never the token).
    List(ListArgs),
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    #[arg(long)]
    pub user: String,
    /// The token stops working after this many seconds (default: never).
    #[arg(long, value_name = "SECONDS")]
    pub expires_in: Option<u64>,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct TokenRevokeArgs {
    pub id: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    /// The user (with --role: the role) the grant goes to or is taken from.
    #[arg(value_name = "USER")]
    pub grantee: String,
    /// The grantee is a role: every user assigned it holds the grant.
    #[arg(long)]
    pub role: bool,
    /// read, write, delete (metadata and deletes), groups, or admin.
    pub action: String,
    /// Stream-name prefix ('orders-'), '$all', '$ce-', '$et-', '$tag-', '$dcb', or '*' for
    /// every name (admin: only '*').
    pub prefix: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

fn new_password(args: &UserPasswordArgs, required: bool) -> Result<String, String> {
    match (&args.new_password, args.new_password_stdin) {
        (Some(_), true) => Err("give --new-password or --new-password-stdin, not both".into()),
        (Some(p), false) => Ok(p.clone()),
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_PASSWORD_STDIN_BYTES + 2)
                .read_to_string(&mut text)
                .map_err(|e| format!("reading the password from stdin: {e}"))?;
            Ok(text.lines().next().unwrap_or("").to_owned())
        }
        (None, false) if required => {
            Err("a password is needed: --new-password-stdin or --new-password".into())
        }
        (None, false) => Ok(String::new()),
    }
}

async fn change(
    client: &ClientOptions,
    change: Change,
) -> Result<proto::AuthChangeResponse, ExitCode> {
    let connected = super::connect(client).await?;
    connected.change_auth(change).await.map_err(|e| fail(&e))
}

fn done(client: &ClientOptions, what: &str) -> ExitCode {
    if client.json {
        println!("{}", serde_json::json!({ "done": what }));
    } else {
        println!("{what}");
    }
    ExitCode::SUCCESS
}

pub async fn user(args: UserArgs) -> ExitCode {
    match args.command {
        UserCommand::Add(args) => {
            let password = match new_password(&args, false) {
                Ok(p) => p,
                Err(e) => return usage(e),
            };
            let add = Change::AddUser(AddUser {
                user: args.name.clone(),
                password,
            });
            match change(&args.client, add).await {
                Ok(_) => done(&args.client, &format!("user {} added", args.name)),
                Err(code) => code,
            }
        }
        UserCommand::Passwd(args) => {
            let password = match new_password(&args, true) {
                Ok(p) => p,
                Err(e) => return usage(e),
            };
            let set = Change::SetPassword(SetPassword {
                user: args.name.clone(),
                password,
            });
            match change(&args.client, set).await {
                Ok(_) => done(&args.client, &format!("password of {} set", args.name)),
                Err(code) => code,
            }
        }
        UserCommand::Remove(args) => {
            match change(&args.client, Change::RemoveUser(args.name.clone())).await {
                Ok(_) => done(&args.client, &format!("user {} removed", args.name)),
                Err(code) => code,
            }
        }
        UserCommand::List(args) => list(args, true).await,
    }
}

pub async fn token(args: TokenArgs) -> ExitCode {
    match args.command {
        TokenCommand::Create(args) => {
            let create = Change::CreateToken(CreateToken {
                user: args.user.clone(),
                expires_in_secs: args.expires_in.unwrap_or(0),
            });
            match change(&args.client, create).await {
                Ok(created) => {
                    if args.client.json {
                        println!(
                            "{}",
                            serde_json::json!({ "token": created.token, "id": created.token_id })
                        );
                    } else {
                        println!("{}", created.token);
                    }
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        TokenCommand::Revoke(args) => {
            match change(&args.client, Change::RevokeToken(args.id.clone())).await {
                Ok(_) => done(&args.client, &format!("token {} revoked", args.id)),
                Err(code) => code,
            }
        }
        TokenCommand::List(args) => list(args, false).await,
    }
}

fn grant_change(args: &GrantArgs) -> GrantChange {
    let (user, role) = if args.role {
        (String::new(), args.grantee.clone())
    } else {
        (args.grantee.clone(), String::new())
    };
    GrantChange {
        user,
        action: args.action.clone(),
        prefix: args.prefix.clone(),
        role,
    }
}

/// How a grant's holder is named in what the command prints.
fn grantee(args: &GrantArgs) -> String {
    if args.role {
        format!("role {}", args.grantee)
    } else {
        args.grantee.clone()
    }
}

pub async fn grant(args: GrantArgs) -> ExitCode {
    match change(&args.client, Change::Grant(grant_change(&args))).await {
        Ok(_) => done(
            &args.client,
            &format!(
                "granted {} {} {:?}",
                grantee(&args),
                args.action,
                args.prefix
            ),
        ),
        Err(code) => code,
    }
}

pub async fn revoke(args: GrantArgs) -> ExitCode {
    match change(&args.client, Change::Revoke(grant_change(&args))).await {
        Ok(_) => done(
            &args.client,
            &format!(
                "revoked {} {} {:?}",
                grantee(&args),
                args.action,
                args.prefix
            ),
        ),
        Err(code) => code,
    }
}

#[derive(Args, Debug)]
pub struct RoleArgs {
    #[command(subcommand)]
    pub command: RoleCommand,
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Add a role (without grants; `cairn grant --role ROLE ACTION PREFIX` gives them).
    Add(RoleNameArgs),
    /// Remove a role and take it from every user (refused if that leaves no admin).
    Remove(RoleNameArgs),
    /// List roles, their grants and the users assigned them.
    List(ListArgs),
    /// Assign USER the role: the user holds the role's grants as its own.
    Assign(RoleMemberArgs),
    /// Take the role from USER (refused if that leaves no admin).
    Unassign(RoleMemberArgs),
}

#[derive(Args, Debug)]
pub struct RoleNameArgs {
    pub role: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct RoleMemberArgs {
    pub user: String,
    pub role: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

pub async fn role(args: RoleArgs) -> ExitCode {
    let (client, request, what) = match args.command {
        RoleCommand::List(args) => return list_roles(args).await,
        RoleCommand::Add(args) => {
            let what = format!("role {} added", args.role);
            (args.client, Change::AddRole(args.role), what)
        }
        RoleCommand::Remove(args) => {
            let what = format!("role {} removed", args.role);
            (args.client, Change::RemoveRole(args.role), what)
        }
        RoleCommand::Assign(args) => {
            let what = format!("role {} assigned to {}", args.role, args.user);
            let member = RoleMember {
                user: args.user,
                role: args.role,
            };
            (args.client, Change::AssignRole(member), what)
        }
        RoleCommand::Unassign(args) => {
            let what = format!("role {} taken from {}", args.role, args.user);
            let member = RoleMember {
                user: args.user,
                role: args.role,
            };
            (args.client, Change::UnassignRole(member), what)
        }
    };
    match change(&client, request).await {
        Ok(_) => done(&client, &what),
        Err(code) => code,
    }
}

fn grant_texts(grants: &[proto::GrantInfo]) -> Vec<String> {
    grants
        .iter()
        .map(|g| format!("{} {}", g.action, g.prefix))
        .collect()
}

fn grant_json(grants: &[proto::GrantInfo]) -> Vec<serde_json::Value> {
    grants
        .iter()
        .map(|g| serde_json::json!({ "action": g.action, "prefix": g.prefix }))
        .collect()
}

async fn list_roles(args: ListArgs) -> ExitCode {
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let listed = match client.list_auth().await {
        Ok(listed) => listed,
        Err(e) => return fail(&e),
    };
    for role in listed.roles {
        if args.client.json {
            println!(
                "{}",
                serde_json::json!({
                    "role": role.name,
                    "grants": grant_json(&role.grants),
                    "members": role.members,
                })
            );
        } else {
            println!(
                "{}  grants: {}  members: {}",
                role.name,
                grant_texts(&role.grants).join(", "),
                role.members.join(", ")
            );
        }
    }
    ExitCode::SUCCESS
}

async fn list(args: ListArgs, users: bool) -> ExitCode {
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let listed = match client.list_auth().await {
        Ok(listed) => listed,
        Err(e) => return fail(&e),
    };
    let json = args.client.json;
    if users {
        for user in listed.users {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "user": user.name,
                        "password": user.has_password,
                        "grants": grant_json(&user.grants),
                        "roles": user.roles,
                    })
                );
            } else {
                let password = if user.has_password {
                    "password"
                } else {
                    "tokens only"
                };
                let roles = if user.roles.is_empty() {
                    String::new()
                } else {
                    format!("  roles: {}", user.roles.join(", "))
                };
                println!(
                    "{}  ({password})  {}{roles}",
                    user.name,
                    grant_texts(&user.grants).join(", ")
                );
            }
        }
    } else {
        for token in listed.tokens {
            let expires = (token.expires_unix_ms > 0).then_some(token.expires_unix_ms);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": token.id,
                        "user": token.user,
                        "created_unix_ms": token.created_unix_ms,
                        "expires_unix_ms": expires,
                    })
                );
            } else {
                let expires = expires.map_or("never".to_owned(), |ms| format!("{ms} (unix ms)"));
                println!(
                    "{}  user {}  created {} (unix ms)  expires {expires}",
                    token.id, token.user, token.created_unix_ms
                );
            }
        }
    }
    ExitCode::SUCCESS
}
