//! Reading the key/value records of `XINFO GROUPS` and `XINFO CONSUMERS`.

use redis::Value;
use std::collections::HashMap;

/// One record of an `XINFO` reply (a group or a consumer).
pub struct InfoRecord(HashMap<String, Value>);

impl InfoRecord {
    pub fn new(v: Value) -> Self {
        InfoRecord(redis::from_redis_value(v).unwrap_or_default())
    }

    /// A field, converted; `None` when absent, nil or of another type.
    pub fn get<T: redis::FromRedisValue>(&self, field: &str) -> Option<T> {
        self.0.get(field).and_then(|v| redis::from_redis_value(v.clone()).ok())
    }
}
