//! The rows of the [`ReportStore`](clarion_domain::ports::ReportStore) queries, shared by both
//! stores: counts and error reasons read back into the domain.

use clarion_domain::message::MessageState;
use clarion_domain::ports::{DeviceCount, ErrorReason, ErrorSource, StateCount, StoreError};
use clarion_domain::token::Platform;

use crate::rows::StoredTime;

fn count(raw: i64) -> u64 {
    u64::try_from(raw).unwrap_or(0)
}

/// A `(platform, active, count)` row.
pub(crate) fn device_count(
    (platform, active, n): (String, bool, i64),
) -> Result<DeviceCount, StoreError> {
    let platform: Platform = platform
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("devices: unknown platform {platform:?}")))?;
    Ok(DeviceCount {
        platform,
        active,
        count: count(n),
    })
}

/// A `(state, count)` row.
pub(crate) fn state_count((state, n): (String, i64)) -> Result<StateCount, StoreError> {
    let state: MessageState = state
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("messages: unknown state {state:?}")))?;
    Ok(StateCount {
        state,
        count: count(n),
    })
}

/// A `(source, reason, count, last time, example)` row.
pub(crate) fn error_reason<T: StoredTime>(
    (source, reason, n, last_at, example): (String, String, i64, T, Option<String>),
) -> Result<ErrorReason, StoreError> {
    let source = match source.as_str() {
        "delivery" => ErrorSource::Delivery,
        _ => ErrorSource::Message,
    };
    let last_at = last_at
        .to_time()
        .map_err(|e| StoreError::Corrupt(format!("error reasons: last time: {e}")))?;
    Ok(ErrorReason {
        source,
        reason,
        count: count(n),
        last_at,
        example,
    })
}
