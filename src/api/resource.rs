//! Generic CRUD over one workspace table, driven by a static description of
//! its fields: each field's kind validates (and normalises) the JSON value at
//! the edge, then PostgreSQL's `jsonb_populate_record` turns the checked
//! object into a typed row. Every statement runs in the caller's RLS
//! transaction and also filters on the path's workspace.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use axum::Router;
use serde_json::{json, Map, Value};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::auth::Principal;
use super::body::JsonObject;
use super::error::ApiError;
use super::extract::{pagination, Ids, QueryMap};
use super::types::Role;
pub use super::validate::{check, check_body, check_free_json};
use super::ApiState;

/// How a field's JSON value is checked.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string of at most this many characters.
    Text(usize),
    /// One of these strings (an SQL enum or a checked text column).
    Enum(&'static [&'static str]),
    Int(i64, i64),
    Num(f64, f64),
    Bool,
    /// Any JSON object.
    Object,
    /// A list of strings, at most (items, characters each).
    TextList(usize, usize),
    /// The id of a row of this table in the same workspace.
    Ref(&'static str),
    /// The id of a row of this global table (no workspace).
    GlobalRef(&'static str),
    E164,
    Cidrs,
    Codecs,
    SipHost,
    Port,
    /// E.164 or sip: URI.
    TransferTarget,
    /// http(s) URL.
    Url,
    /// `#rrggbb`.
    Color,
    /// RFC 3339 time.
    Time,
    /// Encrypted before storage, never returned (`<name>_set: bool` instead).
    Secret,
    /// A UUID with no reference check (read-only columns).
    Id,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// Must be present on create.
    pub required: bool,
    /// Accepts `null`.
    pub nullable: bool,
    /// Accepted in create/patch bodies (false = output only).
    pub writable: bool,
}

/// Shorthands for field tables.
pub const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
        nullable: false,
        writable: true,
    }
}
pub const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
        nullable: true,
        writable: true,
    }
}
/// Optional on create (the column has a default), never null.
pub const fn dflt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
        nullable: false,
        writable: true,
    }
}
pub const fn out(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
        nullable: true,
        writable: false,
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Eq,
    Gte,
    Lt,
}

/// A list filter: `?param=value` compares `column` with `op`.
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    pub param: &'static str,
    pub column: &'static str,
    pub op: Op,
    pub kind: Kind,
}

pub const fn eq(param: &'static str, kind: Kind) -> Filter {
    Filter {
        param,
        column: param,
        op: Op::Eq,
        kind,
    }
}

/// Rows of another table folded into the single-item view.
#[derive(Debug, Clone, Copy)]
pub struct Child {
    pub key: &'static str,
    pub table: &'static str,
    pub foreign_key: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Writes {
    pub create: bool,
    pub patch: bool,
    pub delete: bool,
}

pub const READ_ONLY: Writes = Writes {
    create: false,
    patch: false,
    delete: false,
};
pub const READ_WRITE: Writes = Writes {
    create: true,
    patch: true,
    delete: true,
};
/// Runtime-written rows whose staff fields may be edited.
pub const PATCH_ONLY: Writes = Writes {
    create: false,
    patch: true,
    delete: false,
};

pub struct Resource {
    /// Path segment under `/v1/workspaces/{workspace_id}/`.
    pub path: &'static str,
    pub table: &'static str,
    pub summary: &'static str,
    pub fields: &'static [Field],
    pub filters: &'static [Filter],
    /// Which of create, patch and delete exist.
    pub writes: Writes,
    pub write_role: Role,
    /// Columns never returned.
    pub hidden: &'static [&'static str],
    pub children: &'static [Child],
    /// The column lists are ordered by, newest (largest) first, then `id`
    /// (descending too), so a page can start after a given row (`?after=`).
    pub order: &'static str,
}

impl Resource {
    pub fn collection_path(&self) -> String {
        format!("/v1/workspaces/{{workspace_id}}/{}", self.path)
    }
    pub fn item_path(&self) -> String {
        format!("/v1/workspaces/{{workspace_id}}/{}/{{id}}", self.path)
    }
}

pub fn routes(r: &'static Resource) -> Router<ApiState> {
    Router::new()
        .route(&r.collection_path(), collection_route(r))
        .route(&r.item_path(), item_route(r))
}

/// GET (list) and, when the resource allows it, POST (create).
pub fn collection_route(r: &'static Resource) -> MethodRouter<ApiState> {
    let mut route = get(
        move |State(st): State<ApiState>, p: Principal, ids: Ids, q: QueryMap| async move {
            list(r, &st, &p, ids.get(0)?, &q.0).await
        },
    );
    if r.writes.create {
        route = route.post(
            move |State(st): State<ApiState>,
                  p: Principal,
                  ids: Ids,
                  JsonObject(body): JsonObject| async move {
                create(r, &st, &p, ids.get(0)?, body).await
            },
        );
    }
    route
}

