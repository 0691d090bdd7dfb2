//! [`MessageStore`] on SQLite: messages, their related objects and deliveries, and the claim
//! of due messages with a lease.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use async_trait::async_trait;
use clarion_domain::ids::{AppId, DeliveryId, MessageId, RelatedObject, Slug};
use clarion_domain::message::{Channel, Delivery, DeliveryState, DeliveryTally, GiveUp, Message};
use clarion_domain::ports::{
    DELIVERIES_SHOWN, DueDelivery, Lease, MessageFilter, MessageStore, NewDeliveries, NewMessage,
    StoreError,
};
use clarion_domain::token::Platform;
use sqlx::{AssertSqlSafe, Connection as _, QueryBuilder, Sqlite, SqliteConnection};
use time::OffsetDateTime;

use crate::grouped::attempts::{AttemptBatch, Save};
use crate::grouped::{
    AttemptWrite, Grouped, MAX_ATTEMPT_ROWS, MAX_ATTEMPT_WRITES, MAX_GROUPED_DELIVERIES, WriteMany,
};
use crate::held::Held;
use crate::rows::{MAX_BATCH, MAX_BATCH_DELIVERIES, inserted_delivery, inserted_message, weight};
use crate::sqlite::rows::{
    DELIVERY_COLUMNS, DeliveryRow, DueRow, MESSAGE_COLUMNS, MessageRow, RelatedRow, json_text,
    millis, opt_json_text, opt_millis, target_columns,
};
use crate::sqlite::values::{ValuesInsert, ValuesUpdate};
use crate::sqlite::{SqliteStore, db_error};

/// The default and the largest page of `list_messages`.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

/// The condition that makes a message due at the time bound to the first parameter.
const DUE: &str = "(state = 'WAITING' OR (state = 'ERROR_RETRY' \
    AND (next_attempt_at IS NULL OR next_attempt_at <= ?1)))";

/// The states of the messages in the partial index `messages_due_by_app`: spelled as in its
/// `WHERE`, so that SQLite sees that a query which says it may read the index.
const DUE_STATES: &str = "state IN ('WAITING', 'ERROR_RETRY')";

/// Claims, under the lease of owner `?2` until `?3`, the first `?5` messages in id order that
/// are due at `?1` with their lease free or expired, none of the applications in the JSON
/// array `?4`.
///
/// One statement, so that SQLite's write lock makes the choice and the claim atomic. It
/// reads the partial index `messages_due_by_app`, which holds only the messages that may be
/// due, an application at a time: the applications that have any (one look-up each in
/// the index), then the first `?5` of each that is not left out. Its cost is thus the
/// applications and the messages claimed (and those leased in flight, skipped), not the
/// backlog: scanning every due message for the first that is not left out read the whole
/// backlog of an application that was (50 ms at 100,000 queued messages), and a claim of
/// the first due messages sorted every due message (the planner chose the index on state).
fn claim_sql() -> &'static str {
    // Made once: the statement runs on a hot path.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH RECURSIVE apps (app) AS ( \
                 SELECT (SELECT MIN(app) FROM messages INDEXED BY messages_due_by_app \
                     WHERE {DUE_STATES}) \
                 UNION ALL \
                 SELECT (SELECT MIN(app) FROM messages INDEXED BY messages_due_by_app \
                     WHERE {DUE_STATES} AND app > apps.app) \
                 FROM apps WHERE apps.app IS NOT NULL) \
             UPDATE messages SET lease_owner = ?2, lease_until = ?3 WHERE id IN ( \
                 SELECT claimed.id FROM apps JOIN messages AS claimed ON claimed.id IN ( \
                     SELECT id FROM messages INDEXED BY messages_due_by_app \
                     WHERE {DUE_STATES} AND app = apps.app AND {DUE} \
                     AND (lease_until IS NULL OR lease_until <= ?1) ORDER BY id LIMIT ?5) \
                 WHERE apps.app IS NOT NULL \
                 AND apps.app NOT IN (SELECT value FROM json_each(?4)) \
                 ORDER BY claimed.id LIMIT ?5) \
             RETURNING id"
        )
    });
    &SQL
}

