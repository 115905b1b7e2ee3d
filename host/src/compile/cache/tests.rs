//! Tests of the cache entries (authentic only under their key and context) and of the
//! file safety around them (private files, refused roots, the key kept outside).

use super::*;
use crate::compile::key::load_or_make_key;

fn store(name: &str) -> Trusted {
    let dir = std::env::temp_dir().join(format!("sockbox-cache-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    check_dir(&dir).unwrap();
    Trusted {
        dir,
        key: [7; KEY_LEN],
    }
}

#[test]
fn an_entry_reads_back_only_under_its_own_key_and_context() {
    let store = store("roundtrip");
    let entry = Path::new("engine-1/a.cwasm");
    store.write(entry, b"a", b"some compiled code").unwrap();
    assert_eq!(
        store.read(entry, b"a").unwrap().unwrap(),
        b"some compiled code"
    );
    // Moved to another entry's name, or read with another key: refused.
    assert!(store.read(entry, b"b").is_err());
    let other = Trusted {
        dir: store.dir.clone(),
        key: [8; KEY_LEN],
    };
    assert!(other.read(entry, b"a").is_err());
    assert!(
        store
            .read(Path::new("engine-1/none.cwasm"), b"a")
            .unwrap()
            .is_none()
    );
    fs::remove_dir_all(&store.dir).unwrap();
}

#[test]
fn truncated_flipped_or_foreign_entries_are_refused() {
    let store = store("damaged");
    let entry = Path::new("engine-1/a.cwasm");
    store.write(entry, b"a", b"some compiled code").unwrap();
    let path = store.dir.join(entry);
    let good = fs::read(&path).unwrap();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let mut foreign = good.clone();
    foreign[0] = b'X';
    for bad in [
        &good[..good.len() - 1],
        &flipped,
        &foreign,
        &good[..MAGIC.len() + TAG],
    ] {
        fs::write(&path, bad).unwrap();
        assert!(store.read(entry, b"a").is_err());
    }
    fs::remove_dir_all(&store.dir).unwrap();
}

#[test]
fn created_directories_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let store = store("modes");
    store.write(Path::new("python/k.wasm"), b"k", b"x").unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store.dir), 0o700);
    assert_eq!(mode(&store.dir.join("python")), 0o700);
    assert_eq!(mode(&store.dir.join("python/k.wasm")), 0o600);
    fs::remove_dir_all(&store.dir).unwrap();
}

#[test]
fn a_group_or_world_writable_root_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("sockbox-cache-open-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).unwrap();
    for mode in [0o777, 0o770, 0o722] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        let err = format!("{:#}", check_dir(&dir).unwrap_err());
        assert!(err.contains("writable by group or others"), "{err}");
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    check_dir(&dir).unwrap();
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_key_inside_the_cache_is_seen() {
    let dir = std::env::temp_dir().join(format!("sockbox-cache-in-{}", std::process::id()));
    fs::create_dir_all(dir.join("sub")).unwrap();
    assert!(inside(&dir.join("cache.key"), &dir));
    assert!(inside(&dir.join("sub/cache.key"), &dir));
    assert!(inside(&dir.join("sub/../cache.key"), &dir.join(".")));
    assert!(!inside(&dir.join("cache.key"), &dir.join("sub")));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_key_is_made_private_and_a_readable_one_replaced() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("sockbox-cache-key-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let path = dir.join("sub/cache.key");
    let first = load_or_make_key(&path).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.join("sub")), 0o700);
    assert_eq!(load_or_make_key(&path).unwrap(), first);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let second = load_or_make_key(&path).unwrap();
    assert_ne!(second, first);
    assert_eq!(mode(&path), 0o600);
    // A link is refused, not followed.
    let link = dir.join("sub/link.key");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = format!("{:#}", load_or_make_key(&link).unwrap_err());
    assert!(err.contains("symbolic link"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}
