//! Reads of devices by id that arrive together, made as one statement: `get_devices` of many
//! sends at once.
//!
//! A send to listed devices reads them first, and at thousands of sends a second those reads
//! cost more in hand-offs to a connection (SQLite runs each statement on the connection's own
//! thread; PostgreSQL pays a network round trip) than in the look-ups themselves. Here the
//! reads that arrive while others are being made wait together and are made as the next batch,
//! one statement for the (application, id) pairs of all of them, the way `grouped.rs` writes
//! messages; each caller then gets exactly the devices it would have read alone, in the same
//! order. A batch that fails is read again one caller at a time by [`Grouped`], so that a
//! corrupt row fails only the reads that asked for it.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use clarion_domain::device::Device;
use clarion_domain::ids::{AppId, DeviceId};
use clarion_domain::ports::StoreError;

use crate::grouped::{Grouped, WriteMany};

/// One statement that reads devices by application and id.
#[async_trait]
pub(crate) trait ReadDevices: Send + Sync + 'static {
    /// The devices whose application and id are one of the `wanted` pairs (distinct, in no
    /// particular order), in any order.
    async fn read_devices(&self, wanted: &[(AppId, DeviceId)]) -> Result<Vec<Device>, StoreError>;
}

/// One caller's read: the devices among the ids that belong to the application.
pub(crate) type DeviceRead = (AppId, Vec<DeviceId>);

/// The most reads in one statement.
const MAX_READS: usize = 256;
/// The most ids in one statement; a single read with more is made alone.
const MAX_IDS: usize = 4_000;

/// How many batches are read at the same time. Reads do not wait for each other in the
/// database: a second batch may be read while the first is, so that one slow statement does
/// not hold back the sends behind it.
pub(crate) const READERS: usize = 2;

/// Makes the reads of a batch with one statement of `R`.
pub(crate) struct DeviceReads<R>(R);

/// Gathers concurrent device reads into batches.
pub(crate) type CoalescedReads<R> = Grouped<DeviceReads<R>>;

/// The reads through `reader`, coalesced.
pub(crate) fn coalesced<R: ReadDevices>(reader: R) -> CoalescedReads<R> {
    Grouped::new(DeviceReads(reader))
}

#[async_trait]
impl<R: ReadDevices> WriteMany for DeviceReads<R> {
    type Item = DeviceRead;
    type Output = Vec<Device>;
    const MAX_ITEMS: usize = MAX_READS;
    const MAX_WEIGHT: usize = MAX_IDS;
    const WRITERS: usize = READERS;

    fn weight(read: &DeviceRead) -> usize {
        read.1.len()
    }

    async fn write_many(&self, reads: &[DeviceRead]) -> Result<Vec<Vec<Device>>, StoreError> {
        let wanted: BTreeSet<(AppId, DeviceId)> = reads
            .iter()
            .flat_map(|(app, ids)| ids.iter().map(|id| (app.clone(), *id)))
            .collect();
        let wanted: Vec<(AppId, DeviceId)> = wanted.into_iter().collect();
        let found: HashMap<DeviceId, Device> = self
            .0
            .read_devices(&wanted)
            .await?
            .into_iter()
            .map(|device| (device.id, device))
            .collect();
        Ok(reads.iter().map(|read| own_devices(read, &found)).collect())
    }
}

/// What [`clarion_domain::ports::DeviceStore::get_devices`] returns for one read: the devices
/// among its ids that belong to its application, in id order, an id given twice found twice
/// (as the single statement of before returned it).
fn own_devices((app, ids): &DeviceRead, found: &HashMap<DeviceId, Device>) -> Vec<Device> {
    let mut ids = ids.clone();
    ids.sort_unstable();
    ids.iter()
        .filter_map(|id| found.get(id).filter(|device| device.app == *app).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(app: &str, id: i64) -> Device {
        let json = serde_json::json!({
            "id": id,
            "app": app,
            "platform": "fcm",
            "token": format!("token-{id}"),
            "name": null,
            "active": true,
            "user_id": null,
            "device_id": null,
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "deactivated_at": null,
            "deactivation_reason": null,
        });
        serde_json::from_value(json).expect("a device")
    }

    fn app(id: &str) -> AppId {
        AppId::parse(id).expect("an application id")
    }

    #[test]
    fn each_read_gets_its_own_applications_devices_in_id_order() {
        let found: HashMap<DeviceId, Device> =
            [device("shop", 1), device("shop", 2), device("news", 3)]
                .into_iter()
                .map(|d| (d.id, d))
                .collect();

        let shop = own_devices(
            &(app("shop"), vec![DeviceId(2), DeviceId(3), DeviceId(1)]),
            &found,
        );
        let news = own_devices(
            &(app("news"), vec![DeviceId(3), DeviceId(9), DeviceId(3)]),
            &found,
        );

        let ids = |devices: &[Device]| devices.iter().map(|d| d.id.0).collect::<Vec<_>>();
        assert_eq!(ids(&shop), [1, 2]);
        assert_eq!(ids(&news), [3, 3]);
    }
}