impl SqliteStore {
    /// Loads the messages with the given ids, each with its related objects and deliveries,
    /// in three queries (deliveries only when `with_deliveries`). The result follows `ids`'
    /// order; missing ids are skipped.
    async fn load_messages(
        &self,
        ids: &[i64],
        deliveries_each: Option<u32>,
    ) -> Result<Vec<Message>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The claim's reads, one after the other on one connection. The messages and their
        // deliveries come as one row of JSON each: sqlx hands each row of a statement over
        // from the connection's thread and copies each of its values, which for a claim of
        // hundreds of wide rows cost more than reading them (as for `due_page`).
        let mut conn = self.readers.get().await?;
        let rows: String = select_in(
            &format!("SELECT {} WHERE id IN (", messages_as_json()),
            ids,
            ")",
        )
        .build_query_scalar()
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("failed to read messages"))?;
        let rows: Vec<MessageRow> = serde_json::from_str(&rows).map_err(|e| {
            StoreError::Corrupt(format!("messages {}..={}: {e}", ids[0], ids[ids.len() - 1]))
        })?;

        let related_rows: Vec<RelatedRow> = select_in(
            "SELECT id, message_id, kind, object_id FROM message_related_objects \
             WHERE message_id IN (",
            ids,
            ") ORDER BY id",
        )
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to read related objects"))?;
        let mut related: HashMap<MessageId, Vec<RelatedObject>> = HashMap::new();
        for row in related_rows {
            let (message, object) = row.into_domain()?;
            related.entry(message).or_default().push(object);
        }

        let mut deliveries: HashMap<MessageId, Vec<Delivery>> = HashMap::new();
        if let Some(each) = deliveries_each {
            // The first `each` deliveries of every message.
            let ids = serde_json::Value::from(ids.to_vec()).to_string();
            let found: String = sqlx::query_scalar(AssertSqlSafe(first_deliveries_sql()))
                .bind(ids)
                .bind(i64::from(each))
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error("failed to read deliveries"))?;
            let mut delivery_rows: Vec<DeliveryRow> = serde_json::from_str(&found)
                .map_err(|e| StoreError::Corrupt(format!("deliveries of a claim: {e}")))?;
            // The aggregate's order is SQLite's choice.
            delivery_rows.sort_unstable_by_key(|row| row.id);
            for row in delivery_rows {
                let delivery = row.into_domain()?;
                deliveries
                    .entry(delivery.message_id)
                    .or_default()
                    .push(delivery);
            }
        }
        conn.done();

        let mut by_id = HashMap::with_capacity(rows.len());
        for row in rows {
            let id = MessageId(row.id);
            let mut message = row.into_domain(related.remove(&id).unwrap_or_default())?;
            message.deliveries = deliveries.remove(&id).unwrap_or_default();
            by_id.insert(id, message);
        }
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(&MessageId(*id)))
            .collect())
    }
}

/// The first `?2` deliveries of each message whose id is in the JSON array `?1`, as one JSON
/// array of [`DeliveryRow`]s in no particular order.
///
/// For each message, its `?2 + 1`-th delivery (found by skipping `?2` entries of the index on
/// `message_id`, which SQLite keeps in id order) bounds a range of that index. A window
/// function (`ROW_NUMBER() OVER (PARTITION BY message_id)`) read every delivery of every
/// message instead: 0.7 s to show a list holding one broadcast to 1,000,000 devices.
fn first_deliveries_sql() -> &'static str {
    // Made once: the statement runs on a hot path.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH cut (wanted, stop) AS (SELECT value, IFNULL((SELECT id FROM deliveries \
             WHERE message_id = value ORDER BY id LIMIT 1 OFFSET ?2), {MAX_ID}) \
             FROM json_each(?1)) \
             SELECT json_group_array(json_array({DELIVERY_COLUMNS})) FROM cut \
             CROSS JOIN deliveries ON message_id = wanted AND id < stop"
        )
    });
    &SQL
}

/// The messages of a `FROM messages` as one JSON array of [`MessageRow`]s: the columns of
/// [`MESSAGE_COLUMNS`], `retry_sending` written as a JSON boolean.
fn messages_as_json() -> &'static str {
    // Made once: the statement runs on a hot path.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let columns = MESSAGE_COLUMNS.replace(
            "retry_sending",
            "json(CASE WHEN retry_sending THEN 'true' ELSE 'false' END)",
        );
        format!("json_group_array(json_array({columns})) FROM messages")
    });
    &SQL
}

/// Releases every lease of a worker, found through the partial index `messages_leased`.
const RELEASE_LEASES: &str =
    "UPDATE messages SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?";

/// Above every id SQLite gives (`i64::MAX`).
const MAX_ID: i64 = i64::MAX;

/// `head` followed by the bound ids separated by commas, then `tail`.
fn select_in(head: &str, ids: &[i64], tail: &str) -> QueryBuilder<Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new(head);
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(tail);
    query
}

/// Writes deliveries, each unless it is already accepted or debug, which are final, as
/// bound parameters of a multi-row `VALUES` (see [`ValuesUpdate`]).
async fn write_deliveries(
    conn: &mut SqliteConnection,
    deliveries: &[&Delivery],
) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        rows.push((*delivery, opt_json_text(delivery.details())?));
    }
    WRITE_DELIVERIES
        .update(
            conn,
            &rows,
            |query, (delivery, details)| {
                query
                    .bind(delivery.id.0)
                    .bind(delivery.state().as_str())
                    .bind(delivery.attempts())
                    .bind(delivery.provider_id())
                    .bind(delivery.error_code())
                    .bind(delivery.error_text())
                    .bind(details.as_deref())
                    .bind(millis(delivery.updated_at()))
            },
            "failed to record deliveries",
        )
        .await?;
    Ok(())
}

