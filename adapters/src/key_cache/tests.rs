//! Tests of the key cache: through the service's authentication, over a SQLite store whose
//! key look-ups are counted, with a clock the tests move.

use std::sync::atomic::{AtomicUsize, Ordering};

use clarion_domain::app::Applications;
use clarion_domain::auth::{AuthError, KeyScope, Principal};
use clarion_domain::service::{Ports, Providers, PushService, ServiceSettings};
use clarion_testkit::ManualClock;
use tokio::sync::Semaphore;

use super::*;
use crate::render::MiniJinjaRenderer;
use crate::sqlite::SqliteStore;

const SECRET: &str = "clk_a-secret-long-enough-for-the-service-to-take";

/// The SQLite store, counting `find_api_key`; when `gate` is set, each look-up waits for a
/// permit after it has read the store, as a slow answer would.
struct Counting {
    store: Arc<SqliteStore>,
    finds: AtomicUsize,
    gate: Option<Semaphore>,
}

#[async_trait]
impl ApiKeyStore for Counting {
    async fn insert_api_key(
        &self,
        key: &NewApiKey,
        now: OffsetDateTime,
    ) -> Result<ApiKey, StoreError> {
        self.store.insert_api_key(key, now).await
    }

    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
        self.finds.fetch_add(1, Ordering::SeqCst);
        let found = self.store.find_api_key(hash).await;
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("the gate stays open").forget();
        }
        found
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.store.list_api_keys().await
    }

    async fn revoke_api_key(
        &self,
        id: ApiKeyId,
        now: OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        self.store.revoke_api_key(id, now).await
    }
}

struct Fixture {
    service: PushService,
    counting: Arc<Counting>,
    clock: Arc<ManualClock>,
}

impl Fixture {
    async fn new(gated: bool) -> Self {
        let store = Arc::new(
            SqliteStore::connect("sqlite::memory:")
                .await
                .expect("a store"),
        );
        let clock = Arc::new(ManualClock::starting_now());
        let counting = Arc::new(Counting {
            store: store.clone(),
            finds: AtomicUsize::new(0),
            gate: gated.then(|| Semaphore::new(0)),
        });
        let keys = CachedKeys::new(counting.clone(), clock.clone(), KeyCacheSettings::default());
        let ports = Ports {
            devices: store.clone(),
            messages: store.clone(),
            templates: store.clone(),
            keys: Arc::new(keys),
            reports: store.clone(),
            renderer: Arc::new(MiniJinjaRenderer::default()),
            clock: clock.clone(),
        };
        let service = PushService::new(
            Arc::new(Applications::default()),
            ports,
            Providers::default(),
            ServiceSettings::default(),
        );
        Self {
            service,
            counting,
            clock,
        }
    }

    async fn create_admin_key(&self) -> ApiKeyId {
        self.service
            .create_api_key("ci", KeyScope::Admin, SECRET.to_owned())
            .await
            .expect("the key is created")
            .key
            .id
    }

    async fn authenticate(&self, secret: &str) -> Result<Principal, AuthError> {
        self.service
            .authenticate_key(secret)
            .await
            .expect("the store answers")
    }

    fn finds(&self) -> usize {
        self.counting.finds.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_second_authentication_within_the_age_does_not_read_the_store() {
    let fixture = Fixture::new(false).await;
    fixture.create_admin_key().await;

    assert_eq!(fixture.authenticate(SECRET).await, Ok(Principal::Admin));
    fixture.clock.advance(Duration::from_millis(999));
    assert_eq!(fixture.authenticate(SECRET).await, Ok(Principal::Admin));
    assert_eq!(fixture.finds(), 1);

    fixture.clock.advance(Duration::from_millis(1));
    assert_eq!(fixture.authenticate(SECRET).await, Ok(Principal::Admin));
    assert_eq!(fixture.finds(), 2);
}

#[tokio::test]
async fn a_key_revoked_through_the_cache_is_refused_at_once() {
    let fixture = Fixture::new(false).await;
    let id = fixture.create_admin_key().await;
    assert_eq!(fixture.authenticate(SECRET).await, Ok(Principal::Admin));

    fixture.service.revoke_api_key(id).await.expect("revoked");

    assert_eq!(fixture.authenticate(SECRET).await, Err(AuthError::Revoked));
}

#[tokio::test]
async fn a_key_revoked_behind_the_caches_back_is_refused_once_its_entry_is_older_than_the_age() {
    let fixture = Fixture::new(false).await;
    let id = fixture.create_admin_key().await;
    assert_eq!(fixture.authenticate(SECRET).await, Ok(Principal::Admin));

    // Another process (the CLI) revokes the key in the database itself.
    let now = fixture.clock.now();
    fixture
        .counting
        .store
        .revoke_api_key(id, now)
        .await
        .expect("revoked");

    assert_eq!(fixture.authenticate(SECRET).await, Ok(Principal::Admin));
    fixture.clock.advance(Duration::from_secs(1));
    assert_eq!(fixture.authenticate(SECRET).await, Err(AuthError::Revoked));
}

#[tokio::test]
async fn a_look_up_that_began_before_a_revocation_does_not_keep_the_key_after_it() {
    let fixture = Arc::new(Fixture::new(true).await);
    let id = fixture.create_admin_key().await;
    let early = {
        let fixture = Arc::clone(&fixture);
        tokio::spawn(async move { fixture.authenticate(SECRET).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fixture.finds() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the look-up never began"
        );
        tokio::task::yield_now().await;
    }

    fixture.service.revoke_api_key(id).await.expect("revoked");
    let gate = fixture.counting.gate.as_ref().expect("gated");
    gate.add_permits(1);
    // The request that was in flight was authenticated before the revocation.
    assert_eq!(early.await.expect("joined"), Ok(Principal::Admin));
    gate.add_permits(1);

    assert_eq!(fixture.authenticate(SECRET).await, Err(AuthError::Revoked));
}

#[tokio::test]
async fn an_unknown_key_is_read_once_within_the_age_and_a_key_created_with_it_counts_at_once() {
    let fixture = Fixture::new(false).await;

    assert_eq!(
        fixture.authenticate(SECRET).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(
        fixture.authenticate(SECRET).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(fixture.finds(), 1);

    fixture.create_admin_key().await;
    assert_eq!(fixture.authenticate(SECRET).await, Ok(Principal::Admin));
}

#[test]
fn a_full_map_keeps_at_most_its_bound() {
    let now = OffsetDateTime::UNIX_EPOCH;
    let mut map = HashMap::new();

    for i in 0..100 {
        let entry = Entry { value: (), at: now };
        insert_bounded(
            &mut map,
            KeyHash::of(&i.to_string()),
            entry,
            10,
            Duration::from_secs(1),
        );
        assert!(map.len() <= 10, "{} entries", map.len());
    }
    assert!(map.contains_key(&KeyHash::of("99")));
}
