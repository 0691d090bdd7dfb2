//! Tests of pruning and of an application's overview.

use std::time::Duration;

use mockall::predicate::eq;

use crate::app::SenderKind;
use crate::service::PruneReport;
use crate::service::tests::helpers::{Mocks, NOW};
#[tokio::test]
async fn prune_deactivates_dead_devices_and_deletes_old_inactive_ones() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    mocks
        .devices
        .expect_deactivate_dead_devices()
        .returning(|_, _| Ok(2));
    mocks
        .devices
        .expect_delete_inactive_devices()
        .with(
            mockall::predicate::always(),
            eq(NOW - Duration::from_secs(86400)),
        )
        .returning(|_, _| Ok(3));
    let service = mocks.service();

    let report = service
        .prune("shop", Some(Duration::from_secs(86400)))
        .await
        .unwrap();

    assert_eq!(
        report,
        PruneReport {
            deactivated: 2,
            deleted: 3
        }
    );
}

#[tokio::test]
async fn a_prune_preview_counts_what_a_prune_would_touch_and_changes_nothing() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    mocks
        .reports
        .expect_count_dead_devices()
        .returning(|_| Ok(2));
    mocks
        .reports
        .expect_count_inactive_devices()
        .withf(|_, before| *before == NOW - Duration::from_secs(3600))
        .returning(|_, _| Ok(5));
    // No expectation on the device store: a preview that deactivated or deleted would panic.

    let preview = mocks
        .service()
        .prune_preview("shop", Some(Duration::from_secs(3600)))
        .await
        .unwrap();

    assert_eq!(
        preview,
        PruneReport {
            deactivated: 2,
            deleted: 5
        }
    );
}

#[tokio::test]
async fn an_overview_covers_the_window_before_now() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    let since = NOW - Duration::from_secs(86_400);
    mocks
        .reports
        .expect_count_devices()
        .returning(|_| Ok(vec![]));
    mocks
        .reports
        .expect_count_messages_by_state()
        .withf(move |_, at| *at == since)
        .returning(|_, _| Ok(vec![]));
    mocks
        .reports
        .expect_count_due_in_app()
        .withf(|_, at| *at == NOW)
        .returning(|_, _| Ok(3));
    mocks
        .reports
        .expect_error_reasons()
        .withf(move |_, at, _| *at == since)
        .returning(|_, _, _| Ok(vec![]));

    let overview = mocks
        .service()
        .overview("shop", Duration::from_secs(86_400))
        .await
        .unwrap();

    assert_eq!(overview.since, since);
    assert_eq!(overview.backlog, 3);
}
