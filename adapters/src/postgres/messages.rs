//! [`MessageStore`] on PostgreSQL: messages, their related objects and deliveries, and the
//! claim of due messages with a lease (`FOR UPDATE SKIP LOCKED`).

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
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;

use crate::grouped::attempts::{AttemptBatch, Save};
use crate::grouped::{
    AttemptWrite, Grouped, MAX_ATTEMPT_ROWS, MAX_ATTEMPT_WRITES, MAX_GROUPED_DELIVERIES, WriteMany,
};
use crate::held::Held;
use crate::postgres::rows::{
    DELIVERY_COLUMNS, DeliveryRow, DueRow, MESSAGE_COLUMNS, MessageRow, RelatedRow, json_text,
    opt_json_text, target_columns,
};
use crate::postgres::{PgStore, db_error, ms, opt_ms};
use crate::rows::{MAX_BATCH, MAX_BATCH_DELIVERIES, inserted_delivery, inserted_message, weight};

/// The default and the largest page of `list_messages`.
const DEFAULT_LIMIT: u32 = 50;
/// A broadcast with at least this many deliveries has the table analysed after it is stored.
pub const ANALYZE_AFTER_DELIVERIES: u64 = 10_000;
const MAX_LIMIT: u32 = 1000;

/// How many batches of messages, and of attempt results, are written at the same time: each
/// holds a connection of the pool (10 by default) while it runs, and the server flushes the
/// log once for the commits that arrive together.
const PG_WRITERS: usize = 4;

/// The condition that makes a message due at the time bound to `$1`.
const DUE: &str = "(state = 'WAITING' OR (state = 'ERROR_RETRY' \
    AND (next_attempt_at IS NULL OR next_attempt_at <= $1)))";

/// Claims, under the lease of owner `$2` until `$3`, the first `$4` messages in id order that
/// are due at `$1` with their lease free or expired, none of the applications in `$5`.
///
/// It reads the partial index `messages_due_by_app`, which holds only the messages that may
/// be due, an application at a time: the applications that have any (one look-up each in the
/// index), then the first `$4` of each that is not left out. Its cost is thus the
/// applications and the messages claimed (and those leased in flight, skipped), not the
/// backlog: scanning every due message in id order for the first that is not left out read
/// the whole backlog of an application that was.
///
/// Each application's subquery locks the rows it picks and skips rows another transaction
/// has locked, so concurrent claimers split the backlog without waiting; a row another
/// claimer leased and committed meanwhile is re-checked against the lease condition and
/// left out. The chosen ids come as an array, so that the update finds each by its key
/// (joined to the subquery, the planner read the whole table to hash it).
const CLAIM: &str = "WITH RECURSIVE apps (app) AS ( \
        SELECT (SELECT MIN(app) FROM messages WHERE state IN ('WAITING', 'ERROR_RETRY')) \
        UNION ALL \
        SELECT (SELECT MIN(app) FROM messages \
            WHERE state IN ('WAITING', 'ERROR_RETRY') AND app > apps.app) \
        FROM apps WHERE apps.app IS NOT NULL) \
    UPDATE messages SET lease_owner = $2, lease_until = $3 WHERE id = ANY (ARRAY ( \
        SELECT claimed.id FROM apps CROSS JOIN LATERAL ( \
            SELECT id FROM messages WHERE state IN ('WAITING', 'ERROR_RETRY') \
            AND app = apps.app AND (state = 'WAITING' OR (state = 'ERROR_RETRY' \
                AND (next_attempt_at IS NULL OR next_attempt_at <= $1))) \
            AND (lease_until IS NULL OR lease_until <= $1) \
            ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) AS claimed \
        WHERE apps.app IS NOT NULL AND apps.app <> ALL($5) \
        ORDER BY claimed.id LIMIT $4)) \
    RETURNING id";

/// Declares a struct of column arrays, one `Vec` of each given element type, with
/// `with_capacity` and `bind`, which binds the arrays in field order after those a query
/// already binds: the parameters of a statement over `UNNEST` arrays.
macro_rules! bound_columns {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident: $ty:ty),+ $(,)? }) => {
        $(#[$meta])*
        struct $name {
            $($field: Vec<$ty>,)+
        }

        impl $name {
            fn with_capacity(n: usize) -> $name {
                $name {
                    $($field: Vec::with_capacity(n),)+
                }
            }

            fn bind<'q, O>(
                self,
                query: QueryAs<'q, Postgres, O, PgArguments>,
            ) -> QueryAs<'q, Postgres, O, PgArguments> {
                query$(.bind(self.$field))+
            }
        }
    };
}

impl PgStore {
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
        // The reads, one after the other on one connection.
        let mut conn = self.pool.get().await?;
        let rows: Vec<MessageRow> = sqlx::query_as(AssertSqlSafe(MESSAGES_BY_ID.as_str()))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to read messages"))?;

