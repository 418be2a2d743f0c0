//! What only the operator of a node may do: actions outside every tenant's
//! rights, run on the service pool (which bypasses RLS) from the command
//! line, never through the tenant API. Today: assigning a phone number to a
//! workspace, the one way a number another workspace holds changes hands
//! (a tenant that claims it gets 409).

use sqlx::PgPool;
use uuid::Uuid;

use super::types::E164;

/// Which workspace gets the number, and where it routes there.
#[derive(Debug, Clone)]
pub struct NumberAssignment {
    pub e164: E164,
    pub workspace_id: Uuid,
    /// `None` keeps the agent of a number the workspace already holds.
    pub agent_id: Option<Uuid>,
    /// `None` keeps the trunk of a number the workspace already holds.
    pub sip_trunk_id: Option<Uuid>,
    pub label: Option<String>,
}

/// The number's row after the assignment, and who held it before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub phone_number_id: Uuid,
    /// The workspace the number was taken from, when it was another.
    pub taken_from: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no workspace {0}")]
    NoWorkspace(String),
    #[error("{what} {id} is not in workspace {workspace}")]
    NotInWorkspace {
        what: &'static str,
        id: Uuid,
        workspace: Uuid,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// A workspace named by id or slug.
pub async fn find_workspace(pool: &PgPool, id_or_slug: &str) -> Result<Uuid, OperatorError> {
    let found: Option<Uuid> = match Uuid::parse_str(id_or_slug) {
        Ok(id) => {
            sqlx::query_scalar("select id from workspaces where id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }
        Err(_) => {
            sqlx::query_scalar("select id from workspaces where slug = $1")
                .bind(id_or_slug)
                .fetch_optional(pool)
                .await?
        }
    };
    found.ok_or_else(|| OperatorError::NoWorkspace(id_or_slug.to_string()))
}

/// Gives the number to `a.workspace_id`. A row another workspace holds is
/// deleted (its calls keep their `to_number`; their `phone_number_id` is
/// cleared by the foreign key) and a new one is made, in one transaction
/// that locks the number's row against a concurrent claim.
pub async fn assign_number(pool: &PgPool, a: &NumberAssignment) -> Result<Assigned, OperatorError> {
    let mut tx = pool.begin().await?;
    let ws: Option<Uuid> = sqlx::query_scalar("select id from workspaces where id = $1")
        .bind(a.workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
    if ws.is_none() {
        return Err(OperatorError::NoWorkspace(a.workspace_id.to_string()));
    }
    for (what, table, id) in [
        ("agent", "agents", a.agent_id),
        ("SIP trunk", "sip_trunks", a.sip_trunk_id),
    ] {
        let Some(id) = id else { continue };
        let inside: bool = sqlx::query_scalar(&format!(
            "select exists (select 1 from {table} where id = $1 and workspace_id = $2)"
        ))
        .bind(id)
        .bind(a.workspace_id)
        .fetch_one(&mut *tx)
        .await?;
        if !inside {
            return Err(OperatorError::NotInWorkspace {
                what,
                id,
                workspace: a.workspace_id,
            });
        }
    }
    let held: Option<(Uuid, Uuid)> =
        sqlx::query_as("select id, workspace_id from phone_numbers where e164 = $1 for update")
            .bind(a.e164.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let assigned = match held {
        Some((id, ws)) if ws == a.workspace_id => {
            sqlx::query(
                "update phone_numbers set agent_id = coalesce($2, agent_id),
                        sip_trunk_id = coalesce($3, sip_trunk_id),
                        label = coalesce($4, label), enabled = true
                  where id = $1",
            )
            .bind(id)
            .bind(a.agent_id)
            .bind(a.sip_trunk_id)
            .bind(&a.label)
            .execute(&mut *tx)
            .await?;
            Assigned {
                phone_number_id: id,
                taken_from: None,
            }
        }
        held => {
            if let Some((id, _)) = held {
                sqlx::query("delete from phone_numbers where id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            let id: Uuid = sqlx::query_scalar(
                "insert into phone_numbers (workspace_id, e164, agent_id, sip_trunk_id, label, enabled)
                 values ($1, $2, $3, $4, $5, true) returning id",
            )
            .bind(a.workspace_id)
            .bind(a.e164.as_str())
            .bind(a.agent_id)
            .bind(a.sip_trunk_id)
            .bind(&a.label)
            .fetch_one(&mut *tx)
            .await?;
            Assigned {
                phone_number_id: id,
                taken_from: held.map(|(_, ws)| ws),
            }
        }
    };
    tx.commit().await?;
    Ok(assigned)
}
