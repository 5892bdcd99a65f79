//! Header maps and their wire form (`PROXY-WASM-ABI.md` §1e).
//!
//! A map is an ordered list of `(name, value)` byte pairs; names are matched without regard to ASCII case,
//! as HTTP does. The wire form is `u32 count`, `count × (u32 name_len, u32 value_len)`, then each name and
//! value followed by a NUL byte, all little-endian.

use std::fmt;

/// Upper bounds on a decoded map, so a hostile guest cannot make the host allocate without limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLimits {
    /// Most pairs in one map (cpp-host: 1024).
    pub max_pairs: usize,
    /// Most bytes of one serialized map (cpp-host: 1 MiB).
    pub max_bytes: usize,
}

impl Default for MapLimits {
    fn default() -> Self {
        MapLimits { max_pairs: 1024, max_bytes: 1 << 20 }
    }
}

/// Why a serialized map was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapDecodeError {
    /// The bytes end before the sizes they announce.
    #[error("serialized map is truncated: {0}")]
    Truncated(&'static str),
    /// A name or value is not followed by its NUL byte.
    #[error("serialized map entry {0} is not NUL-terminated")]
    MissingNul(usize),
    /// More pairs or bytes than [`MapLimits`] allows.
    #[error("serialized map exceeds the limit: {0}")]
    TooLarge(String),
}

/// An ordered multi-map of header names to values, as a plugin sees it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.pairs.iter().map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v))))
            .finish()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for HeaderMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        HeaderMap { pairs: iter.into_iter().map(|(k, v)| (k.as_ref().to_vec(), v.as_ref().to_vec())).collect() }
    }
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> HeaderMap {
        HeaderMap::default()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs, in order.
    pub fn pairs(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.pairs
    }

    /// Consumes the map, giving its pairs.
    pub fn into_pairs(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.pairs
    }

    /// The first value of `name` (ASCII case-insensitive).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as UTF-8 text, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name.as_bytes()).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Appends a pair (a second value for an existing name is kept beside the first).
    pub fn add(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.pairs.push((name.as_ref().to_vec(), value.as_ref().to_vec()));
    }

    /// Sets `name` to `value`: replaces the first pair with that name and removes the others, or appends.
    pub fn replace(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let name = name.as_ref();
        match self.pairs.iter().position(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some(first) => {
                self.pairs[first].1 = value.as_ref().to_vec();
                let mut index = 0;
                self.pairs.retain(|(k, _)| {
                    let keep = index <= first || !k.eq_ignore_ascii_case(name);
                    index += 1;
                    keep
                });
            }
            None => self.add(name, value),
        }
    }

    /// Removes every pair named `name`; absent names are not an error.
    pub fn remove(&mut self, name: &[u8]) {
        self.pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// The length of [`serialize`](Self::serialize)'s output.
    pub fn serialized_len(&self) -> usize {
        4 + self.pairs.iter().map(|(k, v)| 8 + k.len() + v.len() + 2).sum::<usize>()
    }

    /// The wire form of the map.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.serialized_len());
        out.extend_from_slice(&(self.pairs.len() as u32).to_le_bytes());
        for (k, v) in &self.pairs {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in &self.pairs {
            out.extend_from_slice(k);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    /// Parses the wire form. An empty input or a lone NUL is the empty map.
    ///
    /// Errors: [`MapDecodeError`] when the input is truncated, lacks a NUL terminator, or is over `limits`.
    pub fn deserialize(bytes: &[u8], limits: MapLimits) -> Result<HeaderMap, MapDecodeError> {
        if bytes.is_empty() || bytes == [0] {
            return Ok(HeaderMap::new());
        }
        if bytes.len() > limits.max_bytes {
            return Err(MapDecodeError::TooLarge(format!("{} bytes (limit {})", bytes.len(), limits.max_bytes)));
        }
        let word = |at: usize| -> Result<usize, MapDecodeError> {
            let slice = bytes.get(at..at + 4).ok_or(MapDecodeError::Truncated("sizes"))?;
            Ok(u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]) as usize)
        };
        let count = word(0)?;
        if count > limits.max_pairs {
            return Err(MapDecodeError::TooLarge(format!("{count} pairs (limit {})", limits.max_pairs)));
        }
        let mut data = 4usize
            .checked_add(count.checked_mul(8).ok_or(MapDecodeError::Truncated("sizes"))?)
            .ok_or(MapDecodeError::Truncated("sizes"))?;
        if data > bytes.len() {
            return Err(MapDecodeError::Truncated("sizes"));
        }
        let mut pairs = Vec::with_capacity(count);
        for i in 0..count {
            let key_len = word(4 + i * 8)?;
            let value_len = word(8 + i * 8)?;
            let key = take_terminated(bytes, &mut data, key_len, i)?;
            let value = take_terminated(bytes, &mut data, value_len, i)?;
            pairs.push((key.to_vec(), value.to_vec()));
        }
        Ok(HeaderMap { pairs })
    }
}

fn take_terminated<'a>(bytes: &'a [u8], at: &mut usize, len: usize, entry: usize) -> Result<&'a [u8], MapDecodeError> {
    let end = at.checked_add(len).ok_or(MapDecodeError::Truncated("data"))?;
    let slice = bytes.get(*at..end).ok_or(MapDecodeError::Truncated("data"))?;
    if bytes.get(end) != Some(&0) {
        return Err(MapDecodeError::MissingNul(entry));
    }
    *at = end + 1;
    Ok(slice)
}

