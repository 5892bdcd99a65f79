//! The container format against a real CBS-written container (`tests/fixtures/cbs-v4-a`, figures from its
//! `EXPECTED.md`), plus the mutation semantics of the manifest and its behaviour on corrupt input.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use bcv_core::vfs::container::{
    BlockId, BlockList, DeletedBlock, MANIFEST_VERSION, MAX_NAME_BYTES, MD5_NAME_BYTES, MIN_NAME_BYTES, Manifest,
    ManifestError, julian_ms_from_unix_ms, julian_ms_now, unix_ms_from_julian_ms,
};
use md5::{Digest as _, Md5};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::Sha256;

// ---------------------------------------------------------------------------------------------------------------
// Figures from EXPECTED.md (written by CBS itself)
// ---------------------------------------------------------------------------------------------------------------

const BLOCK_SIZE: u32 = 65536;
const MANIFEST_SIZE: usize = 1132;
const IMAGE_SIZE: usize = 2_424_832;
const DELETE_TS: u64 = 212_661_977_956_311;
const DELETE_UTC: &str = "2026-11-20 23:39:16.311";

const MAIN_BLOCKS: [&str; 37] = [
    "F70607D137CDFE664A8DCC6E5DB6735D",
    "DC9C294A2F53813BC695820F778D127E",
    "1EB104B24D9E663686FB826A940F090E",
    "6AE843C64212990EFC9D14BD884F79F0",
    "EA9AB8CCDA9774C7A52F7A5AAA7BE15E",
    "560688441D611D74D6527068B1E58CCB",
    "0EBE9D21698711D522397DEC470C1600",
    "39B9FDC7F862F1EBEAB029FC7762C0C3",
    "5BA8E1BED853435F0AB8A641E5836B10",
    "5618436FE8AF96E5C537FA503787E619",
    "ACA9700AA3CCA9C3042E31F81DD6853C",
    "2BF7D58CF870EC89EB3CC31841E2F40D",
    "D38157F6E13B63CE79019F7C3E49F2F9",
    "1E7568959729AF444F0B6B5A096FB9D9",
    "D80E4227FA4274424FC77F75A1ECC82A",
    "74B715EAD29D784A44B8EB45091DCBBB",
    "F358E5C24EEFB9F794E1DE6BB59177AC",
    "916739F33598F26427AF411C75F43C7B",
    "E13F96EB1F28D77ED1661A2DB29CCBA4",
    "6540B523571886F32DB2060ECD67DE26",
    "93AF556A1F26050FA71CAE4ABC58FA12",
    "8B20DC0389BEEB3933239984AD6A0310",
    "3B1781CD6CBF6DA4D281C2322EA05B6B",
    "24DC7D41294625FF17EE65D34A6D03E7",
    "A56789F73E5454ED8151935326906956",
    "28BA3E3E3088E8C31116950CBB3A3DF1",
    "42AC5A50EC660281119E07B6C8874775",
    "823B34C84C4D8CCC96B60E9F450D5817",
    "20E3AF8695A62B7AA687D475DEA07133",
    "2D7D45A4F826F5F6C20A1348D8FE05CC",
    "FAD975DC7DD60E32AF537EAB6337CD32",
    "F28087FAFA8975761F78C023D85490B2",
    "809213C196DEC5F659FB7001463B1808",
    "0AC6275A7B3E2ECF11238915ED7C9F85",
    "7AD9801F5BCCD9283DFA02B351A525D4",
    "9F71100B1683F0BDFD4026D9930AB26A",
    "230267E03C278672038169377CBD99BD",
];

const COPY_DIFF: [(u32, &str); 7] = [
    (0, "CDA579420B2E4F11C749E7E1DA8276A4"),
    (31, "BEF1C391688BE0971BF76B5D0859B8C7"),
    (32, "EF85140AC19D3C5CF6706F0CC15C4687"),
    (33, "70E65610369BBFA05A933FD49BDF84D0"),
    (34, "DDAE869624DBA50A76D187FB169B4F19"),
    (35, "624361A1957FA25D701415C8A9522DEB"),
    (36, "488C07BE6D1302D6DDF1300918D124E3"),
];

const DELETED: [&str; 3] =
    ["5851275838A9A21443CF4760980D8214", "B1DE38A9D793CDC694573624D0968A2C", "EBD80774920EED400317065DCC442E06"];

/// name, sha256 of the image, `SELECT count(*), sum(k), sum(length(v)) FROM t`.
const IMAGES: [(&str, &str, (i64, i64, i64)); 2] = [
    ("main.db", "fb279c4478e09f26dc7a243e66bab5d181f893b6357a4a15a6f7ce458e8171fd", (20000, 1_000_005_049, 1_860_804)),
    ("copy.db", "082340d0248907b02ad8062bb5abedb8dba99892407760fb608d384804329cb1", (19000, 949_976_643, 1_767_804)),
];

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cbs-v4-a")
}

fn fixture_manifest() -> Vec<u8> {
    std::fs::read(fixture_dir().join("manifest.bcv")).expect("read fixture manifest.bcv")
}

