//! The append-only audit: every change is written in the transaction that makes it.

use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::{int, json, opt_text, text, Store};
use crate::authority::model::Event;
use crate::license::UnixTime;

/// An event to append.
pub(crate) struct NewEvent<'a> {
    pub at: UnixTime,
    pub actor: &'a str,
    pub action: &'a str,
    pub license_id: Option<&'a str>,
    pub activation_id: Option<&'a str>,
    pub detail: serde_json::Value,
}

/// Appends `event` inside `tx`.
pub(crate) async fn append(
    tx: &mut Transaction<'static, Any>,
    event: NewEvent<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (at, actor, action, license_id, activation_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.at)
    .bind(event.actor)
    .bind(event.action)
    .bind(event.license_id)
    .bind(event.activation_id)
    .bind(event.detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn event_of(row: &AnyRow) -> Result<Event, sqlx::Error> {
    Ok(Event {
        id: int(row, "id")?,
        at: int(row, "at")?,
        actor: text(row, "actor")?,
        action: text(row, "action")?,
        license_id: opt_text(row, "license_id")?,
        activation_id: opt_text(row, "activation_id")?,
        detail: json(row, "detail")?,
    })
}

impl Store {
    /// The newest `limit` events (of `license_id` when given), oldest first.
    pub async fn events(
        &self,
        license_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, sqlx::Error> {
        let rows = match license_id {
            Some(license) => {
                sqlx::query(
                    "SELECT id, at, actor, action, license_id, activation_id, detail \
                     FROM events WHERE license_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(license)
                .bind(i64::from(limit))
                .fetch_all(&self.db.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, at, actor, action, license_id, activation_id, detail \
                     FROM events ORDER BY id DESC LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.db.pool)
                .await?
            }
        };
        let mut events = rows.iter().map(event_of).collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }
}
