//! Fuzzes `Manifest::decode` on arbitrary bytes.
//!
//! Checked for every input: decoding never panics. When it succeeds: re-encoding decodes to the same manifest and
//! is a fixed point, every database resolves to exactly `n_blocks` ids, and the mutations keep the content of the
//! databases they do not change.

#![no_main]

use bcv_core::vfs::container::{Manifest, ManifestError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::decode(data) else { return };

    let bytes = m.encode();
    let again = Manifest::decode(&bytes).expect("an encoded manifest decodes");
    assert_eq!(again, m, "encode/decode round trip");
    assert_eq!(again.encode(), bytes, "encoding is a fixed point");

    let contents: Vec<(u32, Vec<_>)> = m
        .databases
        .iter()
        .map(|db| {
            let blocks = m.resolve(db.id).expect("a decoded database resolves");
            assert_eq!(blocks.len(), db.n_blocks as usize, "resolved length of database {}", db.id);
            (db.id, blocks)
        })
        .collect();
    let _ = m.referenced_blocks();
    let _ = m.blocks_by_md5();

    // Removing the first database and re-uploading the last one reversed leave every other database unchanged.
    let (Some(first), Some(last)) = (m.databases.first(), m.databases.last()) else { return };
    let mut changed = m.clone();
    changed.remove_database(&first.name, 1).expect("remove a decoded database");
    let mut reversed = contents.last().map(|(_, c)| c.clone()).unwrap_or_default();
    reversed.reverse();
    if last.id != first.id {
        match changed.replace_blocks(last.id, reversed.clone(), 2) {
            // A stored version of u32::MAX cannot be incremented; the manifest is then left unchanged.
            Err(ManifestError::VersionOverflow { .. }) if last.version == u32::MAX => return,
            r => r.expect("replace a decoded database"),
        }
    }
    for (id, content) in &contents {
        if *id == first.id {
            assert!(changed.database_by_id(*id).is_none());
        } else if *id == last.id {
            assert_eq!(&changed.resolve(*id).expect("resolve"), &reversed);
        } else {
            assert_eq!(&changed.resolve(*id).expect("resolve"), content, "database {id} unchanged");
        }
    }
    let referenced = changed.referenced_blocks();
    assert!(changed.delete_list.iter().all(|d| !referenced.contains(&d.id)), "nothing referenced is deleted");
    assert_eq!(Manifest::decode(&changed.encode()).expect("decode after mutation"), changed);
});
