//! `buildit tokens create|list|revoke`: the API tokens of the daemon's tenants, in the store.

use std::path::PathBuf;

use buildit_core::store::{
    Store, StoreError, StoreLocation, TokenRecord, check_tenant_name, hash_token, new_token,
};

use super::load::load_system_config;
use super::runs::{json, print, table, timestamp};
use crate::cli::{HistoryOutput, TokensCommand};
use crate::exit::Exit;
use crate::report::error_line;

/// The longest token label.
const MAX_LABEL_CHARS: usize = 100;

pub(crate) fn run(command: &TokensCommand) -> Exit {
    let common = match command {
        TokensCommand::Create { common, .. }
        | TokensCommand::List { common, .. }
        | TokensCommand::Revoke { common, .. } => common,
    };
    // The command line is checked before any store is opened (or created).
    if let Err(exit) = check_arguments(command) {
        return exit;
    }
    let workspace = common
        .workspace
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let system = match load_system_config(common.store.system.as_deref(), &workspace, None) {
        Ok(system) => system,
        Err(exit) => return exit,
    };
    let location = match super::store::locate(&common.store, &system) {
        Ok(location) => location,
        Err(exit) => return exit,
    };
    if let StoreLocation::Sqlite(path) = &location
        && !path.exists()
        && !matches!(command, TokensCommand::Create { .. })
    {
        // Only `create` makes a database: listing or revoking in a missing one is a wrong place.
        error_line(
            &format!("no store at `{}`", path.display()),
            Some(
                "`buildit tokens create` makes one; use --workspace or --database-url for another store",
            ),
        );
        return Exit::Usage;
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    runtime.block_on(async {
        let store = match super::store::open(&location).await {
            Ok(store) => store,
            Err(exit) => return exit,
        };
        let result = match command {
            TokensCommand::Create { tenant, name, .. } => {
                create(store.as_ref(), tenant, name).await
            }
            TokensCommand::List { tenant, format, .. } => {
                list(store.as_ref(), tenant.as_deref(), *format).await
            }
            TokensCommand::Revoke { id, .. } => revoke(store.as_ref(), *id).await,
        };
        store.close().await;
        result.unwrap_or_else(|error| {
            let exit = match error {
                StoreError::NoSuchToken(_) | StoreError::InvalidTenant(_) => Exit::Usage,
                _ => Exit::Infrastructure,
            };
            let help = miette::Diagnostic::help(&error).map(|help| help.to_string());
            error_line(&error.to_string(), help.as_deref());
            exit
        })
    })
}

/// Tenant names and labels, reported as usage errors.
fn check_arguments(command: &TokensCommand) -> Result<(), Exit> {
    let (tenant, label) = match command {
        TokensCommand::Create { tenant, name, .. } => (Some(tenant), Some(name)),
        TokensCommand::List { tenant, .. } => (tenant.as_ref(), None),
        TokensCommand::Revoke { .. } => (None, None),
    };
    if let Some(Err(error)) = tenant.map(|tenant| check_tenant_name(tenant)) {
        error_line(&error.to_string(), None);
        return Err(Exit::Usage);
    }
    if let Some(label) = label
        && (label.chars().count() > MAX_LABEL_CHARS || label.chars().any(char::is_control))
    {
        error_line(
            &format!(
                "invalid token label: at most {MAX_LABEL_CHARS} characters, without control characters"
            ),
            None,
        );
        return Err(Exit::Usage);
    }
    Ok(())
}

async fn create(store: &dyn Store, tenant: &str, name: &str) -> Result<Exit, StoreError> {
    let token = new_token();
    let record = store
        .create_token(tenant, name, &hash_token(&token))
        .await?;
    print(&format!("{token}\n"));
    eprintln!(
        "created token {} for tenant `{}`: it is not shown again, keep it now",
        record.id, record.tenant
    );
    Ok(Exit::Success)
}

async fn list(
    store: &dyn Store,
    tenant: Option<&str>,
    format: HistoryOutput,
) -> Result<Exit, StoreError> {
    let tenants = match tenant {
        Some(tenant) => vec![tenant.to_owned()],
        None => store.list_tenants().await?,
    };
    let mut tokens = Vec::new();
    for tenant in &tenants {
        tokens.extend(store.for_tenant(tenant).list_tokens().await?);
    }
    tokens.sort_by_key(|token| token.id);
    let text = match format {
        HistoryOutput::Json => json(&tokens),
        HistoryOutput::Text if tokens.is_empty() => "no tokens\n".to_owned(),
        HistoryOutput::Text => token_table(&tokens),
    };
    print(&text);
    Ok(Exit::Success)
}

fn token_table(tokens: &[TokenRecord]) -> String {
    let when = |ms: Option<i64>| ms.map_or_else(|| "-".to_owned(), timestamp);
    let mut rows = vec![[
        "ID".to_owned(),
        "TENANT".to_owned(),
        "NAME".to_owned(),
        "CREATED".to_owned(),
        "LAST USED".to_owned(),
        "REVOKED".to_owned(),
    ]];
    for token in tokens {
        rows.push([
            token.id.to_string(),
            token.tenant.clone(),
            if token.name.is_empty() {
                "-".to_owned()
            } else {
                token.name.clone()
            },
            timestamp(token.created_at_ms),
            when(token.last_used_at_ms),
            when(token.revoked_at_ms),
        ]);
    }
    table(&rows)
}

/// Revokes token `id` in whichever tenant has it (ids are unique across tenants).
async fn revoke(store: &dyn Store, id: i64) -> Result<Exit, StoreError> {
    for tenant in store.list_tenants().await? {
        let tenant_store = store.for_tenant(&tenant);
        if tenant_store
            .list_tokens()
            .await?
            .iter()
            .any(|token| token.id == id)
        {
            tenant_store.revoke_token(id).await?;
            print(&format!("revoked token {id} of tenant `{tenant}`\n"));
            return Ok(Exit::Success);
        }
    }
    Err(StoreError::NoSuchToken(id))
}
