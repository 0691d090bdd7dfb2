use std::sync::atomic::{AtomicI64, Ordering};

use clarion_domain::ids::{AppId, DeviceId};
use clarion_domain::token::{ApnsToken, DeviceToken};
use time::macros::datetime;
use tokio::sync::Semaphore;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-01-02 03:04:05 UTC);

fn token(n: u32) -> DeviceToken {
    DeviceToken::Apns {
        token: ApnsToken::parse(&format!("{n:064x}")).expect("token"),
    }
}

fn new_device(n: u32, name: &str) -> NewDevice {
    NewDevice {
        app: AppId::parse("app").expect("app"),
        token: token(n),
        name: Some(name.to_owned()),
        user_id: None,
        device_id: None,
    }
}

/// Registers in memory, records each statement's devices by name, and can be held at its
/// first statement, fail any statement holding a device named "bad", or leave a device named
/// "raced" out of its answer.
struct Fake {
    statements: Mutex<Vec<Vec<String>>>,
    devices: Mutex<BTreeMap<String, Device>>,
    next_id: AtomicI64,
    gate: Semaphore,
    raced_times: Mutex<usize>,
}

impl Fake {
    fn new(open: bool) -> Arc<Fake> {
        Arc::new(Fake {
            statements: Mutex::new(Vec::new()),
            devices: Mutex::new(BTreeMap::new()),
            next_id: AtomicI64::new(1),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            raced_times: Mutex::new(0),
        })
    }

    fn statements(&self) -> Vec<Vec<String>> {
        self.statements.lock().expect("lock").clone()
    }
}

#[async_trait]
impl RegisterMany for Fake {
    async fn register_many(
        &self,
        devices: &[&Pending],
    ) -> Result<Vec<(Device, Registration)>, StoreError> {
        let names: Vec<String> = devices
            .iter()
            .map(|(d, _)| d.name.clone().unwrap_or_default())
            .collect();
        self.statements.lock().expect("lock").push(names.clone());
        self.gate.acquire().await.expect("gate").forget();
        if names.iter().any(|n| n == "bad") {
            return Err(StoreError::Unknown(anyhow!("bad device")));
        }
        if names.iter().any(|n| n == "full") {
            return Err(StoreError::Unavailable("the disk is full".to_owned()));
        }
        let mut written = Vec::new();
        let mut stored = self.devices.lock().expect("lock");
        for (device, now) in devices {
            if device.name.as_deref() == Some("raced") {
                let mut times = self.raced_times.lock().expect("lock");
                *times += 1;
                continue;
            }
            let key = device.token.key().to_owned();
            let how = if stored.contains_key(&key) {
                Registration::Updated
            } else {
                Registration::Created
            };
            let id = stored.get(&key).map_or_else(
                || DeviceId(self.next_id.fetch_add(1, Ordering::SeqCst)),
                |d| d.id,
            );
            let row = Device {
                id,
                app: device.app.clone(),
                token: device.token.clone(),
                name: device.name.clone(),
                active: true,
                user_id: None,
                device_id: None,
                created_at: *now,
                updated_at: *now,
                deactivated_at: None,
                deactivation_reason: None,
            };
            stored.insert(key, row.clone());
            written.push((row, how));
        }
        Ok(written)
    }
}

/// Registers `devices` at once while the first one's statement is held, so that the others
/// queue behind it; returns the fake store and each registration's outcome, in order.
async fn behind_a_held_statement(devices: Vec<NewDevice>) -> (Arc<Fake>, Vec<Registered>) {
    let fake = Fake::new(false);
    let group = GroupedRegistrations::new(fake.clone());
    let queued = devices.len() - 1;
    let mut handles = Vec::new();
    for device in devices {
        let group = group.clone();
        handles.push(tokio::spawn(
            async move { group.register(device, NOW).await },
        ));
        // Each registration is queued before the next one starts.
        tokio::task::yield_now().await;
    }
    while group.shared.queue().waiting.len() < queued {
        tokio::task::yield_now().await;
    }
    fake.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.expect("task"));
    }
    (fake, outcomes)
}

#[tokio::test]
async fn registrations_that_arrive_during_a_batch_are_written_together() {
    let (fake, outcomes) =
        behind_a_held_statement((0..50).map(|n| new_device(n, &n.to_string())).collect()).await;
    for (n, outcome) in outcomes.into_iter().enumerate() {
        let (device, how) = outcome.expect("registered");
        assert_eq!(device.name.as_deref(), Some(n.to_string().as_str()));
        assert_eq!(device.token, token(u32::try_from(n).expect("n")));
        assert_eq!(how, Registration::Created);
    }
    let sizes: Vec<usize> = fake.statements().iter().map(Vec::len).collect();
    assert_eq!(sizes, [1, 49]);
}