fn hex_id(s: &str) -> BlockId {
    BlockId::from_bytes(&hex::decode(s).expect("hex")).expect("id length")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn be32(bytes: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(bytes[off..off + 4].try_into().unwrap())
}

fn put32(bytes: &mut [u8], off: usize, v: u32) {
    bytes[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Offset of database header `i` in the manifest.
fn db_header(i: usize) -> usize {
    24 + i * 152
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (era-based civil calendar
/// arithmetic, 400-year eras of 146097 days starting on 0000-03-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn utc_string(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms = unix_ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{frac:03}")
}

/// The database image: the block objects of the resolved list, concatenated.
fn reassemble(m: &Manifest, name: &str) -> Vec<u8> {
    let db = m.database(name).expect("database in manifest");
    let mut image = Vec::new();
    for id in m.resolve(db.id).expect("resolve") {
        let block = std::fs::read(fixture_dir().join(id.object_name())).expect("block object");
        assert_eq!(block.len(), m.block_size as usize, "block object {id} has the block size");
        image.extend_from_slice(&block);
    }
    image
}

// ---------------------------------------------------------------------------------------------------------------
// 1–4: the fixture
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn fixture_objects_match_expected_table() {
    let expected = std::fs::read_to_string(fixture_dir().join("EXPECTED.md")).expect("EXPECTED.md");
    let mut rows = 0;
    for line in expected.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [sha, size, name] = cols[..] else { continue };
        if sha.len() != 64 || !sha.bytes().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let bytes = std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(bytes.len(), size.parse::<usize>().unwrap(), "size of {name}");
        assert_eq!(sha256_hex(&bytes), sha, "sha256 of {name}");
        rows += 1;
    }
    assert_eq!(rows, 49, "EXPECTED.md lists 49 objects");
}

#[test]
fn fixture_header_figures() {
    let bytes = fixture_manifest();
    assert_eq!(bytes.len(), MANIFEST_SIZE);
    let m = Manifest::decode(&bytes).expect("decode fixture");
    assert_eq!(MANIFEST_VERSION, 4);
    assert_eq!(be32(&bytes, 0), MANIFEST_VERSION);
    assert_eq!(m.block_size, BLOCK_SIZE);
    assert_eq!(m.name_bytes, 16);
    assert_eq!(m.databases.len(), 2);
    assert_eq!(m.max_db_id, 2);
    assert_eq!(m.delete_list.len(), 3);

    // Database headers (the list offsets and entry counts are read from the raw bytes: decode does not keep them).
    let main = &m.databases[0];
    assert_eq!((main.name.as_str(), main.id, main.parent(), main.version, main.n_blocks), ("main.db", 1, 0, 2, 37));
    assert!(!main.no_local_blocks);
    let copy = &m.databases[1];
    assert_eq!((copy.name.as_str(), copy.id, copy.parent(), copy.version, copy.n_blocks), ("copy.db", 2, 1, 2, 37));
    assert!(!copy.no_local_blocks);
    assert_eq!((be32(&bytes, db_header(0) + 12), be32(&bytes, db_header(0) + 20)), (400, 0));
    assert_eq!((be32(&bytes, db_header(1) + 12), be32(&bytes, db_header(1) + 20)), (992, 7));
    assert_eq!(m.database("main.db"), Some(main));
    assert_eq!(m.database_by_id(2), Some(copy));
    assert_eq!(m.database("nope.db"), None);

    // Block lists, by index and id.
    let expected_main: Vec<BlockId> = MAIN_BLOCKS.iter().map(|s| hex_id(s)).collect();
    assert_eq!(main.blocks, BlockList::Full(expected_main.clone()));
    for (i, s) in MAIN_BLOCKS.iter().enumerate() {
        assert_eq!(m.resolve(1).unwrap()[i].to_string(), *s, "main.db block {i}");
    }
    let expected_diff: Vec<(u32, BlockId)> = COPY_DIFF.iter().map(|&(i, s)| (i, hex_id(s))).collect();
    assert_eq!(copy.blocks, BlockList::Diff { parent: 1, entries: expected_diff });
    let copy_resolved = m.resolve(2).unwrap();
    assert_eq!(copy_resolved.len(), 37);
    for (i, id) in copy_resolved.iter().enumerate() {
        let want = COPY_DIFF.iter().find(|&&(j, _)| j as usize == i).map_or(MAIN_BLOCKS[i], |&(_, s)| s);
        assert_eq!(id.to_string(), want, "copy.db block {i}");
    }

    // Delete list with timestamps, and the UTC time they stand for.
    let expected_deleted: Vec<DeletedBlock> =
        DELETED.iter().map(|s| DeletedBlock { id: hex_id(s), timestamp_ms: DELETE_TS }).collect();
    assert_eq!(m.delete_list, expected_deleted);
    for d in &m.delete_list {
        assert_eq!(utc_string(unix_ms_from_julian_ms(d.timestamp_ms)), DELETE_UTC);
    }
}

#[test]
fn julian_day_conversions() {
    // 1970-01-01 00:00 UTC is julian day 2440587.5.
    assert_eq!(julian_ms_from_unix_ms(0), 2_440_587_500 * 86_400);
    assert_eq!(utc_string(0), "1970-01-01 00:00:00.000");
    assert_eq!(utc_string(951_782_400_000), "2000-02-29 00:00:00.000");
    let unix = unix_ms_from_julian_ms(DELETE_TS);
    assert_eq!(julian_ms_from_unix_ms(unix), DELETE_TS);
    let before = julian_ms_from_unix_ms(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
    );
    let now = julian_ms_now();
    assert!(now >= before && now - before < 60_000);
}

#[test]
fn fixture_round_trip_is_byte_exact() {
    let bytes = fixture_manifest();
    let m = Manifest::decode(&bytes).unwrap();
    assert_eq!(m.encode(), bytes);
}

#[test]
fn fixture_databases_reassemble_and_open() {
    let m = Manifest::decode(&fixture_manifest()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, sha, figures) in IMAGES {
        let image = reassemble(&m, name);
        assert_eq!(image.len(), IMAGE_SIZE, "{name} size");
        assert_eq!(sha256_hex(&image), sha, "{name} sha256");
        assert_eq!((image[18], image[19]), (2, 2), "{name} write/read version (WAL)");
        assert_eq!(be32(&image, 28), 586, "{name} page count in the header");

        let path = dir.path().join(name);
        std::fs::write(&path, &image).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let got: (i64, i64, i64) = conn
            .query_row("SELECT count(*), sum(k), sum(length(v)) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        assert_eq!(got, figures, "{name} query");
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok", "{name} integrity_check");
    }
}

#[test]
fn fixture_bcv_kv_is_a_serialized_database() {
    let bytes = std::fs::read(fixture_dir().join("bcv_kv.bcv")).unwrap();
    assert_eq!(bytes.len(), 12288);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bcv_kv.db");
    std::fs::write(&path, &bytes).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<String> = conn
        .prepare("SELECT k || '|' || v FROM kv ORDER BY i")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec!["owner|fixture-a".to_owned()]);
}

// ---------------------------------------------------------------------------------------------------------------
// 5: block ids
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn block_id_object_names() {
    for len in MIN_NAME_BYTES..=MAX_NAME_BYTES {
        let id = BlockId::random(len);
        assert_eq!(id.as_bytes().len(), len);
        let name = id.object_name();
        assert_eq!(name.len(), 2 * len + 4);
        assert_eq!(name, format!("{}.bcv", hex::encode_upper(id.as_bytes())));
        assert_eq!(name, format!("{id}.bcv"));
        assert_eq!(format!("{id:?}"), format!("BlockId({id})"));
        assert_eq!(BlockId::parse_object_name(&name), Some(id));
        assert_eq!(BlockId::from_bytes(id.as_bytes()).unwrap(), id);
    }
    for bad in [
        "manifest.bcv",
        "bcv_kv.bcv",
        "EXPECTED.md",
        "F70607D137CDFE664A8DCC6E5DB6735D",
        "F70607D137CDFE664A8DCC6E5DB6735D.bcv.tmp",
        "f70607d137cdfe664a8dcc6e5db6735d.bcv",
        "F70607D137CDFE664A8DCC6E5DB6735.bcv",
        "F70607D137CDFE664A8DCC6E5DB673ZZ.bcv",
        "0011223344556677889900AA.bc",
        "00112233445566778899AA.bcv",
        ".bcv",
        "",
    ] {
        assert_eq!(BlockId::parse_object_name(bad), None, "{bad:?}");
    }
    let long = "AB".repeat(33) + ".bcv";
    assert_eq!(BlockId::parse_object_name(&long), None);
    assert!(BlockId::parse_object_name(&("AB".repeat(12) + ".bcv")).is_some());
    assert!(matches!(BlockId::from_bytes(&[0; 11]), Err(ManifestError::BadIdLength { len: 11 })));
    assert!(matches!(BlockId::from_bytes(&[0; 33]), Err(ManifestError::BadIdLength { len: 33 })));
}

#[test]
fn every_fixture_block_object_name_parses() {
    let m = Manifest::decode(&fixture_manifest()).unwrap();
    let mut known: HashSet<BlockId> = m.referenced_blocks();
    known.extend(m.delete_list.iter().map(|d| d.id));
    let mut blocks = HashSet::new();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        match BlockId::parse_object_name(&name) {
            Some(id) => {
                assert_eq!(id.object_name(), name);
                assert!(known.contains(&id), "{name} is referenced or on the delete list");
                blocks.insert(id);
            }
            None => assert!(["manifest.bcv", "bcv_kv.bcv", "EXPECTED.md"].contains(&name.as_str()), "{name}"),
        }
    }
    // 37 main + 7 copy + 3 deleted objects, all of them known to the manifest and none missing.
    assert_eq!(blocks.len(), 47);
    assert_eq!(blocks, known);
}

#[test]
fn block_id_md5_rule() {
    // Known MD5 test vector, so the digest itself is checked independently of the md-5 crate.
    let abc = BlockId::for_block(24, b"abc");
    assert_eq!(hex::encode(abc.md5_prefix().unwrap()), "900150983cd24fb0d6963f7d28e17f72");

    let mut block = vec![0u8; 65536];
    block[..11].copy_from_slice(b"hello block");
    let digest: [u8; 16] = Md5::digest(&block).into();
    for len in [MD5_NAME_BYTES, 28, MAX_NAME_BYTES] {
        let a = BlockId::for_block(len, &block);
        let b = BlockId::for_block(len, &block);
        assert_eq!(a.as_bytes().len(), len);
        assert_eq!(a.md5_prefix(), Some(digest), "namebytes {len}: prefix is the block's md5");
        assert_eq!(&a.as_bytes()[..16], &digest);
        assert_eq!(b.md5_prefix(), Some(digest));
        assert_ne!(a, b, "namebytes {len}: the tail is random");
    }
    for len in [MIN_NAME_BYTES, 16, MD5_NAME_BYTES - 1] {
        let a = BlockId::for_block(len, &block);
        let b = BlockId::for_block(len, &block);
        assert_eq!(a.as_bytes().len(), len);
        assert_eq!(a.md5_prefix(), None, "namebytes {len}: no md5 prefix");
        assert_ne!(a, b, "namebytes {len}: fully random");
        assert_ne!(a.as_bytes(), &digest[..len.min(16)], "namebytes {len}: not the md5");
    }
}

#[test]
fn blocks_by_md5_finds_existing_blocks() {
    let block_a = vec![1u8; 4096];
    let block_b = vec![2u8; 4096];
    let mut m = Manifest::new(4096, 32).unwrap();
    let a = BlockId::for_block(32, &block_a);
    let b = BlockId::for_block(32, &block_b);
    m.add_database("x.db", vec![a, b]).unwrap();
    let map = m.blocks_by_md5();
    assert_eq!(map.len(), 2);
    let md5_a: [u8; 16] = Md5::digest(&block_a).into();
    assert_eq!(map.get(&md5_a), Some(&a));
    // A second id for the same content keeps mapping to the first one.
    m.add_database("y.db", vec![BlockId::for_block(32, &block_a)]).unwrap();
    assert_eq!(m.blocks_by_md5().get(&md5_a), Some(&a));

    // Short ids carry no digest.
    let fixture = Manifest::decode(&fixture_manifest()).unwrap();
    assert!(fixture.blocks_by_md5().is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// 6: mutation semantics
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn fixture_copy_matches_cbs_copy() {
    let mut m = Manifest::decode(&fixture_manifest()).unwrap();
    // CBS's own copy.db had, before its upload, exactly this shape: a diff against main.db with no entries.
    let id = m.copy_database("main.db", "third.db").unwrap();
    assert_eq!(id, 3);
    assert_eq!(m.max_db_id, 3);
    let db = m.database("third.db").unwrap();
    assert_eq!((db.id, db.version, db.n_blocks, db.parent()), (3, 1, 37, 1));
    assert_eq!(db.blocks, BlockList::Diff { parent: 1, entries: vec![] });
    assert_eq!(m.resolve(3).unwrap(), m.resolve(1).unwrap());
    assert_eq!(m.delete_list.len(), 3);
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);

    assert_eq!(m.copy_database("nope.db", "x.db"), Err(ManifestError::NoSuchDatabase { name: "nope.db".into() }));
    assert_eq!(m.copy_database("main.db", "copy.db"), Err(ManifestError::DatabaseExists { name: "copy.db".into() }));
}

#[test]
fn fixture_replace_parent_keeps_child_content() {
    let mut m = Manifest::decode(&fixture_manifest()).unwrap();
    let copy_before = m.resolve(2).unwrap();
    let mut main = m.resolve(1).unwrap();
    let old5 = main[5];
    let new5 = BlockId::random(16);
    main[5] = new5;
    main.push(BlockId::random(16));
    m.replace_blocks(1, main.clone(), 42).unwrap();

    assert_eq!(m.resolve(1).unwrap(), main);
    assert_eq!(m.database("main.db").unwrap().version, 3);
    assert_eq!(m.database("main.db").unwrap().n_blocks, 38);
    assert_eq!(m.resolve(2).unwrap(), copy_before, "copy.db content unchanged");
    assert_eq!(m.database("copy.db").unwrap().version, 2, "copy.db was not uploaded");
    // copy.db now also lists block 5, where it differs from its parent; the parent's extra block is simply beyond
    // copy.db's end.
    match &m.database("copy.db").unwrap().blocks {
        BlockList::Diff { parent: 1, entries } => {
            let idx: Vec<u32> = entries.iter().map(|e| e.0).collect();
            assert_eq!(idx, vec![0, 5, 31, 32, 33, 34, 35, 36]);
        }
        other => panic!("copy.db is no longer a diff: {other:?}"),
    }
    // old5 is still used by copy.db, so nothing new is garbage.
    assert!(m.referenced_blocks().contains(&old5));
    assert_eq!(m.delete_list.len(), 3);
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
}

#[test]
fn fixture_replace_child_stays_minimal_diff() {
    let mut m = Manifest::decode(&fixture_manifest()).unwrap();
    let mut copy = m.resolve(2).unwrap();
    let main = m.resolve(1).unwrap();
    let dropped = copy[31];
    copy[0] = main[0]; // back to the parent's block
    copy[31] = main[31];
    copy.truncate(35);
    m.replace_blocks(2, copy.clone(), 7).unwrap();
    assert_eq!(m.resolve(2).unwrap(), copy);
    let db = m.database("copy.db").unwrap();
    assert_eq!((db.version, db.n_blocks), (3, 35));
    let BlockList::Diff { parent: 1, entries } = &db.blocks else { panic!("not a diff") };
    assert_eq!(entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![32, 33, 34]);
    // The ids copy.db stopped using went to the delete list with the given timestamp.
    let new_deleted: HashSet<BlockId> = m.delete_list.iter().filter(|d| d.timestamp_ms == 7).map(|d| d.id).collect();
    let expected: HashSet<BlockId> = [0usize, 31, 35, 36].iter().map(|&i| hex_id(copy_id(i))).collect();
    assert!(new_deleted.contains(&dropped));
    assert_eq!(new_deleted, expected);
}

fn copy_id(i: usize) -> &'static str {
    COPY_DIFF.iter().find(|e| e.0 as usize == i).map(|e| e.1).expect("diff index")
}

#[test]
fn fixture_remove_parent_makes_child_full() {
    let mut m = Manifest::decode(&fixture_manifest()).unwrap();
    let copy_before = m.resolve(2).unwrap();
    m.remove_database("main.db", 99).unwrap();
    assert_eq!(m.databases.len(), 1);
    let copy = m.database("copy.db").unwrap();
    assert_eq!(copy.blocks, BlockList::Full(copy_before.clone()));
    assert_eq!(m.resolve(2).unwrap(), copy_before);
    // main.db's blocks at the 7 indexes copy.db overrides are garbage now.
    let new: Vec<BlockId> = m.delete_list.iter().filter(|d| d.timestamp_ms == 99).map(|d| d.id).collect();
    let mut expected: Vec<BlockId> = COPY_DIFF.iter().map(|e| hex_id(MAIN_BLOCKS[e.0 as usize])).collect();
    expected.sort();
    assert_eq!(new, expected);
    assert_eq!(m.delete_list.len(), 10);
    assert_eq!(m.max_db_id, 2, "ids are never reused");
    assert_eq!(m.add_database("main.db", vec![]).unwrap(), 3);
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    assert_eq!(m.remove_database("nope.db", 1), Err(ManifestError::NoSuchDatabase { name: "nope.db".into() }));
}

#[test]
fn remove_middle_of_chain_rebases_on_grandparent() {
    let ids: Vec<BlockId> = (0..6).map(|_| BlockId::random(16)).collect();
    let mut m = Manifest::new(4096, 16).unwrap();
    m.add_database("a", ids[0..3].to_vec()).unwrap();
    m.copy_database("a", "b").unwrap();
    m.replace_blocks(2, vec![ids[0], ids[3], ids[2], ids[4]], 1).unwrap();
    m.copy_database("b", "c").unwrap();
    m.replace_blocks(3, vec![ids[5], ids[3], ids[2], ids[4]], 2).unwrap();
    let c = m.resolve(3).unwrap();
    m.remove_database("b", 3).unwrap();
    assert_eq!(m.resolve(3).unwrap(), c);
    assert_eq!(m.database("c").unwrap().parent(), 1);
    assert!(m.delete_list.is_empty(), "b's blocks are all still used by c");
}

#[test]
fn dead_block_reused_leaves_delete_list() {
    let [x, y, z] = [BlockId::random(16), BlockId::random(16), BlockId::random(16)];
    let mut m = Manifest::new(4096, 16).unwrap();
    let id = m.add_database("a", vec![x, y]).unwrap();
    m.replace_blocks(id, vec![x, z], 10).unwrap();
    assert_eq!(m.delete_list, vec![DeletedBlock { id: y, timestamp_ms: 10 }]);
    // Dedup reuses y: it must not stay on the delete list (cleanup would delete a live block), and x becomes garbage.
    m.replace_blocks(id, vec![y, z], 20).unwrap();
    assert_eq!(m.delete_list, vec![DeletedBlock { id: x, timestamp_ms: 20 }]);
    // add_database reusing a dead block does the same.
    m.add_database("b", vec![x]).unwrap();
    assert!(m.delete_list.is_empty());
    // Garbage is listed once even when it dies again.
    m.replace_blocks(id, vec![], 30).unwrap();
    m.replace_blocks(id, vec![], 40).unwrap();
    let mut listed: Vec<BlockId> = m.delete_list.iter().map(|d| d.id).collect();
    listed.sort();
    let mut expected = vec![y, z];
    expected.sort();
    assert_eq!(listed, expected);
    assert!(m.delete_list.iter().all(|d| d.timestamp_ms == 30));
}

#[test]
fn mutation_argument_errors() {
    let mut m = Manifest::new(4096, 16).unwrap();
    let long = "x".repeat(128);
    for (name, reason) in
        [("", "empty"), (long.as_str(), "longer than 127 bytes"), ("a\0b", "contains a NUL character")]
    {
        assert_eq!(
            m.add_database(name, vec![]),
            Err(ManifestError::InvalidName { name: name.to_owned(), reason }),
            "{name:?}"
        );
    }
    assert!(m.add_database(&"é".repeat(63), vec![]).is_ok(), "126 bytes of UTF-8 fit");
    let id = m.add_database("a", vec![]).unwrap();
    assert_eq!(m.add_database("a", vec![]), Err(ManifestError::DatabaseExists { name: "a".into() }));
    let wrong = BlockId::random(24);
    assert_eq!(m.add_database("b", vec![wrong]), Err(ManifestError::WrongIdLength { id: wrong, expected: 16 }));
    assert_eq!(m.replace_blocks(id, vec![wrong], 0), Err(ManifestError::WrongIdLength { id: wrong, expected: 16 }));
    assert_eq!(m.replace_blocks(77, vec![], 0), Err(ManifestError::NoSuchDatabaseId { id: 77 }));
    assert_eq!(m.resolve(77), Err(ManifestError::NoSuchDatabaseId { id: 77 }));
    assert_eq!(m.copy_database("a", ""), Err(ManifestError::InvalidName { name: String::new(), reason: "empty" }));
    let snapshot = m.clone();
    assert!(m.add_database("b", vec![wrong]).is_err());
    assert_eq!(m, snapshot, "failed calls change nothing");

    // A stored version of u32::MAX cannot be incremented.
    let mut bytes = fixture_manifest();
    put32(&mut bytes, db_header(0) + 8, u32::MAX);
    let mut m = Manifest::decode(&bytes).unwrap();
    let snapshot = m.clone();
    assert_eq!(m.replace_blocks(1, vec![], 5), Err(ManifestError::VersionOverflow { name: "main.db".into() }));
    assert_eq!(m, snapshot);
}

/// In-memory model: name → (resolved content, version).
type Model = BTreeMap<String, (Vec<BlockId>, u32)>;

const NAMES: [&str; 6] = ["a.db", "b.db", "c.db", "d.db", "e.db", "f.db"];

struct Sim {
    rng: StdRng,
    m: Manifest,
    model: Model,
    /// Every id ever referenced and not yet cleaned up.
    live_or_dead: HashSet<BlockId>,
    /// Ids removed by cleanup: their objects are gone, so they are never reused.
    cleaned: HashSet<BlockId>,
    now: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            rng: StdRng::seed_from_u64(seed),
            m: Manifest::new(4096, 16).unwrap(),
            model: Model::new(),
            live_or_dead: HashSet::new(),
            cleaned: HashSet::new(),
            now: 1000,
        }
    }

    /// A new id or, often, one already known (live or on the delete list, as dedup would reuse it).
    fn some_id(&mut self) -> BlockId {
        if !self.live_or_dead.is_empty() && self.rng.random_bool(0.4) {
            let mut known: Vec<BlockId> = self.live_or_dead.iter().copied().collect();
            known.sort();
            known[self.rng.random_range(0..known.len())]
        } else {
            BlockId::from_bytes(&self.rng.random::<[u8; 16]>()).unwrap()
        }
    }

    fn some_blocks(&mut self, base: &[BlockId]) -> Vec<BlockId> {
        let len = match self.rng.random_range(0..4) {
            0 => self.rng.random_range(0..10),
            _ => (base.len() as i64 + self.rng.random_range(-2..=2)).clamp(0, 12) as usize,
        };
        let mut blocks: Vec<BlockId> = base.iter().copied().take(len).collect();
        while blocks.len() < len {
            let id = self.some_id();
            blocks.push(id);
        }
        for _ in 0..self.rng.random_range(0..3) {
            if !blocks.is_empty() {
                let i = self.rng.random_range(0..blocks.len());
                blocks[i] = self.some_id();
            }
        }
        blocks
    }

    fn some_name(&mut self) -> String {
        NAMES[self.rng.random_range(0..NAMES.len())].to_owned()
    }

    fn step(&mut self) {
        self.now += self.rng.random_range(0..5);
        let before = self.m.clone();
        match self.rng.random_range(0..10) {
            0..=1 => {
                let name = self.some_name();
                let blocks = self.some_blocks(&[]);
                let r = self.m.add_database(&name, blocks.clone());
                if self.model.contains_key(&name) {
                    assert_eq!(r, Err(ManifestError::DatabaseExists { name }));
                    assert_eq!(self.m, before);
                } else {
                    assert_eq!(r, Ok(before.max_db_id + 1));
                    self.live_or_dead.extend(blocks.iter().copied());
                    self.model.insert(name, (blocks, 1));
                }
            }
            2..=3 => {
                let (from, to) = (self.some_name(), self.some_name());
                let r = self.m.copy_database(&from, &to);
                match (self.model.get(&from).cloned(), self.model.contains_key(&to)) {
                    (None, _) => assert_eq!(r, Err(ManifestError::NoSuchDatabase { name: from })),
                    (Some(_), true) => assert_eq!(r, Err(ManifestError::DatabaseExists { name: to })),
                    (Some((content, _)), false) => {
                        assert_eq!(r, Ok(before.max_db_id + 1));
                        self.model.insert(to, (content, 1));
                    }
                }
                if r.is_err() {
                    assert_eq!(self.m, before);
                }
            }
            4..=6 => {
                let name = self.some_name();
                let Some((content, version)) = self.model.get(&name).cloned() else { return };
                let blocks = self.some_blocks(&content);
                let id = self.m.database(&name).unwrap().id;
                self.m.replace_blocks(id, blocks.clone(), self.now).unwrap();
                assert_eq!(self.m.database(&name).unwrap().version, version + 1);
                self.live_or_dead.extend(blocks.iter().copied());
                self.model.insert(name, (blocks, version + 1));
            }
            7..=8 => {
                let name = self.some_name();
                let r = self.m.remove_database(&name, self.now);
                if self.model.remove(&name).is_some() {
                    r.unwrap();
                } else {
                    assert_eq!(r, Err(ManifestError::NoSuchDatabase { name }));
                    assert_eq!(self.m, before);
                }
            }
            _ => {
                let cutoff = self.now.saturating_sub(self.rng.random_range(0..8));
                let due: Vec<BlockId> =
                    self.m.delete_list.iter().filter(|d| d.timestamp_ms <= cutoff).map(|d| d.id).collect();
                let kept: Vec<DeletedBlock> =
                    self.m.delete_list.iter().filter(|d| d.timestamp_ms > cutoff).cloned().collect();
                let taken = self.m.take_deletable(cutoff);
                assert_eq!(taken, due);
                assert_eq!(self.m.delete_list, kept);
                for id in taken {
                    self.live_or_dead.remove(&id);
                    self.cleaned.insert(id);
                }
            }
        }
        self.check(&before);
    }

    fn check(&self, before: &Manifest) {
        let m = &self.m;
        assert_eq!(m.databases.len(), self.model.len());
        assert!(m.databases.windows(2).all(|w| w[0].id < w[1].id), "sorted by id");
        assert!(m.databases.iter().all(|d| d.id <= m.max_db_id));
        for (name, (content, version)) in &self.model {
            let db = m.database(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(&m.resolve(db.id).unwrap(), content, "{name} content");
            assert_eq!(db.version, *version, "{name} version");
            assert_eq!(db.n_blocks as usize, content.len());
            if let Some(old) = before.database(name).filter(|o| o.id == db.id) {
                assert_eq!(db.no_local_blocks, old.no_local_blocks);
            }
        }
        assert_eq!(&Manifest::decode(&m.encode()).unwrap(), m, "encode/decode round trip");

        let referenced = m.referenced_blocks();
        let resolved: HashSet<BlockId> = self.model.values().flat_map(|(c, _)| c.iter().copied()).collect();
        assert_eq!(referenced, resolved, "referenced = union of contents");
        let mut on_list: HashMap<BlockId, usize> = HashMap::new();
        for d in &m.delete_list {
            *on_list.entry(d.id).or_default() += 1;
            assert!(d.timestamp_ms <= self.now);
        }
        for id in &self.live_or_dead {
            let listed = on_list.get(id).copied().unwrap_or(0);
            if referenced.contains(id) {
                assert_eq!(listed, 0, "{id} is referenced and on the delete list");
            } else {
                assert_eq!(listed, 1, "{id} is garbage and listed {listed} times");
            }
        }
        for id in &self.cleaned {
            assert!(!referenced.contains(id) && !on_list.contains_key(id), "{id} was cleaned up");
        }
        assert!(on_list.keys().all(|id| self.live_or_dead.contains(id)), "only known ids on the delete list");
    }
}

#[test]
fn random_mutation_sequences_match_model() {
    for seed in 0..300 {
        let mut sim = Sim::new(seed);
        for _ in 0..80 {
            sim.step();
        }
    }
}

#[test]
fn deep_chains_resolve() {
    let mut m = Manifest::new(512, 12).unwrap();
    let base: Vec<BlockId> = (0..50).map(|_| BlockId::random(12)).collect();
    m.add_database("db0", base.clone()).unwrap();
    let mut content = base;
    for i in 1..200u32 {
        m.copy_database(&format!("db{}", i - 1), &format!("db{i}")).unwrap();
        content[(i as usize * 7) % 50] = BlockId::random(12);
        m.replace_blocks(i + 1, content.clone(), u64::from(i)).unwrap();
    }
    assert_eq!(m.resolve(200).unwrap(), content);
    let decoded = Manifest::decode(&m.encode()).unwrap();
    assert_eq!(decoded, m);
    assert_eq!(decoded.resolve(200).unwrap(), content);
}

// ---------------------------------------------------------------------------------------------------------------
// 7: corrupt input
// ---------------------------------------------------------------------------------------------------------------

fn decode_err(bytes: &[u8]) -> ManifestError {
    Manifest::decode(bytes).expect_err("corrupt manifest must not decode")
}

fn patched(f: impl FnOnce(&mut Vec<u8>)) -> ManifestError {
    let mut bytes = fixture_manifest();
    f(&mut bytes);
    decode_err(&bytes)
}

#[test]
fn truncated_manifest_is_an_error_at_every_length() {
    let bytes = fixture_manifest();
    for len in 0..bytes.len() {
        let err = decode_err(&bytes[..len]);
        if len < 24 {
            assert_eq!(err, ManifestError::TooShort { need: 24, len });
        } else if len < 400 {
            assert_eq!(err, ManifestError::TooShort { need: 400, len });
        } else if len < 992 {
            assert!(matches!(err, ManifestError::ListOutOfRange { id: 1, list_offset: 400, list_bytes: 592, .. }));
        } else {
            assert!(matches!(err, ManifestError::ListOutOfRange { id: 2, list_offset: 992, list_bytes: 140, .. }));
        }
    }
    // Trailing bytes are tolerated.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0xEE; 10]);
    assert_eq!(Manifest::decode(&longer).unwrap(), Manifest::decode(&bytes).unwrap());
}

#[test]
fn corrupt_headers_give_the_right_error() {
    assert_eq!(patched(|b| put32(b, 0, 5)), ManifestError::UnsupportedVersion(5));
    assert_eq!(patched(|b| put32(b, 0, 3)), ManifestError::UnsupportedVersion(3));
    assert_eq!(patched(|b| b[0] ^= 0x80), ManifestError::UnsupportedVersion(0x8000_0004));
    assert_eq!(patched(|b| put32(b, 4, 65535)), ManifestError::BadBlockSize(65535));
    assert_eq!(patched(|b| put32(b, 4, 0)), ManifestError::BadBlockSize(0));
    assert_eq!(patched(|b| put32(b, 16, 11)), ManifestError::BadNameBytes(11));
    assert_eq!(patched(|b| put32(b, 16, 33)), ManifestError::BadNameBytes(33));
    assert_eq!(
        patched(|b| put32(b, 8, u32::MAX)),
        ManifestError::TooShort { need: 24 + u64::from(u32::MAX) * 152 + 3 * 24, len: MANIFEST_SIZE }
    );
    assert_eq!(
        patched(|b| put32(b, 12, u32::MAX)),
        ManifestError::TooShort { need: 24 + 2 * 152 + u64::from(u32::MAX) * 24, len: MANIFEST_SIZE }
    );
    assert_eq!(patched(|b| put32(b, db_header(0), 0)), ManifestError::ZeroDatabaseId { index: 0, offset: 24 });
    assert_eq!(
        patched(|b| put32(b, db_header(1), 1)),
        ManifestError::UnsortedDatabaseIds { index: 1, offset: 176, id: 1, previous: 1 }
    );
    assert_eq!(
        patched(|b| put32(b, 20, 1)),
        ManifestError::DatabaseIdAboveMax { index: 1, offset: 176, id: 2, max_db_id: 1 }
    );
}

#[test]
fn corrupt_names_give_the_right_error() {
    let name_off = db_header(0) + 24;
    let bad = |reason| ManifestError::BadDatabaseName { index: 0, id: 1, offset: name_off as u64, reason };
    assert_eq!(patched(|b| b[name_off..name_off + 128].fill(b'a')), bad("no terminating NUL in the 128-byte field"));
    assert_eq!(patched(|b| b[name_off] = 0), bad("empty"));
    assert_eq!(patched(|b| b[name_off] = 0xFF), bad("not valid UTF-8"));
    assert_eq!(
        patched(|b| b[db_header(1) + 24..db_header(1) + 32].copy_from_slice(b"main.db\0")),
        ManifestError::DuplicateName { name: "main.db".into(), first: 1, second: 2 }
    );
    // Bytes after the terminating NUL are ignored.
    let mut bytes = fixture_manifest();
    bytes[name_off + 100] = b'z';
    assert_eq!(Manifest::decode(&bytes).unwrap().databases[0].name, "main.db");
}

#[test]
fn corrupt_lists_give_the_right_error() {
    for off in [MANIFEST_SIZE as u32, 1000, u32::MAX] {
        let err = patched(|b| put32(b, db_header(0) + 12, off));
        assert!(
            matches!(err, ManifestError::ListOutOfRange { id: 1, list_offset, offset: 24, .. } if list_offset == off)
        );
    }
    let err = patched(|b| put32(b, db_header(1) + 12, 993));
    assert!(matches!(err, ManifestError::ListOutOfRange { id: 2, list_offset: 993, .. }), "{err}");
    let err = patched(|b| put32(b, db_header(1) + 20, 8));
    assert!(matches!(err, ManifestError::ListOutOfRange { id: 2, list_bytes: 160, .. }), "{err}");
    let err = patched(|b| put32(b, db_header(0) + 16, 46));
    assert!(matches!(err, ManifestError::ListOutOfRange { id: 1, list_bytes: 736, .. }), "{err}");

    // The last diff entry (index 36) points at index 37 of a 37-block database.
    assert_eq!(
        patched(|b| put32(b, 992 + 6 * 20, 37)),
        ManifestError::DiffIndexOutOfRange { id: 2, name: "copy.db".into(), offset: 1112, index: 37, n_blocks: 37 }
    );
    assert_eq!(
        patched(|b| put32(b, 992 + 20, 33)),
        ManifestError::UnsortedDiff { id: 2, name: "copy.db".into(), offset: 1032, index: 32, previous: 33 }
    );
    assert_eq!(
        patched(|b| put32(b, 992 + 20, 32)),
        ManifestError::UnsortedDiff { id: 2, name: "copy.db".into(), offset: 1032, index: 32, previous: 32 }
    );
    // copy.db grows to 38 blocks but lists no block 37, which its 37-block parent cannot supply.
    assert_eq!(
        patched(|b| put32(b, db_header(1) + 16, 38)),
        ManifestError::MissingDiffEntry { id: 2, name: "copy.db".into(), index: 37, parent_blocks: 37 }
    );
}

#[test]
fn corrupt_parents_give_the_right_error() {
    assert_eq!(
        patched(|b| put32(b, db_header(1) + 4, 2)),
        ManifestError::ParentCycle { id: 2, name: "copy.db".into() },
        "self-parent"
    );
    assert_eq!(
        patched(|b| put32(b, db_header(1) + 4, 9)),
        ManifestError::UnknownParent { id: 2, name: "copy.db".into(), offset: 176, parent: 9 }
    );
    // main.db as a diff against copy.db (with no entries): a two-database cycle.
    let err = patched(|b| put32(b, db_header(0) + 4, 2));
    assert!(matches!(err, ManifestError::ParentCycle { .. }), "{err}");
}

#[test]
fn tolerated_oddities_decode() {
    // The "no local blocks" flag survives a byte-exact round trip.
    let mut bytes = fixture_manifest();
    bytes[db_header(1) + 16] |= 0x80;
    let m = Manifest::decode(&bytes).unwrap();
    assert!(m.databases[1].no_local_blocks && !m.databases[0].no_local_blocks);
    assert_eq!(m.databases[1].n_blocks, 37);
    assert_eq!(m.encode(), bytes);

    // A full list overlapping the headers is accepted (CBS never writes it, nothing breaks).
    let mut bytes = fixture_manifest();
    put32(&mut bytes, db_header(0) + 12, 0);
    let m = Manifest::decode(&bytes).unwrap();
    assert_eq!(m.resolve(1).unwrap()[0].as_bytes(), &bytes[..16]);
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);

    // An entry count on a full list is ignored, as CBS does (and written back as 0).
    let mut bytes = fixture_manifest();
    put32(&mut bytes, db_header(0) + 20, 5);
    assert_eq!(Manifest::decode(&bytes).unwrap().encode(), fixture_manifest());
}