        let related_rows: Vec<RelatedRow> = sqlx::query_as(
            "SELECT id, message_id, kind, object_id FROM message_related_objects \
             WHERE message_id = ANY($1) ORDER BY id",
        )
        .bind(ids)
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
            let delivery_rows: Vec<DeliveryRow> =
                sqlx::query_as(AssertSqlSafe(FIRST_DELIVERIES.as_str()))
                    .bind(ids)
                    .bind(i64::from(each))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_error("failed to read deliveries"))?;
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

/// Writes deliveries, each unless it is already accepted or debug, which are final, in one
/// statement.
async fn write_deliveries(
    conn: &mut PgConnection,
    deliveries: &[&Delivery],
) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let columns = DeliveryColumns::of(deliveries.iter().map(|&delivery| (delivery, None)))?;
    let _: Vec<(i64,)> = columns
        .bind(sqlx::query_as(AssertSqlSafe(WRITE_DELIVERIES.as_str())))
        .fetch_all(conn)
        .await
        .map_err(db_error("failed to record deliveries"))?;
    Ok(())
}

// The statements of the hot paths whose text holds a column list: formatted once, not on
// every call.

/// The messages whose ids are in the array `$1`.
static MESSAGES_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1)"));

/// The first `$2` deliveries of each message whose id is in the array `$1`, in id order.
/// Each message's come straight from the index on (message_id, id). A window function
/// (`ROW_NUMBER() OVER (PARTITION BY message_id)`) sorted every delivery of every message
/// instead: 0.6 s for a broadcast to 1,000,000.
static FIRST_DELIVERIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM UNNEST($1::BIGINT[]) AS wanted (message) \
         CROSS JOIN LATERAL (SELECT {DELIVERY_COLUMNS} FROM deliveries \
         WHERE message_id = wanted.message ORDER BY id LIMIT $2) AS d ORDER BY id"
    )
});

/// The first `$3` deliveries of message `$1` after id `$2` that are still to send.
static DUE_DELIVERIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = $1 AND id > $2 \
         AND state IN ('pending', 'retrying') ORDER BY id LIMIT $3"
    )
});

/// [`DUE_DELIVERIES`] of application `$1`, each with what a send needs of its device. Each
/// device is a `LATERAL` primary-key look-up, as in `get_devices`, whatever the statistics
/// say.
static DUE_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT d.*, v.platform, v.token_key, v.p256dh, v.auth, v.active, \
         v.deactivation_reason \
         FROM (SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = $2 AND id > $3 \
         AND state IN ('pending', 'retrying') ORDER BY id LIMIT $4) AS d \
         LEFT JOIN LATERAL (SELECT platform, token_key, p256dh, auth, active, \
         deactivation_reason FROM devices WHERE id = d.device_id AND app = $1) AS v ON TRUE \
         ORDER BY d.id"
    )
});

/// The statement of [`write_deliveries`].
static WRITE_DELIVERIES: LazyLock<String> = LazyLock::new(|| update_deliveries(1, ""));

/// An UPDATE of the deliveries in the arrays of [`DeliveryColumns`] bound from `$first` on,
/// each unless it is final (accepted or debug), and when the condition `also` holds too.
fn update_deliveries(first: usize, also: &str) -> String {
    let [
        id,
        state,
        attempts,
        provider,
        code,
        text,
        details,
        updated,
        owner,
    ] = std::array::from_fn::<usize, 9, _>(|i| first + i);
    format!(
        "UPDATE deliveries d SET state = u.state, attempts = u.attempts, \
         provider_id = u.provider_id, error_code = u.error_code, error_text = u.error_text, \
         details = u.details::jsonb, updated_at = u.updated_at \
         FROM UNNEST(${id}::bigint[], ${state}::text[], ${attempts}::bigint[], \
             ${provider}::text[], ${code}::text[], ${text}::text[], ${details}::text[], \
             ${updated}::timestamptz[], ${owner}::bigint[]) \
             AS u (id, state, attempts, provider_id, error_code, error_text, details, \
             updated_at, owner) \
         WHERE d.id = u.id AND d.state NOT IN ('accepted', 'debug'){also}"
    )
}

bound_columns! {
    /// The columns of deliveries to write, as the arrays [`update_deliveries`] reads; `owner`
    /// is the message whose save the write of a delivery depends on, if any.
    struct DeliveryColumns {
        ids: i64,
        states: &'static str,
        attempts: i64,
        provider_ids: Option<String>,
        error_codes: Option<String>,
        error_texts: Option<String>,
        details: Option<String>,
        updated: OffsetDateTime,
        owners: Option<i64>,
    }
}

impl DeliveryColumns {
    fn of<'d>(
        deliveries: impl ExactSizeIterator<Item = (&'d Delivery, Option<MessageId>)>,
    ) -> Result<DeliveryColumns, StoreError> {
        let n = deliveries.len();
        let mut c = DeliveryColumns::with_capacity(n);
        for (delivery, owner) in deliveries {
            c.ids.push(delivery.id.0);
            c.states.push(delivery.state().as_str());
            c.attempts.push(i64::from(delivery.attempts()));
            c.provider_ids
                .push(delivery.provider_id().map(str::to_owned));
            c.error_codes.push(delivery.error_code().map(str::to_owned));
            c.error_texts.push(delivery.error_text().map(str::to_owned));
            c.details.push(opt_json_text(delivery.details())?);
            c.updated.push(ms(delivery.updated_at()));
            c.owners.push(owner.map(|id| id.0));
        }
        Ok(c)
    }
}

