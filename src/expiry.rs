//! The expiry report, so that an account's expiry warns before it breaks CI: every
//! [`EVERY`] (and once at start-up, before serving) the store in force is asked how many
//! accounts expire within a day and within a week (the `token_issuer_accounts_expiring`
//! gauge), and each account expiring within a week gets one `warn` line a day.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::reload::Live;
use crate::store::{self, MAX_PAGE};

/// How often the report runs.
pub const EVERY: Duration = Duration::from_secs(300);
const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;
/// Accounts warned about per day at most: the rest are counted by the gauge.
const MAX_WARNED: usize = 10_000;

/// When each account was last warned about (unix seconds), so that it is once a day.
#[derive(Default)]
pub struct Warned(HashMap<String, i64>);

/// One report on `app`'s store, if it has one.
pub async fn report(app: &App, warned: &mut Warned) {
    let Some(users) = app.auth.store() else {
        return;
    };
    let m = crate::metrics::get();
    for (label, span) in [("1d", DAY), ("7d", WEEK)] {
        match users.store.count_expiring(span).await {
            Ok(n) => m.accounts_expiring(label, n),
            Err(e) => {
                tracing::warn!("the expiry report could not count accounts: {e}");
                return;
            }
        }
    }
    let now = store::now();
    warned.0.retain(|_, at| now - *at < DAY);
    let mut after = String::new();
    while warned.0.len() < MAX_WARNED {
        let page = match users
            .store
            .users_where(&after, MAX_PAGE, store::UserFilter::Expiring(WEEK))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("the expiry report could not list accounts: {e}");
                return;
            }
        };
        for u in &page {
            if warned.0.contains_key(&u.name) || warned.0.len() >= MAX_WARNED {
                continue;
            }
            if let Some(at) = u.expires_at {
                tracing::warn!(user = ?u.name, expires_at = %store::rfc3339(at),
                    "the account expires within 7 days: extend it (PATCH /admin/v1/users/{{name}} with a later expires_at) or let it go");
                warned.0.insert(u.name.clone(), now);
            }
        }
        match page.last() {
            Some(u) if page.len() as i64 == MAX_PAGE => after = u.name.clone(),
            _ => break,
        }
    }
}

/// Reports on whatever store is in force, every [`EVERY`], until the process ends.
pub fn spawn(live: Arc<Live>, mut warned: Warned) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            report(&live.current(), &mut warned).await;
        }
    });
}
