use super::*;

const S: u64 = 1_000_000_000;

fn budget(percent: u32, min_per_second: u32) -> RetryBudget {
    RetryBudget::new(RetryBudgetConfig {
        percent,
        min_per_second,
    })
}

#[test]
fn percent_of_requests_plus_floor() {
    let b = budget(20, 1);
    for _ in 0..100 {
        b.on_request(5 * S);
    }
    // 20 % of 100 + 1/s over 10 s.
    let granted = (0..100).filter(|_| b.try_retry(5 * S)).count();
    assert_eq!(granted, 30);
}

#[test]
fn floor_alone_and_zero_budget() {
    let b = budget(20, 0);
    assert!(!b.try_retry(S), "no request, no floor: no retry");
    let b = budget(0, 2);
    let granted = (0..100).filter(|_| b.try_retry(S)).count();
    assert_eq!(granted, 20, "2/s over the 10 s window");
}

#[test]
fn old_deposits_and_retries_expire() {
    let b = budget(50, 0);
    for _ in 0..10 {
        b.on_request(S);
    }
    assert_eq!((0..10).filter(|_| b.try_retry(S)).count(), 5);
    // Still within the window: spent.
    assert!(!b.try_retry(5 * S));
    // Eleven seconds later the old requests no longer count.
    assert!(!b.try_retry(12 * S));
    for _ in 0..4 {
        b.on_request(12 * S);
    }
    assert_eq!((0..10).filter(|_| b.try_retry(12 * S)).count(), 2);
}
