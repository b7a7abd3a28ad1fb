//! Shard stream entries, each holding one event's record or several.
//!
//! Ingest appends the events that reach it together as one entry (its append
//! script, `ingest/src/append.lua`), up to a hundred. One `XADD` per group
//! rather than per event cuts what Redis spends per stored event by a
//! quarter to a third (`bench/append_cost.py`), and the streamer reads,
//! claims and acknowledges fewer ids. The entry stays the unit of the log:
//! the streamer applies and acknowledges it whole, exactly once.
//!
//! An entry of one event holds its record (see [`crate::event`]) as named
//! fields, the same names as every such entry, which Redis then stores once
//! per listpack node. An entry of several opens with the field [`RECORDS`]
//! (`#`, the number of records) and holds the records' values only, in the
//! fixed order of their layout, two to a field/value pair: names repeated
//! per record would cost about 12 bytes an event, since such an entry's
//! field list matches no other. [`records`] reads both (and older entries
//! of several named records).
//!
//! An entry's field names repeat, which the redis crate's `StreamId` (a map)
//! cannot hold, so replies are decoded here straight from the protocol
//! values. The events of an entry of several are named `<entry id>.<i>`
//! (from 0, in stored order) where one event needs an id of its own (the
//! gateway's `events` table); an entry of one event keeps the entry id.

use crate::event::{DecodeError, Event};
use crate::store::RedisConn;
use redis::Value;

/// A stream entry and the events decoded from it.
#[derive(Debug)]
pub struct StoredEntry {
    /// The entry id, `<ms>-<seq>`.
    pub id: String,
    /// The entry's events in stored order, or why they could not be read.
    pub events: Result<Vec<Event>, DecodeError>,
}

impl StoredEntry {
    /// The entry's events with their ids (see the module doc), or why the
    /// entry could not be decoded.
    pub fn into_events_with_ids(self) -> Result<Vec<(String, Event)>, DecodeError> {
        let mut events = self.events?;
        if events.len() == 1 {
            return Ok(vec![(self.id, events.remove(0))]);
        }
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("{}.{i}", self.id), e))
            .collect())
    }
}

/// A field/value pair of an entry, as bytes.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// The field that opens an entry of several records stored by value: its
/// value is the number of records.
pub const RECORDS: &str = "#";

/// The records of an entry as field/value pairs, from the entry's pairs.
///
/// - An entry that opens with [`RECORDS`] holds that many records, stored
///   by value only: each record's values in the order of
///   [`Event::packed_field_names`] (4 values) or [`Event::field_names`] (12),
///   one after the other, read two to a field/value pair.
/// - Otherwise the pairs are named; a record begins at each `t` after the
///   first (older entries hold one named record).
pub fn records<'a>(pairs: &[Pair<'a>]) -> Result<Vec<Vec<Pair<'a>>>, DecodeError> {
    const INVALID: DecodeError = DecodeError::Invalid(RECORDS);
    if let Some(((field, count), rest)) = pairs.split_first()
        && *field == RECORDS.as_bytes()
    {
        let count: usize = std::str::from_utf8(count)
            .ok()
            .and_then(|c| c.parse().ok())
            .filter(|c| *c > 0)
            .ok_or(INVALID)?;
        let values: Vec<&[u8]> = rest.iter().flat_map(|(k, v)| [*k, *v]).collect();
        let names: &[&str] = match values.len() / count {
            w if w * count != values.len() => return Err(INVALID),
            4 => &Event::packed_field_names(),
            12 => &Event::field_names(),
            _ => return Err(INVALID),
        };
        return Ok(values
            .chunks_exact(names.len())
            .map(|record| names.iter().map(|n| n.as_bytes()).zip(record.iter().copied()).collect())
            .collect());
    }
    let mut out = Vec::with_capacity(1);
    let mut start = 0;
    let mut has_time = false;
    for (i, (k, _)) in pairs.iter().enumerate() {
        if *k == b"t" {
            if has_time {
                out.push(pairs[start..i].to_vec());
                start = i;
            }
            has_time = true;
        }
    }
    out.push(pairs[start..].to_vec());
    Ok(out)
}

