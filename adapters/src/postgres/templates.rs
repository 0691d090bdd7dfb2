//! [`TemplateStore`] on PostgreSQL.

use async_trait::async_trait;
use clarion_domain::device::Registration;
use clarion_domain::ids::{AppId, Slug};
use clarion_domain::ports::{StoreError, TemplateStore};
use clarion_domain::template::{Template, TemplateSpec};
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;

use crate::postgres::rows::{TEMPLATE_COLUMNS, TemplateRow};
use crate::postgres::{PgStore, db_error, ms};

/// How often `put_template` retries after losing a race with another writer of the slug.
const PUT_ROUNDS: usize = 3;

impl PgStore {
    async fn replace_template(
        &self,
        template: &TemplateSpec,
        now: OffsetDateTime,
    ) -> Result<Option<TemplateRow>, StoreError> {
        let sql = format!(
            "UPDATE templates SET body = $1, heading = $2, url = $3, is_active = $4, \
             allow_duplicates = $5, updated_at = $6 WHERE app = $7 AND slug = $8 \
             RETURNING {TEMPLATE_COLUMNS}"
        );
        sqlx::query_as::<_, TemplateRow>(AssertSqlSafe(sql))
            .bind(template.body.clone())
            .bind(template.heading.clone())
            .bind(template.url.clone())
            .bind(template.is_active)
            .bind(template.allow_duplicates)
            .bind(now)
            .bind(template.app.as_str().to_owned())
            .bind(template.slug.as_str().to_owned())
            .fetch_optional(&mut *self.pool.get().await?)
            .await
            .map_err(db_error("failed to replace a template"))
    }

    async fn insert_template(
        &self,
        template: &TemplateSpec,
        now: OffsetDateTime,
    ) -> Result<Option<TemplateRow>, StoreError> {
        let sql = format!(
            "INSERT INTO templates (app, slug, body, heading, url, is_active, allow_duplicates, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (app, slug) DO NOTHING RETURNING {TEMPLATE_COLUMNS}"
        );
        sqlx::query_as::<_, TemplateRow>(AssertSqlSafe(sql))
            .bind(template.app.as_str().to_owned())
            .bind(template.slug.as_str().to_owned())
            .bind(template.body.clone())
            .bind(template.heading.clone())
            .bind(template.url.clone())
            .bind(template.is_active)
            .bind(template.allow_duplicates)
            .bind(now)
            .bind(now)
            .fetch_optional(&mut *self.pool.get().await?)
            .await
            .map_err(db_error("failed to insert a template"))
    }
}

#[async_trait]
impl TemplateStore for PgStore {
    async fn put_template(
        &self,
        template: &TemplateSpec,
        now: OffsetDateTime,
    ) -> Result<(Template, Registration), StoreError> {
        let now = ms(now);
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

    async fn get_template(&self, app: &AppId, slug: &Slug) -> Result<Option<Template>, StoreError> {
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE app = $1 AND slug = $2");
        sqlx::query_as::<_, TemplateRow>(AssertSqlSafe(sql))
            .bind(app.as_str().to_owned())
            .bind(slug.as_str().to_owned())
            .fetch_optional(&mut *self.pool.get().await?)
            .await
            .map_err(db_error("failed to read a template"))?
            .map(TemplateRow::into_domain)
            .transpose()
    }

    async fn list_templates(&self, app: &AppId) -> Result<Vec<Template>, StoreError> {
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE app = $1 ORDER BY slug");
        sqlx::query_as::<_, TemplateRow>(AssertSqlSafe(sql))
            .bind(app.as_str().to_owned())
            .fetch_all(&mut *self.pool.get().await?)
            .await
            .map_err(db_error("failed to list templates"))?
            .into_iter()
            .map(TemplateRow::into_domain)
            .collect()
    }

    async fn delete_template(&self, app: &AppId, slug: &Slug) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let done = sqlx::query("DELETE FROM templates WHERE app = $1 AND slug = $2")
            .bind(app.as_str().to_owned())
            .bind(slug.as_str().to_owned())
            .execute(&mut *conn)
            .await
            .map_err(db_error("failed to delete a template"))?;
        conn.done();
        Ok(done.rows_affected() > 0)
    }
}