/// GET and, when allowed, PATCH and DELETE of one row.
pub fn item_route(r: &'static Resource) -> MethodRouter<ApiState> {
    let mut route = get(
        move |State(st): State<ApiState>, p: Principal, ids: Ids| async move {
            get_one(r, &st, &p, ids.get(0)?, ids.get(1)?).await
        },
    );
    if r.writes.patch {
        route = route.patch(
            move |State(st): State<ApiState>,
                  p: Principal,
                  ids: Ids,
                  JsonObject(body): JsonObject| async move {
                patch(r, &st, &p, ids.get(0)?, ids.get(1)?, body).await
            },
        );
    }
    if r.writes.delete {
        route = route.delete(
            move |State(st): State<ApiState>, p: Principal, ids: Ids| async move {
                delete(r, &st, &p, ids.get(0)?, ids.get(1)?).await
            },
        );
    }
    route
}

/// Refuses references to rows outside the workspace (or absent), so a row
/// can never point into another tenant. RLS would hide foreign rows anyway;
/// this gives the client a clear 422 naming the field.
pub async fn check_refs(
    tx: &mut Transaction<'static, Postgres>,
    fields: &[Field],
    values: &Map<String, Value>,
    workspace_id: Uuid,
) -> Result<(), ApiError> {
    for field in fields {
        let (table, scoped) = match field.kind {
            Kind::Ref(t) => (t, true),
            Kind::GlobalRef(t) => (t, false),
            _ => continue,
        };
        let Some(id) = values.get(field.name).and_then(Value::as_str) else {
            continue;
        };
        let id =
            Uuid::parse_str(id).map_err(|_| ApiError::validation(field.name, "must be a UUID"))?;
        let sql = if scoped {
            format!("select exists(select 1 from {table} where id = $1 and workspace_id = $2)")
        } else {
            format!("select exists(select 1 from {table} where id = $1 and $2::uuid is not null)")
        };
        let found: bool = sqlx::query_scalar(&sql)
            .bind(id)
            .bind(workspace_id)
            .fetch_one(&mut **tx)
            .await?;
        if !found {
            return Err(ApiError::Unprocessable {
                message: format!(
                    "{} does not name a row of {table} in this workspace",
                    field.name
                ),
                field: Some(field.name.to_string()),
            });
        }
    }
    Ok(())
}

/// Appends `and <column> <op> $n` for each filter present in the query.
fn push_filters(
    filters: &[Filter],
    q: &std::collections::HashMap<String, String>,
    sql: &mut String,
    binds: &mut Vec<String>,
    first_bind: usize,
) -> Result<(), ApiError> {
    for f in filters {
        let Some(raw) = q.get(f.param) else { continue };
        // Validate with the same rules as bodies; a filter value is a string.
        let value = match f.kind {
            Kind::Bool => match raw.as_str() {
                "true" | "false" => json!(raw),
                _ => return Err(ApiError::validation(f.param, "must be true or false")),
            },
            kind => check(f.param, kind, &Value::String(raw.clone()), &[0; 32])?,
        };
        let value = value.as_str().unwrap_or(raw).to_string();
        let n = first_bind + binds.len();
        let cast = match f.kind {
            Kind::Ref(_) | Kind::GlobalRef(_) | Kind::Id => "::uuid",
            Kind::Time => "::timestamptz",
            Kind::Bool => "::boolean",
            _ => "",
        };
        let column = match cast {
            "" => format!("t.{}::text", f.column),
            _ => format!("t.{}", f.column),
        };
        let op = match f.op {
            Op::Eq => "=",
            Op::Gte => ">=",
            Op::Lt => "<",
        };
        sql.push_str(&format!(" and {column} {op} ${n}::text{cast}"));
        binds.push(value);
    }
    Ok(())
}

/// Text columns longer than this (a knowledge source's whole extracted
/// text) are left out of list pages unless `?include=<column>` asks for
/// them: a page of 50 would otherwise carry up to 100 MB.
pub const LIST_TEXT_LIMIT: usize = 65_536;

/// The long text columns a list leaves out, given `include` (comma-separated).
fn omitted_in_lists(fields: &[Field], include: Option<&String>) -> Vec<&'static str> {
    let asked: Vec<&str> = include
        .map(|i| i.split(',').map(str::trim).collect())
        .unwrap_or_default();
    fields
        .iter()
        .filter(|f| matches!(f.kind, Kind::Text(n) if n > LIST_TEXT_LIMIT))
        .map(|f| f.name)
        .filter(|name| !asked.contains(name))
        .collect()
}