/// The transaction of grouped messages on PostgreSQL: each message's row, then every related
/// object and every listed delivery of the batch in one statement each.
pub(crate) struct PgMessages {
    pool: Held<Postgres>,
}

impl PgMessages {
    pub(crate) fn grouped(pool: Held<Postgres>) -> Grouped<PgMessages> {
        Grouped::new(PgMessages { pool })
    }

    /// Writes `messages` in one transaction and returns them as stored, a broadcast without
    /// its deliveries, with the number of deliveries the broadcasts created.
    async fn insert(
        conn: &mut PgConnection,
        messages: &[NewMessage],
    ) -> Result<(Vec<Message>, u64), StoreError> {
        let mut tx = conn
            .begin()
            .await
            .map_err(db_error("failed to begin a transaction"))?;
        let ids = insert_heads(&mut tx, messages).await?;
        let mut broadcast = 0;
        for (message, &id) in messages.iter().zip(&ids) {
            if let NewDeliveries::Broadcast { platform, channel } = &message.deliveries {
                broadcast += insert_broadcast(&mut tx, id, message, *platform, *channel).await?;
            }
        }
        insert_related(&mut tx, messages, &ids).await?;
        let mut deliveries = insert_listed(&mut tx, messages, &ids).await?.into_iter();
        tx.commit()
            .await
            .map_err(db_error("failed to commit messages"))?;
        let stored = messages
            .iter()
            .zip(ids)
            .map(|(message, id)| {
                let listed = match &message.deliveries {
                    NewDeliveries::Listed(list) => deliveries.by_ref().take(list.len()).collect(),
                    NewDeliveries::Broadcast { .. } => Vec::new(),
                };
                inserted_message(message, id, listed)
            })
            .collect::<Result<_, _>>()?;
        Ok((stored, broadcast))
    }
}

#[async_trait]
impl WriteMany for PgMessages {
    type Item = NewMessage;
    type Output = Message;
    const MAX_ITEMS: usize = MAX_BATCH;
    const MAX_WEIGHT: usize = MAX_BATCH_DELIVERIES;
    const WRITERS: usize = PG_WRITERS;

    fn weight(message: &NewMessage) -> usize {
        weight(message)
    }

    async fn write_many(&self, messages: &[NewMessage]) -> Result<Vec<Message>, StoreError> {
        let mut conn = self.pool.get().await?;
        let stored = if messages
            .iter()
            .any(|m| matches!(m.deliveries, NewDeliveries::Broadcast { .. }))
        {
            PgMessages::insert(&mut conn, messages).await?.0
        } else {
            insert_listed_messages(&mut conn, messages).await?
        };
        conn.done();
        Ok(stored)
    }
}

bound_columns! {
    /// The columns of one message's row, as the arrays [`insert_heads`] binds.
    struct Heads {
        app: String,
        target_kind: &'static str,
        recipient: Option<String>,
        target_json: Option<String>,
        heading: Option<String>,
        body: String,
        url: Option<String>,
        extra_data: Option<String>,
        template_slug: Option<String>,
        tag: Option<String>,
        priority: &'static str,
        options: String,
        retry_sending: bool,
        sender: &'static str,
        state: &'static str,
        error: Option<String>,
        attempts: i64,
        next_attempt_at: Option<OffsetDateTime>,
        sent_at: Option<OffsetDateTime>,
        queued_at: OffsetDateTime,
        now: OffsetDateTime,
        lease_owner: Option<String>,
        lease_until: Option<OffsetDateTime>,
    }
}

/// The columns of a message's row that [`Heads`] gives, as a string literal.
macro_rules! message_columns {
    () => {
        "app, target_kind, recipient, target_json, heading, body, url, extra_data, \
         template_slug, tag, priority, options, retry_sending, sender, state, error, \
         number_of_send_attempts, next_attempt_at, sent_at, queued_at, extra_sender_data, \
         created_at, changed_at, lease_owner, lease_until"
    };
}

/// The values of [`message_columns`] taken from the rows of [`message_arrays`].
macro_rules! message_values {
    () => {
        "m.app, m.target_kind, m.recipient, m.target_json::jsonb, m.heading, m.body, m.url, \
         m.extra_data::jsonb, m.template_slug, m.tag, m.priority, m.options::jsonb, \
         m.retry_sending, m.sender, m.state, m.error, m.attempts, m.next_attempt_at, \
         m.sent_at, m.queued_at, NULL, m.now, m.now, m.lease_owner, m.lease_until"
    };
}

