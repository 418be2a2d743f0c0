//! The `switchboard` command line: serve, migrate, seed-demo, check-config,
//! and the operator's assign-number.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::config::Config;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Voice and telephony runtime for AI agents"
)]
struct Cli {
    /// Configuration file layered over the embedded defaults (default: config/local.toml if present).
    #[arg(long, short, global = true, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve SIP (UDP+TCP), RTP and the HTTP API; applies migrations first.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Create (idempotently) the demo workspace, user, agent, knowledge, trunk and number.
    SeedDemo,
    /// Load and validate the configuration, print it with secrets redacted, and exit.
    CheckConfig,
    /// As the operator: give a phone number to a workspace, taking it from
    /// the workspace that holds it if need be (tenants get 409 for that).
    AssignNumber {
        /// The number in E.164 (`+` and digits).
        e164: String,
        /// The workspace that gets it, by id or slug.
        #[arg(long)]
        workspace: String,
        /// The agent that answers it (an agent of that workspace).
        #[arg(long)]
        agent: Option<uuid::Uuid>,
        /// The trunk its calls must arrive on (a trunk of that workspace).
        #[arg(long)]
        trunk: Option<uuid::Uuid>,
        #[arg(long)]
        label: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let done = runtime.block_on(async move {
        match cli.command {
            Command::CheckConfig => {
                println!("{}", config.redacted());
                Ok(())
            }
            Command::Migrate => {
                migrated_pool(&config).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::SeedDemo => {
                let pool = migrated_pool(&config).await?;
                let report = switchboard::db::seed::seed_demo(&pool)
                    .await
                    .context("seeding the demo")?;
                println!("{report}");
                Ok(())
            }
            Command::AssignNumber {
                e164,
                workspace,
                agent,
                trunk,
                label,
            } => {
                use switchboard::api::operator;
                let e164 = switchboard::api::types::E164::parse(&e164)
                    .map_err(|why| anyhow::anyhow!("{e164}: {why}"))?;
                let pool = migrated_pool(&config).await?;
                let workspace_id = operator::find_workspace(&pool, &workspace).await?;
                let assignment = operator::NumberAssignment {
                    e164: e164.clone(),
                    workspace_id,
                    agent_id: agent,
                    sip_trunk_id: trunk,
                    label,
                };
                let done = operator::assign_number(&pool, &assignment).await?;
                match done.taken_from {
                    Some(from) => println!(
                        "{} assigned to workspace {workspace_id} (phone number {}), taken from workspace {from}",
                        e164.as_str(),
                        done.phone_number_id
                    ),
                    None => println!(
                        "{} assigned to workspace {workspace_id} (phone number {})",
                        e164.as_str(),
                        done.phone_number_id
                    ),
                }
                Ok(())
            }
            Command::Serve => switchboard::serve::run(config).await,
        }
    });
    // The drain has ended every call and written its records; blocking work
    // still running (a transcription or synthesis of a call that is gone, a
    // model still warming up) is not waited for, or the process would
    // outlive its drain by as long as that work takes.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    done
}

/// The database, connected and migrated.
async fn migrated_pool(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    let pool = switchboard::db::connect(&config.database)
        .await
        .context("connecting to PostgreSQL")?;
    switchboard::db::migrate(&pool)
        .await
        .context("applying migrations")?;
    Ok(pool)
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