pub async fn list(
    r: &'static Resource,
    st: &ApiState,
    p: &Principal,
    ws: Uuid,
    q: &std::collections::HashMap<String, String>,
) -> Result<axum::response::Response, ApiError> {
    st.require(p, ws, Role::Viewer).await?;
    let (limit, offset) = pagination(q)?;
    let after = match q.get("after") {
        None => None,
        Some(_) if offset > 0 => {
            return Err(ApiError::validation(
                "after",
                "give either after or offset, not both",
            ))
        }
        Some(raw) => Some(
            Uuid::parse_str(raw)
                .map_err(|_| ApiError::validation("after", "must be the id of a listed item"))?,
        ),
    };
    // Column names come from the static field list, never from the request.
    let omitted = omitted_in_lists(r.fields, q.get("include"));
    // The page is chosen in a subquery and only its rows become JSON: a
    // plan that sorts the whole workspace (stale statistics) would
    // otherwise build a JSON object for every row before the limit.
    let mut sql = format!("select t.* from {} t where t.workspace_id = $1", r.table);
    let mut binds = Vec::new();
    push_filters(r.filters, q, &mut sql, &mut binds, 2)?;
    let col = r.order;
    if let Some(id) = after {
        // Keyset: the rows after the given one in (column, id) descending
        // order; the first condition lets the (workspace, column) index
        // start there instead of counting rows from the top.
        let n = 2 + binds.len();
        let cursor = format!(
            "(select c.{col} from {} c where c.id = ${n}::uuid and c.workspace_id = $1)",
            r.table
        );
        sql.push_str(&format!(
            " and t.{col} <= {cursor} and (t.{col}, t.id) < ({cursor}, ${n}::uuid)"
        ));
        binds.push(id.to_string());
    }
    // PostgreSQL writes the whole page, which the node sends as it is: no
    // row is parsed and written again here. A full page may have a next
    // one: it starts after this page's last row.
    let row = presented_sql(r, &omitted);
    let sql = format!(
        "select json_build_object(
            'items', coalesce(json_agg({row} order by t.{col} desc, t.id desc), '[]'::json),
            'limit', {limit}, 'offset', {offset},
            'next_after', case when count(*) = {limit}
                               then (array_agg(t.id order by t.{col}, t.id))[1] end)::text
           from ({sql} order by t.{col} desc, t.id desc limit {limit} offset {offset}) t"
    );
    let mut tx = st.begin(p).await?;
    let mut query = sqlx::query_scalar::<_, String>(&sql).bind(ws);
    for b in &binds {
        query = query.bind(b);
    }
    let page = query.fetch_one(&mut *tx).await?;
    super::end_read(tx);
    Ok(json_text(page))
}

/// A JSON body written elsewhere (by PostgreSQL), sent as it is.
pub fn json_text(body: String) -> axum::response::Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The SQL expression of row `t` as clients see it, the one place that
/// says so: hidden and `omitted` columns gone, secrets as `<name>_set`
/// (never their sealed value). A plain `row_to_json` where nothing is
/// taken out (json text costs PostgreSQL less than jsonb, which sorts
/// every row's keys). Names come from the static field tables, never from
/// a request.
pub fn presented_sql(r: &Resource, omitted: &[&str]) -> String {
    let secrets: Vec<&str> = r
        .fields
        .iter()
        .filter(|f| matches!(f.kind, Kind::Secret))
        .map(|f| f.name)
        .collect();
    if secrets.is_empty() && r.hidden.is_empty() && omitted.is_empty() {
        return "row_to_json(t)".into();
    }
    let mut row = "to_jsonb(t)".to_string();
    for column in r.hidden.iter().chain(omitted).chain(&secrets) {
        row.push_str(&format!(" - '{column}'"));
    }
    if !secrets.is_empty() {
        let set: Vec<String> = secrets
            .iter()
            .map(|s| format!("'{s}_set', t.{s} is not null"))
            .collect();
        row = format!("({row} || jsonb_build_object({}))", set.join(", "));
    }
    row
}

pub async fn get_one(
    r: &'static Resource,
    st: &ApiState,
    p: &Principal,
    ws: Uuid,
    id: Uuid,
) -> Result<axum::response::Response, ApiError> {
    st.require(p, ws, Role::Viewer).await?;
    // One statement writes the row and its children's rows, sent as
    // PostgreSQL wrote it. The ids are typed uuids, written in as
    // literals: the statement goes with the caller's settings in one round
    // trip (`ApiState::read_text`).
    let (ws, id) = (format!("'{ws}'::uuid"), format!("'{id}'::uuid"));
    let row = row_with_children_sql(r, &ws, &id);
    let sql = format!(
        "select ({row})::text from {} t where t.workspace_id = {ws} and t.id = {id}",
        r.table
    );
    let body = st.read_text(p, &sql).await?;
    Ok(json_text(body.ok_or(ApiError::NotFound)?))
}