/// Splits a property path (segments joined by NUL) into its segments.
pub fn split_property_path(path: &[u8]) -> Vec<&[u8]> {
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    if path.is_empty() {
        return Vec::new();
    }
    path.split(|b| *b == 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialize_round_trips_and_matches_the_layout() {
        let map: HeaderMap = [(":path", "/a"), ("x", "")].into_iter().collect();
        let wire = map.serialize();
        assert_eq!(wire.len(), map.serialized_len());
        assert_eq!(&wire[..4], &2u32.to_le_bytes());
        assert_eq!(&wire[4..8], &5u32.to_le_bytes());
        assert_eq!(&wire[20..], b":path\0/a\0x\0\0");
        assert_eq!(HeaderMap::deserialize(&wire, MapLimits::default()).unwrap(), map);
    }

    #[test]
    fn empty_forms_and_damaged_input() {
        assert!(HeaderMap::deserialize(&[], MapLimits::default()).unwrap().is_empty());
        assert!(HeaderMap::deserialize(&[0], MapLimits::default()).unwrap().is_empty());
        let wire = [("a", "b")].into_iter().collect::<HeaderMap>().serialize();
        assert!(matches!(
            HeaderMap::deserialize(&wire[..wire.len() - 1], MapLimits::default()),
            Err(MapDecodeError::Truncated(_)) | Err(MapDecodeError::MissingNul(_))
        ));
        let mut no_nul = wire.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert_eq!(HeaderMap::deserialize(&no_nul, MapLimits::default()), Err(MapDecodeError::MissingNul(0)));
        let huge_count = u32::MAX.to_le_bytes();
        assert!(matches!(HeaderMap::deserialize(&huge_count, MapLimits::default()), Err(MapDecodeError::TooLarge(_))));
    }

    #[test]
    fn replace_keeps_one_value_and_remove_ignores_case() {
        let mut map: HeaderMap = [("A", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        map.replace("a", "9");
        assert_eq!(map.pairs().len(), 2);
        assert_eq!(map.get(b"A"), Some(&b"9"[..]));
        map.remove(b"B");
        assert_eq!(map.len(), 1);
        map.remove(b"absent");
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(split_property_path(b"request\0path"), vec![&b"request"[..], &b"path"[..]]);
        assert_eq!(split_property_path(b"plugin_name\0"), vec![&b"plugin_name"[..]]);
        assert!(split_property_path(b"").is_empty());
    }
}