/// The arrays that [`Heads::bind`] binds as `$1` to `$23`, one row `m` a message, numbered
/// from 1 in `n`.
macro_rules! message_arrays {
    () => {
        "UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
         $13::boolean[], $14::text[], $15::text[], $16::text[], $17::bigint[], \
         $18::timestamptz[], $19::timestamptz[], $20::timestamptz[], $21::timestamptz[], \
         $22::text[], $23::timestamptz[]) WITH ORDINALITY \
         AS m (app, target_kind, recipient, target_json, heading, body, url, extra_data, \
         template_slug, tag, priority, options, retry_sending, sender, state, error, \
         attempts, next_attempt_at, sent_at, queued_at, now, lease_owner, lease_until, n)"
    };
}

impl Heads {
    /// The columns of `messages`' rows, in order.
    fn of(messages: &[NewMessage]) -> Result<Heads, StoreError> {
        let mut h = Heads::with_capacity(messages.len());
        for message in messages {
            let spec = &message.spec;
            let (target_kind, recipient, target_json) = target_columns(&spec.target)?;
            let progress = &message.progress;
            h.app.push(spec.app.as_str().to_owned());
            h.target_kind.push(target_kind);
            h.recipient.push(recipient);
            h.target_json.push(target_json);
            h.heading.push(spec.content.heading.clone());
            h.body.push(spec.content.body.clone());
            h.url.push(spec.content.url.clone());
            h.extra_data
                .push(opt_json_text(spec.content.extra_data.as_ref())?);
            h.template_slug
                .push(spec.template_slug.as_ref().map(|s| s.as_str().to_owned()));
            h.tag.push(spec.tag.as_ref().map(|t| t.as_str().to_owned()));
            h.priority.push(spec.priority.as_str());
            h.options.push(json_text(&spec.options)?);
            h.retry_sending.push(spec.retry_sending);
            h.sender.push(message.sender.as_str());
            h.state.push(progress.state.as_str());
            h.error.push(progress.error.clone());
            h.attempts.push(i64::from(progress.number_of_send_attempts));
            h.next_attempt_at.push(opt_ms(progress.next_attempt_at));
            h.sent_at.push(opt_ms(progress.sent_at));
            h.queued_at.push(ms(progress.queued_at));
            h.now.push(ms(message.now));
            h.lease_owner
                .push(message.lease.as_ref().map(|l| l.owner.clone()));
            h.lease_until
                .push(message.lease.as_ref().map(|l| ms(l.until)));
        }
        Ok(h)
    }
}

/// Inserts messages without broadcasts, their related objects and listed deliveries in one
/// statement, atomic without a transaction, and returns them as stored.
///
/// A batch written as a transaction of its own statements (BEGIN, the rows, the related
/// objects, the deliveries, COMMIT) made five round trips, each a wake-up of the server's
/// backend and of the writer on two busy cores, and the callers of the next batch waited for
/// them all. Here the statement takes the messages' ids from their sequence itself (the
/// volatile `nextval` is evaluated once a row, after the ordering, so the ids follow the
/// batch's order), so that the related objects and deliveries can name them within the same
/// statement. The deliveries' ids are taken as they are inserted, in the order of the arrays,
/// so sorted they are the deliveries' in order.
async fn insert_listed_messages(
    conn: &mut PgConnection,
    messages: &[NewMessage],
) -> Result<Vec<Message>, StoreError> {
    let heads = Heads::of(messages)?;
    let mut related_owners = Vec::new();
    let mut kinds = Vec::new();
    let mut object_ids = Vec::new();
    let mut owners = Vec::new();
    let mut devices = Vec::new();
    let mut channels = Vec::new();
    let mut listed = 0;
    for (n, message) in (1_i64..).zip(messages) {
        for object in &message.spec.related_objects {
            related_owners.push(n);
            kinds.push(object.kind());
            object_ids.push(object.object_id());
        }
        if let NewDeliveries::Listed(list) = &message.deliveries {
            for (channel, device) in list {
                owners.push(n);
                devices.push(device.map(|d| d.0));
                channels.push(channel.as_str());
            }
            listed += list.len();
        }
    }
    let (ids, mut delivery_ids): (Vec<i64>, Vec<i64>) = heads
        .bind(sqlx::query_as(concat!(
            "WITH m AS (SELECT nextval('messages_id_seq') AS id, m.* FROM ",
            message_arrays!(),
            " ORDER BY n), \
             stored AS (INSERT INTO messages (id, ",
            message_columns!(),
            ") SELECT m.id, ",
            message_values!(),
            " FROM m ORDER BY m.n), \
             related AS (INSERT INTO message_related_objects (message_id, kind, object_id) \
                 SELECT m.id, r.kind, r.object_id \
                 FROM UNNEST($24::bigint[], $25::text[], $26::text[]) WITH ORDINALITY \
                     AS r (owner, kind, object_id, k) \
                 JOIN m ON m.n = r.owner ORDER BY r.k), \
             listed AS (INSERT INTO deliveries \
                     (message_id, device_id, channel, state, attempts, updated_at) \
                 SELECT m.id, d.device_id, d.channel, 'pending', 0, m.now \
                 FROM UNNEST($27::bigint[], $28::bigint[], $29::text[]) WITH ORDINALITY \
                     AS d (owner, device_id, channel, k) \
                 JOIN m ON m.n = d.owner ORDER BY d.k RETURNING id) \
             SELECT ARRAY(SELECT id FROM m ORDER BY n), ARRAY(SELECT id FROM listed)"
        )))
        .bind(related_owners)
        .bind(kinds)
        .bind(object_ids)
        .bind(owners)
        .bind(devices)
        .bind(channels)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("failed to insert messages"))?;
    if ids.len() != messages.len() || delivery_ids.len() != listed {
        return Err(StoreError::Unknown(anyhow::anyhow!(
            "{} messages and {} deliveries were inserted for {} and {} given",
            ids.len(),
            delivery_ids.len(),
            messages.len(),
            listed
        )));
    }
    delivery_ids.sort_unstable();
    let mut delivery_ids = delivery_ids.into_iter();
    messages
        .iter()
        .zip(ids)
        .map(|(message, id)| {
            let deliveries = match &message.deliveries {
                NewDeliveries::Listed(list) => list
                    .iter()
                    .zip(delivery_ids.by_ref())
                    .map(|(delivery, delivery_id)| {
                        inserted_delivery(delivery_id, id, delivery, message.now)
                    })
                    .collect(),
                NewDeliveries::Broadcast { .. } => Vec::new(),
            };
            inserted_message(message, id, deliveries)
        })
        .collect()
}