/// The SQL of row `t` of `r` as JSON, with its children's rows (each list
/// in creation order) when `r` has children; `ws` and `id` are the SQL of
/// its workspace and id (parameters or literals). GET and PATCH present a
/// row alike.
fn row_with_children_sql(r: &Resource, ws: &str, id: &str) -> String {
    let row = presented_sql(r, &[]);
    if r.children.is_empty() {
        return row;
    }
    let children: Vec<String> = r
        .children
        .iter()
        .map(|c| {
            format!(
                "'{}', (select coalesce(jsonb_agg(to_jsonb(c) order by c.created_at, c.id), '[]'::jsonb)
                          from {} c where c.workspace_id = {ws} and c.{} = {id})",
                c.key, c.table, c.foreign_key
            )
        })
        .collect();
    format!(
        "({row})::jsonb || jsonb_build_object({})",
        children.join(", ")
    )
}

pub async fn create(
    r: &'static Resource,
    st: &ApiState,
    p: &Principal,
    ws: Uuid,
    body: Map<String, Value>,
) -> Result<impl IntoResponse, ApiError> {
    st.require(p, ws, r.write_role).await?;
    let mut values = check_body(r.fields, body, true, st.encryption_key())?;
    super::resources::fill_presets(r, &mut values);
    let mut tx = st.begin(p).await?;
    super::resources::check_row_rules(r, &mut tx, ws, None, &values).await?;
    let row = insert_row(&mut tx, r, ws, values).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, json_text(row)))
}

/// Inserts a checked object as a row of `r` in workspace `ws`; the new row
/// as clients see it ([`presented_sql`]).
pub async fn insert_row(
    tx: &mut Transaction<'static, Postgres>,
    r: &Resource,
    ws: Uuid,
    values: Map<String, Value>,
) -> Result<String, ApiError> {
    check_refs(tx, r.fields, &values, ws).await?;
    let columns: Vec<&str> = values.keys().map(String::as_str).collect();
    let list: String = columns.iter().map(|c| format!(", {c}")).collect();
    let sql = format!(
        "insert into {table} as t (workspace_id{list})
         select $2{list} from jsonb_populate_record(null::{table}, $1)
         returning ({row})::text",
        table = r.table,
        row = presented_sql(r, &[])
    );
    let row: String = sqlx::query_scalar(&sql)
        .bind(Value::Object(values))
        .bind(ws)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row)
}

pub async fn patch(
    r: &'static Resource,
    st: &ApiState,
    p: &Principal,
    ws: Uuid,
    id: Uuid,
    body: Map<String, Value>,
) -> Result<axum::response::Response, ApiError> {
    st.require(p, ws, r.write_role).await?;
    let values = check_body(r.fields, body, false, st.encryption_key())?;
    let mut tx = st.begin(p).await?;
    check_refs(&mut tx, r.fields, &values, ws).await?;
    super::resources::check_row_rules(r, &mut tx, ws, Some(id), &values).await?;
    let row: Option<String> = if values.is_empty() {
        let presented = row_with_children_sql(r, "$1", "$2");
        sqlx::query_scalar(&format!(
            "select ({presented})::text from {} t where t.workspace_id = $1 and t.id = $2",
            r.table
        ))
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    } else {
        let presented = row_with_children_sql(r, "$2", "$3");
        let sets: Vec<String> = values.keys().map(|c| format!("{c} = r.{c}")).collect();
        let sql = format!(
            "update {table} t set {sets}
               from jsonb_populate_record(null::{table}, $1) r
              where t.workspace_id = $2 and t.id = $3
              returning ({presented})::text",
            table = r.table,
            sets = sets.join(", ")
        );
        sqlx::query_scalar(&sql)
            .bind(Value::Object(values))
            .bind(ws)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
    };
    let row = row.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(json_text(row))
}

pub async fn delete(
    r: &'static Resource,
    st: &ApiState,
    p: &Principal,
    ws: Uuid,
    id: Uuid,
) -> Result<StatusCode, ApiError> {
    st.require(p, ws, r.write_role).await?;
    let mut tx = st.begin(p).await?;
    let done = sqlx::query(&format!(
        "delete from {} where workspace_id = $1 and id = $2",
        r.table
    ))
    .bind(ws)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
