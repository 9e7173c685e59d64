//! The PostgreSQL store.

use super::store::{Opened, StoreError, StoreResult};

/// Opens the log in the database at `url`.
pub async fn open(_url: &str) -> StoreResult<Opened> {
    Err(StoreError::Unavailable(
        "the PostgreSQL store is not built in yet".to_string(),
    ))
}