/// Inserts the rows of `messages` in one statement and returns their ids, in order.
///
/// The statement inserts the rows in the arrays' order and takes each row's id from the
/// sequence as it inserts it, so the ids it returns, sorted, are the rows' in order. One
/// statement rather than one per message: a batch's round trips are what a PostgreSQL writer
/// waits for.
async fn insert_heads(
    conn: &mut PgConnection,
    messages: &[NewMessage],
) -> Result<Vec<i64>, StoreError> {
    let h = Heads::of(messages)?;
    let rows: Vec<(i64,)> = h
        .bind(sqlx::query_as(concat!(
            "INSERT INTO messages (",
            message_columns!(),
            ") SELECT ",
            message_values!(),
            " FROM ",
            message_arrays!(),
            " ORDER BY n RETURNING id"
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to insert messages"))?;
    let mut ids: Vec<i64> = rows.into_iter().map(|(id,)| id).collect();
    if ids.len() != messages.len() {
        return Err(StoreError::Unknown(anyhow::anyhow!(
            "{} messages were inserted for {} given",
            ids.len(),
            messages.len()
        )));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Inserts one delivery per active device of the message's application in one
/// INSERT ... SELECT: the devices never leave the database, and the message appears with all
/// its deliveries or not at all. The devices' platform names are the channel names. Returns
/// how many deliveries it created.
async fn insert_broadcast(
    conn: &mut PgConnection,
    id: i64,
    message: &NewMessage,
    platform: Option<Platform>,
    channel: Option<Channel>,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO deliveries (message_id, device_id, channel, state, attempts, \
         updated_at) SELECT $1, id, COALESCE($2, platform), $3, 0, $4 FROM devices \
         WHERE app = $5 AND active AND ($6::text IS NULL OR platform = $6) \
         ORDER BY id",
    )
    .bind(id)
    .bind(channel.map(Channel::as_str))
    .bind(DeliveryState::Pending.as_str())
    .bind(ms(message.now))
    .bind(message.spec.app.as_str().to_owned())
    .bind(platform.map(Platform::as_str))
    .execute(&mut *conn)
    .await
    .map_err(db_error("failed to insert a broadcast's deliveries"))?;
    Ok(done.rows_affected())
}

/// Inserts the related objects of every message (`ids` their ids) in one statement, in the
/// given order (their ids keep it).
async fn insert_related(
    conn: &mut PgConnection,
    messages: &[NewMessage],
    ids: &[i64],
) -> Result<(), StoreError> {
    let mut owners = Vec::new();
    let mut kinds = Vec::new();
    let mut object_ids = Vec::new();
    for (message, &id) in messages.iter().zip(ids) {
        for object in &message.spec.related_objects {
            owners.push(id);
            kinds.push(object.kind());
            object_ids.push(object.object_id());
        }
    }
    if owners.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO message_related_objects (message_id, kind, object_id) \
         SELECT message_id, kind, object_id \
         FROM UNNEST($1::bigint[], $2::text[], $3::text[]) WITH ORDINALITY \
             AS r (message_id, kind, object_id, n) \
         ORDER BY n",
    )
    .bind(owners)
    .bind(kinds)
    .bind(object_ids)
    .execute(&mut *conn)
    .await
    .map_err(db_error("failed to insert related objects"))?;
    Ok(())
}

/// Inserts the listed deliveries of every message (`ids` their ids) in one statement and
/// returns them in order.
///
/// The statement inserts the rows in the arrays' order and takes each row's id from the
/// sequence as it inserts it, so the ids it returns, sorted, are the rows' in order.
async fn insert_listed(
    conn: &mut PgConnection,
    messages: &[NewMessage],
    ids: &[i64],
) -> Result<Vec<Delivery>, StoreError> {
    let mut owners = Vec::new();
    let mut devices = Vec::new();
    let mut channels = Vec::new();
    let mut times = Vec::new();
    let mut listed = Vec::new();
    for (message, &id) in messages.iter().zip(ids) {
        if let NewDeliveries::Listed(list) = &message.deliveries {
            for delivery in list {
                let (channel, device) = delivery;
                owners.push(id);
                devices.push(device.map(|d| d.0));
                channels.push(channel.as_str());
                times.push(ms(message.now));
                listed.push((id, delivery, message.now));
            }
        }
    }
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    let mut delivery_ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO deliveries (message_id, device_id, channel, state, attempts, updated_at) \
         SELECT message_id, device_id, channel, 'pending', 0, updated_at \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[]) \
             WITH ORDINALITY AS d (message_id, device_id, channel, updated_at, n) \
         ORDER BY n RETURNING id",
    )
    .bind(owners)
    .bind(devices)
    .bind(channels)
    .bind(times)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("failed to insert deliveries"))?;
    if delivery_ids.len() != listed.len() {
        return Err(StoreError::Unknown(anyhow::anyhow!(
            "{} deliveries were inserted for {} listed",
            delivery_ids.len(),
            listed.len()
        )));
    }
    delivery_ids.sort_unstable();
    Ok(delivery_ids
        .into_iter()
        .zip(listed)
        .map(|(id, (message, delivery, now))| inserted_delivery(id, message, delivery, now))
        .collect())
}