static WRITE_DELIVERIES: ValuesUpdate = ValuesUpdate::new(
    "WITH u (id, state, attempts, provider_id, error_code, error_text, details, updated_at) AS",
    "UPDATE deliveries SET state = u.state, attempts = u.attempts, \
     provider_id = u.provider_id, error_code = u.error_code, error_text = u.error_text, \
     details = u.details, updated_at = u.updated_at FROM u \
     WHERE deliveries.id = u.id AND deliveries.state NOT IN ('accepted', 'debug') \
     RETURNING deliveries.id",
    8,
);

/// The transaction of grouped messages on SQLite: each message's row, then every related
/// object and every listed delivery of the batch in one statement each, on the writer.
pub(crate) struct SqliteMessages {
    writer: Held<Sqlite>,
}

impl SqliteMessages {
    pub(crate) fn grouped(writer: Held<Sqlite>) -> Grouped<SqliteMessages> {
        Grouped::new(SqliteMessages { writer })
    }

    /// Writes `messages` in one transaction and returns them as stored, a broadcast without
    /// its deliveries.
    async fn insert(
        writer: &Held<Sqlite>,
        messages: &[NewMessage],
    ) -> Result<Vec<Message>, StoreError> {
        let mut conn = writer.get().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("failed to begin a transaction"))?;
        let ids = insert_heads(&mut tx, messages).await?;
        for (message, &id) in messages.iter().zip(&ids) {
            if let NewDeliveries::Broadcast { platform, channel } = &message.deliveries {
                insert_broadcast(&mut tx, id, message, *platform, *channel).await?;
            }
        }
        insert_related(&mut tx, messages, &ids).await?;
        let mut deliveries = insert_listed(&mut tx, messages, &ids).await?.into_iter();
        tx.commit()
            .await
            .map_err(db_error("failed to commit messages"))?;
        conn.done();
        messages
            .iter()
            .zip(ids)
            .map(|(message, id)| {
                let listed = match &message.deliveries {
                    NewDeliveries::Listed(list) => deliveries.by_ref().take(list.len()).collect(),
                    NewDeliveries::Broadcast { .. } => Vec::new(),
                };
                inserted_message(message, id, listed)
            })
            .collect()
    }
}

#[async_trait]
impl WriteMany for SqliteMessages {
    type Item = NewMessage;
    type Output = Message;
    const MAX_ITEMS: usize = MAX_BATCH;
    const MAX_WEIGHT: usize = MAX_BATCH_DELIVERIES;

    fn weight(message: &NewMessage) -> usize {
        weight(message)
    }

    async fn write_many(&self, messages: &[NewMessage]) -> Result<Vec<Message>, StoreError> {
        SqliteMessages::insert(&self.writer, messages).await
    }
}

/// Inserts the rows of `messages` in one statement and returns their ids, in order.
///
/// One statement rather than one per message: each statement is a round trip to the
/// connection's thread, and those hand-offs were what a batch of messages cost. Its rows are
/// bound parameters of a multi-row `VALUES` (see [`ValuesInsert`]).
async fn insert_heads(
    conn: &mut SqliteConnection,
    messages: &[NewMessage],
) -> Result<Vec<i64>, StoreError> {
    let mut rows = Vec::with_capacity(messages.len());
    for message in messages {
        let (target_kind, recipient, target_json) = target_columns(&message.spec.target)?;
        rows.push(HeadRow {
            message,
            target_kind,
            recipient,
            target_json,
            extra_data: opt_json_text(message.spec.content.extra_data.as_ref())?,
            options: json_text(&message.spec.options)?,
        });
    }
    INSERT_HEADS
        .insert(
            conn,
            &rows,
            |query, row| {
                let (spec, progress) = (&row.message.spec, &row.message.progress);
                let lease = row.message.lease.as_ref();
                query
                    .bind(spec.app.as_str())
                    .bind(row.target_kind)
                    .bind(row.recipient.as_deref())
                    .bind(row.target_json.as_deref())
                    .bind(spec.content.heading.as_deref())
                    .bind(spec.content.body.as_str())
                    .bind(spec.content.url.as_deref())
                    .bind(row.extra_data.as_deref())
                    .bind(spec.template_slug.as_ref().map(Slug::as_str))
                    .bind(spec.tag.as_ref().map(|t| t.as_str()))
                    .bind(spec.priority.as_str())
                    .bind(row.options.as_str())
                    .bind(spec.retry_sending)
                    .bind(row.message.sender.as_str())
                    .bind(progress.state.as_str())
                    .bind(progress.error.as_deref())
                    .bind(i64::from(progress.number_of_send_attempts))
                    .bind(opt_millis(progress.next_attempt_at))
                    .bind(opt_millis(progress.sent_at))
                    .bind(millis(progress.queued_at))
                    .bind(millis(row.message.now))
                    .bind(lease.map(|l| l.owner.as_str()))
                    .bind(lease.map(|l| millis(l.until)))
            },
            ("messages", "failed to insert messages"),
        )
        .await
}