/// The events of the entry `id` from its field/value pairs (see
/// [`records`]). An entry without fields, or with a record that does not
/// decode, is an error.
pub fn decode_events(id: Option<&str>, pairs: &[(&[u8], &[u8])]) -> Result<Vec<Event>, DecodeError> {
    records(pairs)?
        .into_iter()
        .map(|record| Event::from_entry(id, record))
        .collect()
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Decode one `[id, [field, value, ...]]` item; `None` for anything else
/// (an entry deleted since it was delivered comes with nil fields, and is
/// reported without events).
fn entry_of(item: Value) -> Option<StoredEntry> {
    let Value::Array(parts) = item else { return None };
    let mut parts = parts.into_iter();
    let id = text(parts.next()?)?;
    let fields = match parts.next() {
        Some(Value::Array(f)) => f,
        _ => {
            return Some(StoredEntry {
                id,
                events: Ok(Vec::new()),
            });
        }
    };
    let pairs: Vec<(&[u8], &[u8])> = fields
        .chunks_exact(2)
        .filter_map(|kv| match kv {
            [Value::BulkString(k), Value::BulkString(v)] => Some((k.as_slice(), v.as_slice())),
            _ => None,
        })
        .collect();
    let events = decode_events(Some(&id), &pairs);
    Some(StoredEntry { id, events })
}

/// `XRANGE stream from to COUNT count`, decoded.
pub async fn range(
    conn: &mut RedisConn,
    stream: &str,
    from: &str,
    to: &str,
    count: usize,
) -> redis::RedisResult<Vec<StoredEntry>> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(from)
        .arg(to)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(entries_of_range(reply))
}

/// The entries of an `XRANGE`-shaped reply (also the second element of an
/// `XAUTOCLAIM` reply); anything else reads as no entries.
pub fn entries_of_range(reply: Value) -> Vec<StoredEntry> {
    match reply {
        Value::Array(items) => items.into_iter().filter_map(entry_of).collect(),
        _ => Vec::new(),
    }
}

/// The entries of an `XREADGROUP` (or `XREAD`) reply of one or more streams,
/// `[[stream, [[id, fields], ...]], ...]` (RESP2) or a map of stream to
/// entries (RESP3); nil (nothing read) reads as no entries.
pub fn entries_of_read(reply: Value) -> Vec<StoredEntry> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(entries_of_range).collect()
}