#[test]
fn random_corruptions_never_panic() {
    let original = fixture_manifest();
    let mut rng = StdRng::seed_from_u64(7);
    let mut decoded = 0;
    for _ in 0..20_000 {
        let mut bytes = original.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = if rng.random_bool(0.5) { rng.random() } else { bytes[i] ^ (1 << rng.random_range(0..8)) };
        }
        if rng.random_bool(0.2) {
            bytes.truncate(rng.random_range(0..=bytes.len()));
        }
        if let Ok(m) = Manifest::decode(&bytes) {
            decoded += 1;
            assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
            for db in &m.databases {
                assert_eq!(m.resolve(db.id).unwrap().len(), db.n_blocks as usize);
            }
        }
    }
    // Flips inside block ids or timestamps are not detectable, so some must decode.
    assert!(decoded > 0);
}

// ---------------------------------------------------------------------------------------------------------------
// 8: cleanup cutoff
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn take_deletable_cutoff() {
    let mut m = Manifest::decode(&fixture_manifest()).unwrap();
    let all = m.delete_list.clone();
    assert!(m.take_deletable(DELETE_TS - 1).is_empty(), "entries newer than the cutoff stay");
    assert_eq!(m.delete_list, all);
    assert!(m.take_deletable(0).is_empty());

    // Add two later generations of garbage (blocks 0 and 31 of main.db are not shared with copy.db).
    let main = m.resolve(1).unwrap();
    let mut next = main.clone();
    next[0] = BlockId::random(16);
    m.replace_blocks(1, next.clone(), DELETE_TS + 1000).unwrap();
    next[31] = BlockId::random(16);
    m.replace_blocks(1, next, DELETE_TS + 2000).unwrap();
    assert_eq!(m.delete_list.len(), 5);

    let taken = m.take_deletable(DELETE_TS);
    assert_eq!(taken, all.iter().map(|d| d.id).collect::<Vec<_>>(), "cutoff is inclusive, list order kept");
    assert_eq!(m.delete_list.len(), 2);
    assert_eq!(m.take_deletable(DELETE_TS + 1999), vec![main[0]]);
    assert_eq!(m.delete_list, vec![DeletedBlock { id: main[31], timestamp_ms: DELETE_TS + 2000 }]);
    assert_eq!(m.take_deletable(u64::MAX), vec![main[31]]);
    assert!(m.delete_list.is_empty());
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
}