/// What a message's row needs besides the message itself: its columns that are computed.
struct HeadRow<'a> {
    message: &'a NewMessage,
    target_kind: &'static str,
    recipient: Option<String>,
    target_json: Option<String>,
    extra_data: Option<String>,
    options: String,
}

/// Inserts message rows (see [`insert_heads`]); `extra_sender_data` stays NULL, and a new
/// message was created and changed at the same time.
static INSERT_HEADS: ValuesInsert = ValuesInsert::new(
    "INSERT INTO messages (app, target_kind, recipient, target_json, heading, body, url, \
     extra_data, template_slug, tag, priority, options, retry_sending, sender, state, error, \
     number_of_send_attempts, next_attempt_at, sent_at, queued_at, created_at, changed_at, \
     lease_owner, lease_until)",
    "column2, column3, column4, column5, column6, column7, column8, column9, column10, \
     column11, column12, column13, column14, column15, column16, column17, column18, \
     column19, column20, column21, column22, column22, column23, column24",
    23,
);

/// Inserts one delivery per active device of the message's application, without loading
/// the devices. The devices' platform names are the channel names.
async fn insert_broadcast(
    conn: &mut SqliteConnection,
    id: i64,
    message: &NewMessage,
    platform: Option<Platform>,
    channel: Option<Channel>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO deliveries (message_id, device_id, channel, state, attempts, \
         updated_at) SELECT ?, id, COALESCE(?, platform), ?, 0, ? FROM devices \
         WHERE app = ? AND active AND (? IS NULL OR platform = ?) ORDER BY id",
    )
    .bind(id)
    .bind(channel.map(Channel::as_str))
    .bind(DeliveryState::Pending.as_str())
    .bind(millis(message.now))
    .bind(message.spec.app.as_str().to_owned())
    .bind(platform.map(Platform::as_str))
    .bind(platform.map(Platform::as_str))
    .execute(&mut *conn)
    .await
    .map_err(db_error("failed to insert a broadcast's deliveries"))?;
    Ok(())
}

/// Inserts the related objects of every message (`ids` their ids), in order, in one
/// statement.
async fn insert_related(
    conn: &mut SqliteConnection,
    messages: &[NewMessage],
    ids: &[i64],
) -> Result<(), StoreError> {
    let rows: Vec<(i64, &RelatedObject)> = messages
        .iter()
        .zip(ids)
        .flat_map(|(message, &id)| message.spec.related_objects.iter().map(move |o| (id, o)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    INSERT_RELATED
        .insert(
            conn,
            &rows,
            |query, (id, object)| query.bind(*id).bind(object.kind()).bind(object.object_id()),
            ("related objects", "failed to insert related objects"),
        )
        .await?;
    Ok(())
}

static INSERT_RELATED: ValuesInsert = ValuesInsert::new(
    "INSERT INTO message_related_objects (message_id, kind, object_id)",
    "column2, column3, column4",
    3,
);

/// Inserts the listed deliveries of every message (`ids` their ids) in one statement, and
/// returns them in order.
async fn insert_listed(
    conn: &mut SqliteConnection,
    messages: &[NewMessage],
    ids: &[i64],
) -> Result<Vec<Delivery>, StoreError> {
    let mut listed = Vec::new();
    for (message, &id) in messages.iter().zip(ids) {
        if let NewDeliveries::Listed(list) = &message.deliveries {
            for delivery in list {
                listed.push((id, delivery, message.now));
            }
        }
    }
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let delivery_ids = INSERT_LISTED
        .insert(
            conn,
            &listed,
            |query, (id, (channel, device), now)| {
                query
                    .bind(*id)
                    .bind(device.map(|d| d.0))
                    .bind(channel.as_str())
                    .bind(millis(*now))
            },
            ("deliveries", "failed to insert deliveries"),
        )
        .await?;
    Ok(delivery_ids
        .into_iter()
        .zip(listed)
        .map(|(id, (message, delivery, now))| inserted_delivery(id, message, delivery, now))
        .collect())
}

static INSERT_LISTED: ValuesInsert = ValuesInsert::new(
    "INSERT INTO deliveries (message_id, device_id, channel, state, attempts, updated_at)",
    "column2, column3, column4, 'pending', 0, column5",
    4,
);

/// The transaction of grouped attempt results on SQLite: the progress of every message in one
/// statement, then every delivery in another (see [`AttemptBatch`]), on the writer. A batch
/// that is one statement needs no transaction.
pub(crate) struct SqliteAttempts {
    writer: Held<Sqlite>,
}

impl SqliteAttempts {
    pub(crate) fn grouped(writer: Held<Sqlite>) -> Grouped<SqliteAttempts> {
        Grouped::new(SqliteAttempts { writer })
    }

    /// Saves `message` in a transaction of its own.
    async fn save_alone(
        &self,
        message: &Message,
        lease: Option<&Lease>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("failed to begin a transaction"))?;
        if save_progress(&mut tx, &[(message, lease)])
            .await?
            .is_empty()
        {
            return Ok(false);
        }
        write_deliveries(&mut tx, &message.deliveries.iter().collect::<Vec<_>>()).await?;
        tx.commit()
            .await
            .map_err(db_error("failed to commit a message's progress"))?;
        conn.done();
        Ok(true)
    }
}

#[async_trait]
impl WriteMany for SqliteAttempts {
    type Item = AttemptWrite;
    type Output = bool;
    const MAX_ITEMS: usize = MAX_ATTEMPT_WRITES;
    const MAX_WEIGHT: usize = MAX_ATTEMPT_ROWS;

    fn weight(write: &AttemptWrite) -> usize {
        write.weight()
    }

    async fn write_many(&self, writes: &[AttemptWrite]) -> Result<Vec<bool>, StoreError> {
        let batch = AttemptBatch::new(writes);
        if batch.is_one_statement() {
            // One statement, atomic on its own.
            let mut conn = self.writer.get().await?;
            let written = write_attempts(&mut conn, &batch).await?;
            conn.done();
            return Ok(written);
        }
        let mut conn = self.writer.get().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("failed to begin a transaction"))?;
        let written = write_attempts(&mut tx, &batch).await?;
        tx.commit()
            .await
            .map_err(db_error("failed to commit the results of attempts"))?;
        conn.done();
        Ok(written)
    }
}

