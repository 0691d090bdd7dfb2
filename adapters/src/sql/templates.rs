//! [`TemplateStore`](clarion_domain::ports::TemplateStore) on both databases.

use clarion_domain::device::Registration;
use clarion_domain::ids::{AppId, Slug};
use clarion_domain::ports::StoreError;
use clarion_domain::template::{Template, TemplateSpec};
use sqlx::{AssertSqlSafe, Encode, Executor, FromRow, Type};
use time::OffsetDateTime;

use crate::faults::db_error;
use crate::rows::{TEMPLATE_COLUMNS, TemplateRow};
use crate::sql::{Dialect, Tables};

/// How often `put_template` retries after losing a race with another writer of the slug.
const PUT_ROUNDS: usize = 3;

impl<DB: Dialect> Tables<'_, DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    TemplateRow<DB::Time>: for<'r> FromRow<'r, DB::Row>,
{
    pub(crate) async fn put_template(
        &self,
        template: &TemplateSpec,
        now: OffsetDateTime,
    ) -> Result<(Template, Registration), StoreError> {
        let now = DB::time(now);
        // As for devices: an atomic update, else an insert that yields to a concurrent one.
        for _ in 0..PUT_ROUNDS {
            if let Some(row) = self.replace_template(template, now).await? {
                return Ok((row.into_domain()?, Registration::Updated));
            }
            if let Some(row) = self.insert_template(template, now).await? {
                return Ok((row.into_domain()?, Registration::Created));
            }
        }
        Err(StoreError::Conflict(format!(
            "template {} of application {} is being written concurrently",
            template.slug, template.app
        )))
    }

    /// Replaces the template if it exists.
    async fn replace_template(
        &self,
        template: &TemplateSpec,
        now: DB::Time,
    ) -> Result<Option<TemplateRow<DB::Time>>, StoreError> {
        let sql = format!(
            "UPDATE templates SET body = $3, heading = $4, url = $5, is_active = $6, \
             allow_duplicates = $7, updated_at = $8 WHERE app = $1 AND slug = $2 \
             RETURNING {TEMPLATE_COLUMNS}"
        );
        self.write_template(sql, template, now, "failed to replace a template")
            .await
    }

    /// Inserts the template unless one with its slug exists.
    async fn insert_template(
        &self,
        template: &TemplateSpec,
        now: DB::Time,
    ) -> Result<Option<TemplateRow<DB::Time>>, StoreError> {
        let sql = format!(
            "INSERT INTO templates (app, slug, body, heading, url, is_active, allow_duplicates, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (app, slug) DO NOTHING RETURNING {TEMPLATE_COLUMNS}"
        );
        self.write_template(sql, template, now, "failed to insert a template")
            .await
    }

    /// Runs `sql`, a write of one template that returns its row if it wrote it, with the
    /// template's fields bound in column order (`$1` the application, `$8` the time).
    async fn write_template(
        &self,
        sql: String,
        template: &TemplateSpec,
        now: DB::Time,
        doing: &'static str,
    ) -> Result<Option<TemplateRow<DB::Time>>, StoreError> {
        let mut conn = self.writer.get().await?;
        let row = sqlx::query_as(AssertSqlSafe(sql))
            .bind(template.app.as_str().to_owned())
            .bind(template.slug.as_str().to_owned())
            .bind(template.body.clone())
            .bind(template.heading.clone())
            .bind(template.url.clone())
            .bind(template.is_active)
            .bind(template.allow_duplicates)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error(doing))?;
        conn.done();
        Ok(row)
    }

    pub(crate) async fn get_template(
        &self,
        app: &AppId,
        slug: &Slug,
    ) -> Result<Option<Template>, StoreError> {
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE app = $1 AND slug = $2");
        let mut conn = self.readers.get().await?;
        let row: Option<TemplateRow<DB::Time>> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(app.as_str().to_owned())
            .bind(slug.as_str().to_owned())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("failed to read a template"))?;
        conn.done();
        row.map(TemplateRow::into_domain).transpose()
    }

    pub(crate) async fn list_templates(&self, app: &AppId) -> Result<Vec<Template>, StoreError> {
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE app = $1 ORDER BY slug");
        let mut conn = self.readers.get().await?;
        let rows: Vec<TemplateRow<DB::Time>> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(app.as_str().to_owned())
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to list templates"))?;
        conn.done();
        rows.into_iter().map(TemplateRow::into_domain).collect()
    }

    pub(crate) async fn delete_template(
        &self,
        app: &AppId,
        slug: &Slug,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer.get().await?;
        let done = sqlx::query("DELETE FROM templates WHERE app = $1 AND slug = $2")
            .bind(app.as_str().to_owned())
            .bind(slug.as_str().to_owned())
            .execute(&mut *conn)
            .await
            .map_err(db_error("failed to delete a template"))?;
        conn.done();
        Ok(DB::rows_affected(&done) > 0)
    }
}
