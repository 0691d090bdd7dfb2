//! The batching of [`Grouped`] with a store that records its batches.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: a failed expectation is a failed test"
)]

use std::sync::Mutex;

use async_trait::async_trait;
use clarion_domain::ports::StoreError;

use super::{Grouped, WriteMany};

/// Doubles numbers; refuses 13 with an error of its own and everything once `down` is set.
#[derive(Default)]
struct Doubler {
    batches: Mutex<Vec<Vec<u32>>>,
    down: bool,
}

#[async_trait]
impl WriteMany for Doubler {
    type Item = u32;
    type Output = u32;
    const MAX_ITEMS: usize = 8;
    const MAX_WEIGHT: usize = 100;

    fn weight(item: &u32) -> usize {
        usize::try_from(*item).unwrap()
    }

    async fn write_many(&self, items: &[u32]) -> Result<Vec<u32>, StoreError> {
        self.batches.lock().unwrap().push(items.to_vec());
        // Long enough for the other callers to queue behind the first batch.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        if self.down {
            return Err(StoreError::Unavailable("the disk is full".to_owned()));
        }
        if items.contains(&13) {
            return Err(StoreError::Conflict("13 is refused".to_owned()));
        }
        Ok(items.iter().map(|n| n * 2).collect())
    }
}

async fn write_all(grouped: &Grouped<Doubler>, items: &[u32]) -> Vec<Result<u32, StoreError>> {
    let tasks: Vec<_> = items
        .iter()
        .map(|&n| {
            let grouped = grouped.clone();
            tokio::spawn(async move { grouped.write(n).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

fn batches(grouped: &Grouped<Doubler>) -> Vec<Vec<u32>> {
    grouped.shared.store.batches.lock().unwrap().clone()
}

#[tokio::test]
async fn writes_made_at_once_share_bounded_batches_and_each_gets_its_own_outcome() {
    let grouped = Grouped::new(Doubler::default());

    let outcomes = write_all(&grouped, &(14..=53).collect::<Vec<_>>()).await;

    let doubled: Vec<u32> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(doubled, (14..=53).map(|n| n * 2).collect::<Vec<_>>());
    let batches = batches(&grouped);
    assert!(batches.len() < 40, "writes were grouped: {batches:?}");
    for batch in &batches {
        assert!(batch.len() <= 8, "{batch:?}");
        assert!(
            batch.len() == 1 || batch.iter().sum::<u32>() <= 100,
            "{batch:?}"
        );
    }
}

#[tokio::test]
async fn a_write_that_fails_its_batch_fails_alone() {
    let grouped = Grouped::new(Doubler::default());

    let outcomes = write_all(&grouped, &(10..=16).collect::<Vec<_>>()).await;

    for (n, outcome) in (10..=16).zip(outcomes) {
        match outcome {
            Err(StoreError::Conflict(text)) => {
                assert_eq!((n, text.as_str()), (13, "13 is refused"))
            }
            Ok(doubled) => assert_eq!(doubled, n * 2),
            Err(other) => panic!("{n}: {other}"),
        }
    }
    assert!(
        batches(&grouped)
            .iter()
            .any(|batch| batch.len() > 1 && batch.contains(&13)),
        "13 was written in a batch with others first: {:?}",
        batches(&grouped)
    );
}

#[tokio::test]
async fn an_unavailable_database_fails_the_whole_batch_without_writing_each_alone() {
    let grouped = Grouped::new(Doubler {
        down: true,
        ..Doubler::default()
    });

    let outcomes = write_all(&grouped, &[1, 2, 3, 4, 5, 6]).await;

    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(StoreError::Unavailable(_))))
    );
    let written: usize = batches(&grouped).iter().map(Vec::len).sum();
    assert_eq!(
        written,
        6,
        "each write was tried once: {:?}",
        batches(&grouped)
    );
}