/// Writes a batch of attempt results on `conn`, two statements a run, and says whether each
/// write was written.
async fn write_attempts(
    conn: &mut SqliteConnection,
    batch: &AttemptBatch<'_>,
) -> Result<Vec<bool>, StoreError> {
    let mut written = Vec::new();
    for run in batch.runs() {
        let saved = save_progress(conn, &run.saves()).await?;
        write_deliveries(conn, &run.deliveries(&saved)).await?;
        written.extend(run.outcomes(&saved));
    }
    Ok(written)
}

/// Saves the progress of messages and releases their leases, each if its writer may (see
/// [`MessageStore::save_progress`]), as bound parameters of a multi-row `VALUES` (see
/// [`ValuesUpdate`]); returns the ids of the messages it saved. No message may appear twice.
async fn save_progress(
    conn: &mut SqliteConnection,
    saves: &[Save<'_>],
) -> Result<HashSet<MessageId>, StoreError> {
    if saves.is_empty() {
        return Ok(HashSet::new());
    }
    let mut rows = Vec::with_capacity(saves.len());
    for (message, lease) in saves {
        let extra = opt_json_text(message.extra_sender_data.as_ref())?;
        rows.push((
            *message,
            message.progress(),
            extra,
            lease.map(|l| l.owner.as_str()),
        ));
    }
    let saved = SAVE_PROGRESS
        .update(
            conn,
            &rows,
            |query, (message, progress, extra, owner)| {
                query
                    .bind(message.id.0)
                    .bind(progress.state.as_str())
                    .bind(progress.error.as_deref())
                    .bind(progress.number_of_send_attempts)
                    .bind(opt_millis(progress.next_attempt_at))
                    .bind(opt_millis(progress.sent_at))
                    .bind(millis(progress.queued_at))
                    .bind(extra.as_deref())
                    .bind(millis(message.changed_at))
                    .bind(*owner)
            },
            "failed to save the progress of messages",
        )
        .await?;
    Ok(saved.into_iter().map(MessageId).collect())
}

/// Saves the progress of the messages of its rows: a worker's (its id in the row) only while
/// it holds the lease, an operator's only while no lease runs at the row's `changed_at`.
static SAVE_PROGRESS: ValuesUpdate = ValuesUpdate::new(
    "WITH s (message, state, error, attempts, next_attempt_at, sent_at, queued_at, \
     extra_sender_data, changed_at, owner) AS",
    "UPDATE messages SET state = s.state, error = s.error, \
     number_of_send_attempts = s.attempts, next_attempt_at = s.next_attempt_at, \
     sent_at = s.sent_at, queued_at = s.queued_at, extra_sender_data = s.extra_sender_data, \
     changed_at = s.changed_at, lease_owner = NULL, lease_until = NULL FROM s \
     WHERE messages.id = s.message AND CASE WHEN s.owner IS NOT NULL \
         THEN messages.lease_owner = s.owner \
         ELSE (messages.lease_owner IS NULL OR messages.lease_until <= s.changed_at) END \
     RETURNING messages.id",
    10,
);

/// The statement of `due_page`: the page of due deliveries (`?2`, after `?3`, at most `?4`),
/// each looked up with its device of application `?1` by primary key (`NULL`s when there is
/// none), as one JSON array of [`DueRow`]s. `active` is written as a JSON boolean.
fn due_page_sql() -> &'static str {
    // Made once: the statement runs on a hot path.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT json_group_array(json_array(d.id, d.message_id, d.device_id, d.channel, \
             d.state, d.attempts, d.provider_id, d.error_code, d.error_text, d.details, \
             d.updated_at, v.platform, v.token_key, v.p256dh, v.auth, \
             CASE WHEN v.id IS NULL THEN NULL WHEN v.active THEN json('true') \
             ELSE json('false') END, v.deactivation_reason)) \
             FROM (SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ?2 AND id > ?3 \
             AND state IN ('pending', 'retrying') ORDER BY id LIMIT ?4) AS d \
             LEFT JOIN devices AS v ON v.id = d.device_id AND v.app = ?1"
        )
    });
    &SQL
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_message(&self, message: &NewMessage) -> Result<Message, StoreError> {
        match message.deliveries {
            // Messages sent at the same time are written together, one transaction a batch.
            NewDeliveries::Listed(_) => self.messages.write(message.clone()).await,
            // A broadcast's statement reads every device of its application: written alone,
            // so that the messages sent meanwhile are not held until it commits.
            NewDeliveries::Broadcast { .. } => {
                let mut stored =
                    SqliteMessages::insert(&self.pool, std::slice::from_ref(message)).await?;
                stored.pop().ok_or_else(|| {
                    StoreError::Unknown(anyhow::anyhow!("a broadcast was not stored"))
                })
            }
        }
    }

    async fn get_message_head(
        &self,
        app: &AppId,
        id: MessageId,
        deliveries: u32,
    ) -> Result<Option<Message>, StoreError> {
        let mut conn = self.readers.get().await?;
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM messages WHERE app = ? AND id = ?")
                .bind(app.as_str().to_owned())
                .bind(id.0)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error("failed to read a message"))?;
        conn.done();
        let Some(id) = found else {
            return Ok(None);
        };
        Ok(self.load_messages(&[id], Some(deliveries)).await?.pop())
    }

    async fn list_messages(&self, filter: &MessageFilter) -> Result<Vec<Message>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT id FROM messages WHERE 1 = 1");
        if let Some(app) = &filter.app {
            query.push(" AND app = ").push_bind(app.as_str().to_owned());
        }
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(tag) = &filter.tag {
            query.push(" AND tag = ").push_bind(tag.as_str().to_owned());
        }
        if let Some(recipient) = &filter.recipient {
            query
                .push(" AND recipient = ")
                .push_bind(recipient.as_str().to_owned());
        }
        if let Some(related) = &filter.related {
            query
                .push(
                    " AND EXISTS (SELECT 1 FROM message_related_objects r \
                     WHERE r.message_id = messages.id AND r.kind = ",
                )
                .push_bind(related.kind().to_owned())
                .push(" AND r.object_id = ")
                .push_bind(related.object_id().to_owned())
                .push(")");
        }
        if let Some(after) = filter.created_after {
            query.push(" AND created_at >= ").push_bind(millis(after));
        }
        if let Some(before) = filter.created_before {
            query.push(" AND created_at < ").push_bind(millis(before));
        }
        if let Some(before) = filter.before {
            query.push(" AND id < ").push_bind(before.0);
        }
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let mut conn = self.readers.get().await?;
        let ids: Vec<i64> = query
            .build_query_scalar()
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to list messages"))?;
        conn.done();
        self.load_messages(&ids, Some(DELIVERIES_SHOWN)).await
    }

    async fn claim_due_except(
        &self,
        now: OffsetDateTime,
        limit: u32,
        lease: &Lease,
        except: &[AppId],
        deliveries_each: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let now = millis(now);
        // The applications left out, as one JSON array: one bound parameter however many.
        let except = serde_json::to_string(&except.iter().map(AppId::as_str).collect::<Vec<_>>())
            .map_err(|e| StoreError::Unknown(e.into()))?;
        let mut conn = self.pool.get().await?;
        let mut ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(claim_sql()))
            .bind(now)
            .bind(lease.owner.clone())
            .bind(millis(lease.until))
            .bind(except)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to claim due messages"))?;
        conn.done();
        ids.sort_unstable();
        // The deliveries come in one statement for the whole claim, so that a worker sends a
        // small message without reading anything more of it.
        let deliveries = (deliveries_each > 0).then_some(deliveries_each);
        self.load_messages(&ids, deliveries).await
    }

    async fn record_deliveries(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        // Written with the other attempts' results that arrive meanwhile.
        self.attempts
            .write(AttemptWrite::Deliveries(deliveries.to_vec()))
            .await?;
        Ok(())
    }

    async fn renew_lease(
        &self,
        ids: &[MessageId],
        lease: &Lease,
    ) -> Result<Vec<MessageId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<i64> = ids.iter().map(|id| id.0).collect();
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE messages SET lease_until = ");
        query.push_bind(millis(lease.until));
        query
            .push(" WHERE lease_owner = ")
            .push_bind(lease.owner.clone());
        query.push(" AND id IN (");
        let mut list = query.separated(", ");
        for id in &raw {
            list.push_bind(*id);
        }
        query.push(") RETURNING id");
        let mut conn = self.pool.get().await?;
        let mut renewed: Vec<i64> = query
            .build_query_scalar()
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to renew leases"))?;
        conn.done();
        renewed.sort_unstable();
        Ok(renewed.into_iter().map(MessageId).collect())
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let done = sqlx::query(RELEASE_LEASES)
            .bind(owner.to_owned())
            .execute(&mut *conn)
            .await
            .map_err(db_error("failed to release leases"))?;
        conn.done();
        Ok(done.rows_affected())
    }

    async fn due_deliveries(
        &self,
        message: MessageId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ? AND id > ? \
             AND state IN ('pending', 'retrying') ORDER BY id LIMIT ?"
        );
        let mut conn = self.readers.get().await?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(message.0)
            .bind(after.map_or(i64::MIN, |d| d.0))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to read due deliveries"))?;
        conn.done();
        rows.into_iter().map(DeliveryRow::into_domain).collect()
    }

    async fn due_page(
        &self,
        app: &AppId,
        message: MessageId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Option<Vec<DueDelivery>>, StoreError> {
        // One row holding the page as JSON: sqlx hands each row of a statement over from the
        // connection's thread and copies each of its values, which for a page of 500
        // deliveries and their devices cost more than the look-ups (see `due_page_sql`).
        let mut conn = self.readers.get().await?;
        let page: String = sqlx::query_scalar(AssertSqlSafe(due_page_sql()))
            .bind(app.as_str())
            .bind(message.0)
            .bind(after.map_or(i64::MIN, |d| d.0))
            .bind(i64::from(limit))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error("failed to read due deliveries"))?;
        conn.done();
        let rows: Vec<DueRow> = serde_json::from_str(&page).map_err(|e| {
            StoreError::Corrupt(format!(
                "deliveries of message {}: a due delivery or its device: {e}",
                message.0
            ))
        })?;
        let mut page = rows
            .into_iter()
            .map(DueRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        // The aggregate's order is SQLite's choice.
        page.sort_unstable_by_key(|(delivery, _)| delivery.id);
        Ok(Some(page))
    }

    async fn delivery_tally(&self, message: MessageId) -> Result<DeliveryTally, StoreError> {
        // One statement: the counts by state, each row carrying the first error (a constant
        // subquery, which SQLite runs once).
        let mut conn = self.readers.get().await?;
        let rows: Vec<(String, i64, i64, Option<String>, Option<String>)> = sqlx::query_as(
            "WITH f (code, text) AS (SELECT error_code, error_text FROM deliveries \
                 WHERE message_id = ?1 AND error_code IS NOT NULL ORDER BY id LIMIT 1) \
             SELECT state, COUNT(*), COUNT(error_code), (SELECT code FROM f), \
                 (SELECT text FROM f) \
             FROM deliveries WHERE message_id = ?1 GROUP BY state",
        )
        .bind(message.0)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to count deliveries"))?;
        conn.done();
        let first = rows
            .first()
            .and_then(|row| row.3.clone().map(|code| (code, row.4.clone())));
        let counts = rows
            .into_iter()
            .map(|(state, count, errors, _, _)| (state, count, errors))
            .collect();
        tally_from(counts, first)
    }

    async fn give_up_due_deliveries(
        &self,
        message: MessageId,
        lease: &Lease,
        give_up: &GiveUp,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("failed to begin a transaction"))?;
        let held: Option<i64> =
            sqlx::query_scalar("SELECT id FROM messages WHERE id = ? AND lease_owner = ?")
                .bind(message.0)
                .bind(lease.owner.clone())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error("failed to check a lease"))?;
        if held.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE deliveries SET state = 'failed', error_code = ?, \
             error_text = CASE WHEN error_text IS NULL THEN ? \
                 ELSE ? || ' (last error: ' || error_text || ')' END, updated_at = ? \
             WHERE message_id = ? AND state IN ('pending', 'retrying')",
        )
        .bind(give_up.code.clone())
        .bind(give_up.reason.clone())
        .bind(give_up.reason.clone())
        .bind(millis(now))
        .bind(message.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error("failed to give up deliveries"))?;
        tx.commit()
            .await
            .map_err(db_error("failed to commit given-up deliveries"))?;
        Ok(true)
    }

    async fn save_progress<'a>(
        &self,
        message: &Message,
        lease: Option<&'a Lease>,
    ) -> Result<bool, StoreError> {
        if message.deliveries.len() > MAX_GROUPED_DELIVERIES {
            // An operator's save of a message with all its deliveries: written alone rather
            // than copied into the queue.
            return self.attempts.store().save_alone(message, lease).await;
        }
        // Written with the other attempts' results that arrive meanwhile.
        self.attempts
            .write(AttemptWrite::Progress(
                Box::new(message.clone()),
                lease.cloned(),
            ))
            .await
    }

    async fn find_template_message(
        &self,
        app: &AppId,
        slug: &Slug,
        related: &[RelatedObject],
    ) -> Result<Option<MessageId>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT id FROM messages WHERE app = ");
        query.push_bind(app.as_str().to_owned());
        query
            .push(" AND template_slug = ")
            .push_bind(slug.as_str().to_owned());
        for object in related {
            query
                .push(
                    " AND EXISTS (SELECT 1 FROM message_related_objects r \
                     WHERE r.message_id = messages.id AND r.kind = ",
                )
                .push_bind(object.kind().to_owned())
                .push(" AND r.object_id = ")
                .push_bind(object.object_id().to_owned())
                .push(")");
        }
        query.push(" ORDER BY id DESC LIMIT 1");
        let mut conn = self.readers.get().await?;
        let id: Option<i64> = query
            .build_query_scalar()
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("failed to look for a template's message"))?;
        conn.done();
        Ok(id.map(MessageId))
    }

    async fn count_due(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM messages WHERE {DUE}");
        let mut conn = self.readers.get().await?;
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(millis(now))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error("failed to count due messages"))?;
        conn.done();
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// A tally from `(state, count, count with an error code)` rows and the first error.
pub(crate) fn tally_from(
    counts: Vec<(String, i64, i64)>,
    first: Option<(String, Option<String>)>,
) -> Result<DeliveryTally, StoreError> {
    let mut tally = DeliveryTally::default();
    let mut errors = 0;
    for (state, count, with_error) in counts {
        let state: DeliveryState = state
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("deliveries.state: {e}")))?;
        tally.count(state, None, None, u64::try_from(count).unwrap_or(0));
        errors += u64::try_from(with_error).unwrap_or(0);
    }
    tally.errors = errors;
    tally.first_error = first;
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use clarion_domain::message::MessageState;

    use super::{
        DUE, RELEASE_LEASES, SAVE_PROGRESS, WRITE_DELIVERIES, claim_sql, first_deliveries_sql,
        messages_as_json,
    };
    use crate::grouped::batch_contract::batch_contract_tests;
    use crate::sqlite::SqliteStore;
    use crate::sqlite::tests::plan_of;

    async fn memory_store() -> SqliteStore {
        SqliteStore::connect("sqlite::memory:")
            .await
            .expect("store")
    }

    /// An in-memory database needs nothing done after a test.
    async fn keep(_store: SqliteStore) {}

    batch_contract_tests!(memory_store(), keep);

    #[tokio::test]
    async fn saving_progress_and_deliveries_finds_each_row_by_its_id() {
        let store = memory_store().await;
        for (statement, table) in [
            (&SAVE_PROGRESS, "messages"),
            (&WRITE_DELIVERIES, "deliveries"),
        ] {
            let plan = plan_of(&store, statement.statement(4).0, &[]).await;
            assert!(
                plan.contains(&format!("SEARCH {table} USING INTEGER PRIMARY KEY")),
                "{plan}"
            );
            assert!(!plan.contains(&format!("SCAN {table}")), "{plan}");
        }
    }

    #[tokio::test]
    async fn the_first_deliveries_of_messages_are_ranges_of_the_message_index() {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("store");
        let plan = plan_of(&store, first_deliveries_sql(), &["[1, 2]", "1000"]).await;
        assert!(
            plan.contains(
                "SEARCH deliveries USING INDEX deliveries_message (message_id=? AND rowid<?)"
            ),
            "{plan}"
        );
        assert!(!plan.contains("SCAN deliveries"), "{plan}");
    }

    #[tokio::test]
    async fn a_claim_reads_the_due_messages_of_each_application_from_their_index() {
        let store = memory_store().await;
        let plan = plan_of(&store, claim_sql(), &["0", "w", "0", "[]", "500"]).await;
        assert!(plan.contains("messages_due_by_app"), "{plan}");
        assert!(!plan.contains("messages_state_next_attempt"), "{plan}");
        assert!(!plan.contains("SCAN messages"), "{plan}");
    }

    #[tokio::test]
    async fn releasing_a_workers_leases_reads_only_leased_messages() {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("store");
        let plan = plan_of(&store, RELEASE_LEASES, &["worker"]).await;
        assert!(plan.contains("messages_leased"), "{plan}");
        assert!(!plan.contains("SCAN messages"), "{plan}");
    }

    #[test]
    fn the_due_condition_spells_the_domain_state_names() {
        for state in [MessageState::Waiting, MessageState::ErrorRetry] {
            assert!(DUE.contains(&format!("'{state}'")), "{state}");
        }
    }

    #[test]
    fn messages_read_as_json_write_the_flag_as_a_json_boolean() {
        let sql = messages_as_json();
        assert_eq!(sql.matches("retry_sending").count(), 1, "{sql}");
        assert!(sql.contains("WHEN retry_sending THEN 'true'"), "{sql}");
    }
}
