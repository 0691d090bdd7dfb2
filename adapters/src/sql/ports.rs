//! The storage ports whose logic both databases share, for both stores: [`shared_ports!`]
//! implements them for a store, each method handing its call to the store's
//! [`Tables`](crate::sql::Tables), where the logic is. Each store invokes it in its `mod.rs`.
//!
//! A macro writes the two implementations because Rust's orphan rule forbids one generic
//! implementation of the domain's traits; it holds only the methods' signatures and the
//! hand-over, never SQL or logic.

/// Implements `DeviceStore`, `TemplateStore`, `ApiKeyStore` and `ReportStore` for `$store`,
/// whose `tables()` gives its [`Tables`](crate::sql::Tables).
macro_rules! shared_ports {
    ($store:ty) => {
        // In a block of its own, so that its imports stay out of the caller's module.
        const _: () = {
            use async_trait::async_trait;
            use clarion_domain::auth::{ApiKey, ApiKeyId, KeyHash, NewApiKey};
            use clarion_domain::device::{
                BulkRegistration, Device, DeviceFilter, DeviceUpdate, NewDevice, Registration,
            };
            use clarion_domain::ids::{AppId, DeviceId, Slug};
            use clarion_domain::ports::{
                ApiKeyStore, DeviceCount, DeviceStore, ErrorReason, ReportStore, StateCount,
                StoreError, TemplateStore,
            };
            use clarion_domain::template::{Template, TemplateSpec};
            use time::OffsetDateTime;

            #[async_trait]
            impl DeviceStore for $store {
                async fn register_device(
                    &self,
                    device: &NewDevice,
                    now: OffsetDateTime,
                ) -> Result<(Device, Registration), StoreError> {
                    self.tables().register_device(device, now).await
                }

                async fn register_devices(
                    &self,
                    devices: &[NewDevice],
                    now: OffsetDateTime,
                ) -> Result<BulkRegistration, StoreError> {
                    self.tables().register_devices(devices, now).await
                }

                async fn get_device(
                    &self,
                    app: &AppId,
                    id: DeviceId,
                ) -> Result<Option<Device>, StoreError> {
                    self.tables().get_device(app, id).await
                }

                async fn get_devices(
                    &self,
                    app: &AppId,
                    ids: &[DeviceId],
                ) -> Result<Vec<Device>, StoreError> {
                    self.tables().get_devices(app, ids).await
                }

                async fn list_devices(
                    &self,
                    app: &AppId,
                    filter: &DeviceFilter,
                ) -> Result<Vec<Device>, StoreError> {
                    self.tables().list_devices(app, filter).await
                }

                async fn deactivate_device(
                    &self,
                    app: &AppId,
                    id: DeviceId,
                    reason: &str,
                    now: OffsetDateTime,
                ) -> Result<bool, StoreError> {
                    self.tables().deactivate_device(app, id, reason, now).await
                }

                async fn update_device(
                    &self,
                    app: &AppId,
                    id: DeviceId,
                    update: &DeviceUpdate,
                    now: OffsetDateTime,
                ) -> Result<Option<Device>, StoreError> {
                    self.tables().update_device(app, id, update, now).await
                }

                async fn delete_device(
                    &self,
                    app: &AppId,
                    id: DeviceId,
                ) -> Result<bool, StoreError> {
                    self.tables().delete_device(app, id).await
                }

                async fn deactivate_dead_devices(
                    &self,
                    app: &AppId,
                    now: OffsetDateTime,
                ) -> Result<u64, StoreError> {
                    self.tables().deactivate_dead_devices(app, now).await
                }

                async fn delete_inactive_devices(
                    &self,
                    app: &AppId,
                    before: OffsetDateTime,
                ) -> Result<u64, StoreError> {
                    self.tables().delete_inactive_devices(app, before).await
                }
            }

            #[async_trait]
            impl TemplateStore for $store {
                async fn put_template(
                    &self,
                    template: &TemplateSpec,
                    now: OffsetDateTime,
                ) -> Result<(Template, Registration), StoreError> {
                    self.tables().put_template(template, now).await
                }

                async fn get_template(
                    &self,
                    app: &AppId,
                    slug: &Slug,
                ) -> Result<Option<Template>, StoreError> {
                    self.tables().get_template(app, slug).await
                }

                async fn list_templates(&self, app: &AppId) -> Result<Vec<Template>, StoreError> {
                    self.tables().list_templates(app).await
                }

                async fn delete_template(
                    &self,
                    app: &AppId,
                    slug: &Slug,
                ) -> Result<bool, StoreError> {
                    self.tables().delete_template(app, slug).await
                }
            }

            #[async_trait]
            impl ApiKeyStore for $store {
                async fn insert_api_key(
                    &self,
                    key: &NewApiKey,
                    now: OffsetDateTime,
                ) -> Result<ApiKey, StoreError> {
                    self.tables().insert_api_key(key, now).await
                }

                async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
                    self.tables().find_api_key(hash).await
                }

                async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
                    self.tables().list_api_keys().await
                }

                async fn revoke_api_key(
                    &self,
                    id: ApiKeyId,
                    now: OffsetDateTime,
                ) -> Result<Option<ApiKey>, StoreError> {
                    self.tables().revoke_api_key(id, now).await
                }
            }

            #[async_trait]
            impl ReportStore for $store {
                async fn count_devices(&self, app: &AppId) -> Result<Vec<DeviceCount>, StoreError> {
                    self.tables().count_devices(app).await
                }

                async fn count_messages_by_state(
                    &self,
                    app: &AppId,
                    since: OffsetDateTime,
                ) -> Result<Vec<StateCount>, StoreError> {
                    self.tables().count_messages_by_state(app, since).await
                }

                async fn count_due_in_app(
                    &self,
                    app: &AppId,
                    now: OffsetDateTime,
                ) -> Result<u64, StoreError> {
                    self.tables().count_due_in_app(app, now).await
                }

                async fn error_reasons(
                    &self,
                    app: &AppId,
                    since: OffsetDateTime,
                    limit: u32,
                ) -> Result<Vec<ErrorReason>, StoreError> {
                    self.tables().error_reasons(app, since, limit).await
                }

                async fn count_dead_devices(&self, app: &AppId) -> Result<u64, StoreError> {
                    self.tables().count_dead_devices(app).await
                }

                async fn count_inactive_devices(
                    &self,
                    app: &AppId,
                    before: OffsetDateTime,
                ) -> Result<u64, StoreError> {
                    self.tables().count_inactive_devices(app, before).await
                }
            }
        };
    };
}

pub(crate) use shared_ports;
