// PATCH(meridian): regression tests for Meridian's patch series
// (vendor/patches/lsm-tree/MERIDIAN-PATCH.md).

use crate::{AbstractTree, Config, SequenceNumberCounter};

/// A retired version's tables must be dropped before version GC returns.
///
/// A compaction marks its input tables deleted, and a table's drop deletes
/// its file. A first version of the patch sent whole retired versions to the
/// memtable-freeing thread, which frees a large memtable slowly: the old
/// tables' drops came late, after the tree had been reopened and had reused
/// their ids, and deleted the new tables' files. Here every table is
/// compacted away, so the reopened tree starts its ids over. The compacted
/// tables' files must be gone (renamed for removal) when the compaction
/// returns — the freeing thread is then still busy with 3M entries, so a
/// late drop is caught at once — and the key written after the reopen must
/// survive the next one.
#[test]
fn late_drop_of_a_retired_table_never_deletes_a_reopened_trees_table() -> crate::Result<()> {
    const KEYS: u32 = 1_500_000;
    let folder = tempfile::tempdir()?;
    let open = || {
        Config::new(
            folder.path(),
            SequenceNumberCounter::default(),
            SequenceNumberCounter::default(),
        )
        .open()
    };

    {
        let tree = open()?;
        let mut seqno = 0;
        for key in 0..KEYS {
            tree.insert(key.to_be_bytes(), "value", seqno);
            seqno += 1;
        }
        tree.flush_active_memtable(0)?;
        for key in 0..KEYS {
            tree.remove(key.to_be_bytes(), seqno);
            seqno += 1;
        }
        tree.flush_active_memtable(0)?;
        tree.major_compact(u64::MAX, seqno)?;
        assert_eq!(0, tree.table_count(), "every entry was deleted");
        let tables = folder.path().join(crate::file::TABLES_FOLDER);
        let live: Vec<_> = std::fs::read_dir(&tables)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        let live: Vec<_> = live
            .into_iter()
            .filter(|name| !name.ends_with(crate::file::TRASH_SUFFIX))
            .collect();
        assert!(live.is_empty(), "compacted tables still on disk: {live:?}");
    }
    {
        let tree = open()?;
        tree.insert("survivor", "here", 0);
        tree.flush_active_memtable(0)?;
    }

    let tree = open()?;
    assert_eq!(
        Some("here".as_bytes().into()),
        tree.get("survivor", 1)?,
        "the reopened tree's table was deleted by a late drop"
    );
    Ok(())
}