/// The transaction of grouped attempt results on PostgreSQL: the progress of every message
/// in one statement, then every delivery in another (see [`AttemptBatch`]), committed once.
/// A batch that is one statement needs no transaction.
pub(crate) struct PgAttempts {
    pool: Held<Postgres>,
}

impl PgAttempts {
    pub(crate) fn grouped(pool: Held<Postgres>) -> Grouped<PgAttempts> {
        Grouped::new(PgAttempts { pool })
    }

    /// Saves `message` in a transaction of its own.
    async fn save_alone(
        &self,
        message: &Message,
        lease: Option<&Lease>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let mut tx = conn
            .begin()
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
impl WriteMany for PgAttempts {
    type Item = AttemptWrite;
    type Output = bool;
    const MAX_ITEMS: usize = MAX_ATTEMPT_WRITES;
    const MAX_WEIGHT: usize = MAX_ATTEMPT_ROWS;
    const WRITERS: usize = PG_WRITERS;

    fn weight(write: &AttemptWrite) -> usize {
        write.weight()
    }

    async fn write_many(&self, writes: &[AttemptWrite]) -> Result<Vec<bool>, StoreError> {
        let batch = AttemptBatch::new(writes);
        if let [run] = batch.runs()
            && let Some(deliveries) = run.deliveries_once()
        {
            // The usual batch: one statement, without a transaction's extra round trips.
            let mut conn = self.pool.get().await?;
            let saved = save_at_once(&mut conn, &run.saves(), deliveries).await?;
            conn.done();
            return Ok(run.outcomes(&saved).collect());
        }
        if batch.is_one_statement() {
            // One statement, without a transaction's extra round trips.
            let mut conn = self.pool.get().await?;
            let written = write_attempts(&mut conn, &batch).await?;
            conn.done();
            return Ok(written);
        }
        let mut conn = self.pool.get().await?;
        let mut tx = conn
            .begin()
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
    conn: &mut PgConnection,
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
/// [`MessageStore::save_progress`]), in one statement over arrays; returns the ids of the
/// messages it saved. No message may appear twice.
async fn save_progress(
    conn: &mut PgConnection,
    saves: &[Save<'_>],
) -> Result<HashSet<MessageId>, StoreError> {
    if saves.is_empty() {
        return Ok(HashSet::new());
    }
    let saved: Vec<(i64,)> = SaveColumns::of(saves)?
        .bind(sqlx::query_as(SAVE_PROGRESS))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to save the progress of messages"))?;
    Ok(saved.into_iter().map(|(id,)| MessageId(id)).collect())
}

/// Saves the progress of messages and writes deliveries, each when the message it depends on
/// (if any) is saved, in one statement, atomic without a transaction (see
/// [`crate::grouped::attempts::AttemptRun::deliveries_once`]); returns the ids of the messages it
/// saved.
///
/// A `now` send waits for this write, and a transaction of its own statements (BEGIN, the
/// saves, the deliveries, COMMIT) made four round trips where one does.
async fn save_at_once(
    conn: &mut PgConnection,
    saves: &[Save<'_>],
    deliveries: Vec<(&Delivery, Option<MessageId>)>,
) -> Result<HashSet<MessageId>, StoreError> {
    let deliveries = DeliveryColumns::of(deliveries.into_iter())?;
    let saved: Vec<(i64,)> = deliveries
        .bind(SaveColumns::of(saves)?.bind(sqlx::query_as(AssertSqlSafe(SAVE_AT_ONCE.as_str()))))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to save the results of attempts"))?;
    Ok(saved.into_iter().map(|(id,)| MessageId(id)).collect())
}

/// The statement of [`save_at_once`]: [`SAVE_PROGRESS`] and [`update_deliveries`] of the
/// deliveries whose message, if any, it saved.
static SAVE_AT_ONCE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH saved AS ({SAVE_PROGRESS}), written AS ({}) SELECT id FROM saved",
        update_deliveries(
            11,
            " AND (u.owner IS NULL OR u.owner IN (SELECT id FROM saved))"
        )
    )
});

bound_columns! {
    /// The columns of saves, as the arrays `$1` to `$10` of [`SAVE_PROGRESS`].
    struct SaveColumns {
        ids: i64,
        states: &'static str,
        errors: Option<String>,
        attempts: i64,
        next_attempts: Option<OffsetDateTime>,
        sent: Option<OffsetDateTime>,
        queued: OffsetDateTime,
        extra: Option<String>,
        changed: OffsetDateTime,
        owners: Option<String>,
    }
}

impl SaveColumns {
    fn of(saves: &[Save<'_>]) -> Result<SaveColumns, StoreError> {
        let n = saves.len();
        let mut c = SaveColumns::with_capacity(n);
        for (message, lease) in saves {
            let progress = message.progress();
            c.ids.push(message.id.0);
            c.states.push(progress.state.as_str());
            c.errors.push(progress.error.clone());
            c.attempts.push(i64::from(progress.number_of_send_attempts));
            c.next_attempts.push(opt_ms(progress.next_attempt_at));
            c.sent.push(opt_ms(progress.sent_at));
            c.queued.push(ms(progress.queued_at));
            c.extra
                .push(opt_json_text(message.extra_sender_data.as_ref())?);
            c.changed.push(ms(message.changed_at));
            c.owners.push(lease.map(|l| l.owner.clone()));
        }
        Ok(c)
    }
}

/// Saves the progress of the messages in its arrays and releases their leases: a worker's
/// (its id in `owner`) only while it holds the lease, an operator's (`owner` NULL) only while
/// no lease runs at the row's `changed_at`.
const SAVE_PROGRESS: &str = "UPDATE messages m SET state = s.state, error = s.error, \
    number_of_send_attempts = s.attempts, next_attempt_at = s.next_attempt_at, \
    sent_at = s.sent_at, queued_at = s.queued_at, \
    extra_sender_data = s.extra_sender_data::jsonb, changed_at = s.changed_at, \
    lease_owner = NULL, lease_until = NULL \
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], \
        $6::timestamptz[], $7::timestamptz[], $8::text[], $9::timestamptz[], $10::text[]) \
        AS s (id, state, error, attempts, next_attempt_at, sent_at, queued_at, \
        extra_sender_data, changed_at, owner) \
    WHERE m.id = s.id AND CASE WHEN s.owner IS NOT NULL THEN m.lease_owner = s.owner \
        ELSE (m.lease_owner IS NULL OR m.lease_until <= s.changed_at) END \
    RETURNING m.id";

#[async_trait]
impl MessageStore for PgStore {
    async fn insert_message(&self, message: &NewMessage) -> Result<Message, StoreError> {
        let NewDeliveries::Broadcast { .. } = message.deliveries else {
            // Messages sent at the same time are written together, one commit a batch.
            return self.messages.write(message.clone()).await;
        };
        // A broadcast's statement reads every device of its application: written alone, so
        // that the messages sent meanwhile are not held until it commits.
        let mut conn = self.pool.get().await?;
        let (mut stored, broadcast) =
            PgMessages::insert(&mut conn, std::slice::from_ref(message)).await?;
        if broadcast >= ANALYZE_AFTER_DELIVERIES {
            // The planner's statistics still describe the table from before the broadcast:
            // with them, each page of its due deliveries was read through a bitmap of all the
            // message's deliveries and sorted (350 ms a page at 1,000,000), where the index
            // on (message_id, id) gives the page in order. PostgreSQL's advice after a large
            // change to a table is ANALYZE, which samples it; autovacuum does it only later.
            // The message is stored either way, so a failure is only logged.
            match sqlx::query("ANALYZE deliveries").execute(&mut *conn).await {
                Ok(_) => conn.done(),
                // The connection goes back to the pool and its check rather than kept.
                Err(error) => {
                    tracing::warn!(%error, "could not analyze deliveries after a broadcast");
                }
            }
        } else {
            conn.done();
        }
        stored
            .pop()
            .ok_or_else(|| StoreError::Unknown(anyhow::anyhow!("a broadcast was not stored")))
    }

    async fn get_message_head(
        &self,
        app: &AppId,
        id: MessageId,
        deliveries: u32,
    ) -> Result<Option<Message>, StoreError> {
        let mut conn = self.pool.get().await?;
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM messages WHERE app = $1 AND id = $2")
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
        let mut query = QueryBuilder::<Postgres>::new("SELECT id FROM messages WHERE 1 = 1");
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
            query.push(" AND created_at >= ").push_bind(ms(after));
        }
        if let Some(before) = filter.created_before {
            query.push(" AND created_at < ").push_bind(ms(before));
        }
        if let Some(before) = filter.before {
            query.push(" AND id < ").push_bind(before.0);
        }
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let mut conn = self.pool.get().await?;
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
        let except: Vec<String> = except.iter().map(|app| app.as_str().to_owned()).collect();
        let mut conn = self.pool.get().await?;
        let mut ids: Vec<i64> = sqlx::query_scalar(CLAIM)
            .bind(ms(now))
            .bind(lease.owner.clone())
            .bind(ms(lease.until))
            .bind(i64::from(limit))
            .bind(except)
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
        let mut conn = self.pool.get().await?;
        let mut renewed: Vec<i64> = sqlx::query_scalar(
            "UPDATE messages SET lease_until = $1 WHERE lease_owner = $2 AND id = ANY($3) \
             RETURNING id",
        )
        .bind(ms(lease.until))
        .bind(lease.owner.clone())
        .bind(raw)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to renew leases"))?;
        conn.done();
        renewed.sort_unstable();
        Ok(renewed.into_iter().map(MessageId).collect())
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let done = sqlx::query(
            "UPDATE messages SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
        )
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
        let mut conn = self.pool.get().await?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(AssertSqlSafe(DUE_DELIVERIES.as_str()))
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
        let mut conn = self.pool.get().await?;
        let rows: Vec<DueRow> = sqlx::query_as(AssertSqlSafe(DUE_PAGE.as_str()))
            .bind(app.as_str())
            .bind(message.0)
            .bind(after.map_or(i64::MIN, |d| d.0))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to read due deliveries"))?;
        conn.done();
        rows.into_iter()
            .map(DueRow::into_domain)
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn delivery_tally(&self, message: MessageId) -> Result<DeliveryTally, StoreError> {
        // One round trip: the counts by state, each row carrying the first error.
        let mut conn = self.pool.get().await?;
        let rows: Vec<(String, i64, i64, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT d.state, COUNT(*), COUNT(d.error_code), f.error_code, f.error_text \
             FROM deliveries d LEFT JOIN LATERAL (SELECT error_code, error_text \
                 FROM deliveries WHERE message_id = $1 AND error_code IS NOT NULL \
                 ORDER BY id LIMIT 1) f ON TRUE \
             WHERE d.message_id = $1 GROUP BY d.state, f.error_code, f.error_text",
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
        crate::sqlite::tally_from(counts, first)
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
            .begin()
            .await
            .map_err(db_error("failed to begin a transaction"))?;
        // The row lock keeps a claimer from taking the message over until this commits.
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE id = $1 AND lease_owner = $2 FOR UPDATE",
        )
        .bind(message.0)
        .bind(lease.owner.clone())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error("failed to check a lease"))?;
        if held.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE deliveries SET state = 'failed', error_code = $1, \
             error_text = CASE WHEN error_text IS NULL THEN $2 \
                 ELSE $2 || ' (last error: ' || error_text || ')' END, updated_at = $3 \
             WHERE message_id = $4 AND state IN ('pending', 'retrying')",
        )
        .bind(give_up.code.clone())
        .bind(give_up.reason.clone())
        .bind(ms(now))
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
        let mut query = QueryBuilder::<Postgres>::new("SELECT id FROM messages WHERE app = ");
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
        let mut conn = self.pool.get().await?;
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
        let mut conn = self.pool.get().await?;
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(ms(now))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error("failed to count due messages"))?;
        conn.done();
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use clarion_domain::message::MessageState;

    use super::{CLAIM, DUE};
    use crate::grouped::batch_contract::batch_contract_tests;
    use crate::postgres::{PgSettings, PgStore};

    /// A store in a fresh schema of the test database (`CLARION_TEST_POSTGRES_URL`, else the
    /// local server), dropped by [`drop_store`]. The schema's name starts as the integration
    /// tests' do (`t_` and the process id), so that their sweep removes it should a test fail
    /// before [`drop_store`].
    async fn fresh_store() -> PgStore {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let url = std::env::var("CLARION_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        // The time too: a schema left by an earlier process with the same id is not reused.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let schema = format!(
            "t_{}_batch_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let settings = PgSettings {
            max_connections: 2,
            schema: Some(schema),
        };
        PgStore::connect_with(&url, &settings)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "the test database (CLARION_TEST_POSTGRES_URL or the local server) cannot \
                     be used: {error:#}"
                )
            })
    }

    /// Drops the store's schema and closes its pool.
    async fn drop_store(store: PgStore) {
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(store.pool())
            .await
            .expect("the test schema");
        let sql = format!("DROP SCHEMA \"{schema}\" CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .expect("drop the test schema");
        store.pool().close().await;
    }

    batch_contract_tests!(fresh_store(), drop_store);

    #[test]
    fn the_due_condition_spells_the_domain_state_names() {
        for state in [MessageState::Waiting, MessageState::ErrorRetry] {
            assert!(DUE.contains(&format!("'{state}'")), "{state}");
            assert!(CLAIM.contains(&format!("'{state}'")), "{state}");
        }
    }
}