/// The cursor and the claimed entries of an `XAUTOCLAIM` reply
/// (`[cursor, entries, deleted ids]`); `None` for any other shape.
pub fn entries_of_autoclaim(reply: Value) -> Option<(String, Vec<StoredEntry>)> {
    let Value::Array(parts) = reply else { return None };
    let mut parts = parts.into_iter();
    let cursor = text(parts.next()?)?;
    Some((cursor, entries_of_range(parts.next()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn by_value(events: &[Event]) -> Vec<Value> {
        let mut out = vec![bulk(RECORDS), bulk(&events.len().to_string())];
        for e in events {
            out.extend(e.to_packed_fields().unwrap().into_iter().map(|(_, v)| bulk(&v)));
        }
        out
    }

    #[test]
    fn an_entry_of_records_by_value_decodes_like_named_ones() {
        let sent = events(3);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("1795000000000-0"),
            Value::Array(by_value(&sent)),
        ])]);
        let entries = entries_of_range(reply);
        assert_eq!(entries[0].events.as_ref().unwrap(), &sent);
        // The twelve-field layout by value, and counts that do not fit.
        let full: Vec<Value> = [bulk(RECORDS), bulk("2")]
            .into_iter()
            .chain(
                sent[..2]
                    .iter()
                    .flat_map(|e| e.to_fields().into_iter().map(|(_, v)| bulk(&v))),
            )
            .collect();
        let reply = Value::Array(vec![Value::Array(vec![bulk("1795000000000-0"), Value::Array(full)])]);
        assert_eq!(entries_of_range(reply)[0].events.as_ref().unwrap(), &sent[..2]);
        for count in ["2", "0", "x", "4"] {
            let mut fields = by_value(&sent);
            fields[1] = bulk(count);
            let reply = Value::Array(vec![Value::Array(vec![bulk("1-0"), Value::Array(fields)])]);
            assert_eq!(
                entries_of_range(reply)[0].events,
                Err(DecodeError::Invalid(RECORDS)),
                "{count} records"
            );
        }
    }

    fn record(e: &Event) -> Vec<Value> {
        e.to_fields()
            .into_iter()
            .flat_map(|(k, v)| [bulk(k), bulk(&v)])
            .collect()
    }

    fn events(n: u64) -> Vec<Event> {
        (0..n)
            .map(|i| Event::pageview(1_795_000_000_000 + i as i64, "example.com", &format!("/p{i}"), 100 + i))
            .collect()
    }

    #[test]
    fn an_entry_of_several_records_yields_each_event_in_order() {
        let sent = events(3);
        let fields: Vec<Value> = sent.iter().flat_map(record).collect();
        let reply = Value::Array(vec![Value::Array(vec![bulk("1795000000000-0"), Value::Array(fields)])]);
        let entries = entries_of_range(reply);
        assert_eq!(entries.len(), 1);
        let rows = entries.into_iter().next().unwrap().into_events_with_ids().unwrap();
        let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["1795000000000-0.0", "1795000000000-0.1", "1795000000000-0.2"]);
        let events: Vec<Event> = rows.into_iter().map(|(_, e)| e).collect();
        assert_eq!(events, sent);
    }

    #[test]
    fn an_entry_of_one_record_keeps_its_id_and_a_record_need_not_begin_with_its_time() {
        let sent = events(1);
        let mut fields = record(&sent[0]);
        fields.rotate_left(2); // `t` last
        let reply = Value::Array(vec![Value::Array(vec![bulk("7-1"), Value::Array(fields)])]);
        let entry = entries_of_range(reply).into_iter().next().unwrap();
        assert_eq!(
            entry.into_events_with_ids().unwrap(),
            [("7-1".to_owned(), sent[0].clone())]
        );
    }

    #[test]
    fn read_and_autoclaim_replies_decode_and_a_bad_record_fails_its_entry_only() {
        let sent = events(2);
        let good = Value::Array(vec![bulk("1-0"), Value::Array(sent.iter().flat_map(record).collect())]);
        let mut broken: Vec<Value> = sent.iter().flat_map(record).collect();
        let t2 = broken.len() / 2 + 1;
        broken[t2] = bulk("soon");
        let bad = Value::Array(vec![bulk("2-0"), Value::Array(broken)]);
        let deleted = Value::Array(vec![bulk("3-0"), Value::Nil]);
        let read = Value::Array(vec![Value::Array(vec![
            bulk("tally:{s01}:events"),
            Value::Array(vec![good.clone(), bad, deleted]),
        ])]);
        let entries = entries_of_read(read);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].events.as_ref().unwrap(), &sent);
        assert_eq!(entries[1].events, Err(DecodeError::Invalid("t")));
        assert_eq!(entries[2].events.as_ref().unwrap().len(), 0);
        assert!(entries_of_read(Value::Nil).is_empty());

        let claimed = Value::Array(vec![bulk("0-0"), Value::Array(vec![good]), Value::Array(vec![])]);
        let (cursor, entries) = entries_of_autoclaim(claimed).unwrap();
        assert_eq!(cursor, "0-0");
        assert_eq!(entries[0].events.as_ref().unwrap(), &sent);
    }
}