#[tokio::test]
async fn a_token_registered_twice_in_a_batch_is_written_in_order() {
    let (fake, outcomes) = behind_a_held_statement(vec![
        new_device(0, "first"),
        new_device(1, "a"),
        new_device(1, "b"),
        new_device(2, "c"),
        new_device(1, "d"),
    ])
    .await;
    let outcomes: Vec<_> = outcomes
        .into_iter()
        .map(|outcome| {
            let (device, how) = outcome.expect("registered");
            (device.name.unwrap_or_default(), how)
        })
        .collect();
    use Registration::{Created, Updated};
    assert_eq!(
        outcomes,
        [
            ("first".to_owned(), Created),
            ("a".to_owned(), Created),
            ("b".to_owned(), Updated),
            ("c".to_owned(), Created),
            ("d".to_owned(), Updated),
        ]
    );
    assert_eq!(
        fake.statements(),
        [vec!["first"], vec!["a", "c"], vec!["b"], vec!["d"],]
    );
    let stored = fake.devices.lock().expect("lock");
    assert_eq!(
        stored[token(1).key()].name.as_deref(),
        Some("d"),
        "the last registration stays"
    );
}

#[tokio::test]
async fn a_batch_that_finds_the_database_unavailable_fails_whole_without_writing_each_alone() {
    let (fake, outcomes) = behind_a_held_statement(vec![
        new_device(0, "first"),
        new_device(1, "ok1"),
        new_device(2, "full"),
        new_device(3, "ok2"),
    ])
    .await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    for outcome in &outcomes[1..] {
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(reason)) if reason == "the disk is full"),
            "{outcome:?}"
        );
    }
    assert_eq!(
        fake.statements(),
        [vec!["first"], vec!["ok1", "full", "ok2"]]
    );
}

#[tokio::test]
async fn a_failing_batch_is_written_again_one_by_one_so_only_the_bad_one_fails() {
    let (fake, outcomes) = behind_a_held_statement(vec![
        new_device(0, "first"),
        new_device(1, "ok1"),
        new_device(2, "bad"),
        new_device(3, "ok2"),
    ])
    .await;
    let outcomes: Vec<_> = outcomes
        .into_iter()
        .map(|outcome| outcome.map(|(d, _)| d.name))
        .collect();
    assert!(matches!(&outcomes[0], Ok(Some(n)) if n == "first"));
    assert!(matches!(&outcomes[1], Ok(Some(n)) if n == "ok1"));
    assert!(
        matches!(&outcomes[2], Err(StoreError::Unknown(e)) if e.to_string() == "bad device"),
        "{:?}",
        outcomes[2]
    );
    assert!(matches!(&outcomes[3], Ok(Some(n)) if n == "ok2"));
    assert_eq!(
        fake.statements(),
        [
            vec!["first"],
            vec!["ok1", "bad", "ok2"],
            vec!["ok1"],
            vec!["bad"],
            vec!["ok2"],
        ]
    );
}

#[tokio::test]
async fn a_registration_the_statement_keeps_missing_is_a_conflict_after_three_tries() {
    let fake = Fake::new(true);
    let group = GroupedRegistrations::new(fake.clone());
    let outcome = group.register(new_device(7, "raced"), NOW).await;
    assert!(
        matches!(&outcome, Err(StoreError::Conflict(text)) if text.contains("registered concurrently")),
        "{outcome:?}"
    );
    assert_eq!(*fake.raced_times.lock().expect("lock"), ROUNDS);
    // The queue is free again for the next registration.
    let (device, how) = group
        .register(new_device(8, "next"), NOW)
        .await
        .expect("registered");
    assert_eq!(
        (device.name.as_deref(), how),
        (Some("next"), Registration::Created)
    );
}

/// Panics in its statement: the writing task dies.
struct Panics;

#[async_trait]
impl RegisterMany for Panics {
    async fn register_many(
        &self,
        _devices: &[&Pending],
    ) -> Result<Vec<(Device, Registration)>, StoreError> {
        panic!("the statement panicked");
    }
}

#[tokio::test]
async fn a_writing_task_that_dies_fails_its_registrations_instead_of_hanging() {
    let group = GroupedRegistrations::new(Arc::new(Panics));
    for n in 0..2 {
        let outcome = group.register(new_device(n, "x"), NOW).await;
        assert!(
            matches!(&outcome, Err(StoreError::Unknown(e)) if e.to_string().contains("interrupted")),
            "{outcome:?}"
        );
    }
    assert!(!group.shared.queue().writing);
}

#[tokio::test]
async fn a_batch_writes_its_devices_in_token_order_whatever_their_arrival() {
    let (fake, outcomes) = behind_a_held_statement(vec![
        new_device(9, "first"),
        new_device(3, "three"),
        new_device(1, "one"),
        new_device(2, "two"),
    ])
    .await;
    let names: Vec<_> = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("registered").0.name.unwrap_or_default())
        .collect();
    assert_eq!(names, ["first", "three", "one", "two"], "each gets its own");
    assert_eq!(
        fake.statements(),
        [vec!["first"], vec!["one", "two", "three"]]
    );
}
