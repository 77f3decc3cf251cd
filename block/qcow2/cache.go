package qcow2

import (
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// tableCache is a bounded write-back cache of cluster-sized metadata tables
// (L2 tables or refcount blocks) keyed by host offset, like QEMU's
// qcow2-cache.c. It is used only under Image.mu.
//
// Ordering: before any dirty table of this cache is written, depends (when
// set) is flushed first; the L2 cache depends on the refcount cache so an L2
// entry never reaches the disk before the refcount that makes its cluster
// allocated.
//
// Fields: img is the image whose file backs the tables; name names the
// table kind in errors; max is the capacity in tables (at least 4);
// entries maps a table's host offset to its entry; tick is a counter
// stamped on each lookup, for LRU eviction.
type tableCache struct {
	img     *Image
	name    string
	max     int
	entries map[int64]*cacheEntry
	tick    uint64
	depends *tableCache
	// loadEvent and writeEvent are raised before a table is read from or
	// written to the file (blkdebug's l2_load, l2_update, ...).
	loadEvent, writeEvent block.DebugEvent
	// noBarrier skips the fsync between the dependency flush and our
	// writes (lazy refcounts: the dirty bit covers the ordering).
	noBarrier bool
}

// cacheEntry is one cached table: off is its host offset, data its
// cluster-sized contents (big-endian entries, as on disk), dirty whether
// data differs from the file, used the tick of its last lookup. Entries
// are recycled on eviction, data buffer included, so a caller must not
// keep an entry across another lookup on the same cache.
type cacheEntry struct {
	off   int64
	data  []byte
	dirty bool
	used  uint64
}

// newTableCache returns an empty cache of max tables (raised to 4, so that
// an operation touching a few tables at once does not evict its own).
func newTableCache(img *Image, name string, max int) *tableCache {
	if max < 4 {
		max = 4
	}
	return &tableCache{img: img, name: name, max: max, entries: make(map[int64]*cacheEntry, max)}
}

// get returns the table at off, reading it when not cached. The entry is
// valid until the next get or getEmpty on this cache: a lookup may evict
// it and recycle its buffer for another table.
func (c *tableCache) get(off int64) (*cacheEntry, error) {
	return c.lookup(off, true)
}

// getEmpty returns a zero-filled entry for a freshly allocated table at off
// without reading it (the cluster's old bytes are garbage). The entry is
// not marked dirty: callers fill it and write it through or mark it.
func (c *tableCache) getEmpty(off int64) (*cacheEntry, error) {
	e, err := c.lookup(off, false)
	if err != nil {
		return nil, err
	}
	clear(e.data)
	return e, nil
}

// lookup finds the entry for off or makes room for it, evicting the least
// recently used table (written back first if dirty, after its
// dependencies). With read, a new entry is filled from the file; without,
// its contents are whatever the recycled buffer held, for getEmpty to
// clear. A failed read leaves no entry behind.
func (c *tableCache) lookup(off int64, read bool) (*cacheEntry, error) {
	c.tick++
	if e, ok := c.entries[off]; ok {
		e.used = c.tick
		return e, nil
	}
	var buf []byte
	if len(c.entries) >= c.max {
		victim, err := c.evict()
		if err != nil {
			return nil, err
		}
		buf = victim.data
	} else {
		buf = make([]byte, c.img.clusterSize)
	}
	if read {
		c.img.event(c.loadEvent)
		if err := c.img.readMeta(buf, off); err != nil {
			return nil, fmt.Errorf("reading %s at %#x: %w", c.name, off, err)
		}
	}
	e := &cacheEntry{off: off, data: buf, used: c.tick}
	c.entries[off] = e
	return e, nil
}

// evict removes the least recently used entry, writing it back if dirty
// (after the dependency flush and barrier, so eviction keeps the same
// order as a flush). The scan is linear: caches hold tens of tables.
func (c *tableCache) evict() (*cacheEntry, error) {
	var victim *cacheEntry
	for _, e := range c.entries {
		if victim == nil || e.used < victim.used {
			victim = e
		}
	}
	if victim.dirty {
		if err := c.prepareWrite(); err != nil {
			return nil, err
		}
		if err := c.writeEntry(victim); err != nil {
			return nil, err
		}
	}
	delete(c.entries, victim.off)
	return victim, nil
}

// prepareWrite flushes the cache this one depends on, with a barrier (an
// fsync, skipped under lazy refcounts or when nothing was flushed), so
// that what this cache writes next never reaches the disk first.
func (c *tableCache) prepareWrite() error {
	if c.depends == nil {
		return nil
	}
	n, err := c.depends.flush()
	if err != nil {
		return err
	}
	if n > 0 && !c.noBarrier {
		return c.img.sync()
	}
	return nil
}

// writeEntry writes e to its place in the file and marks it clean. It does
// not order: callers run prepareWrite first.
func (c *tableCache) writeEntry(e *cacheEntry) error {
	c.img.event(c.writeEvent)
	if err := c.img.writeMeta(e.data, e.off); err != nil {
		return fmt.Errorf("writing %s at %#x: %w", c.name, e.off, err)
	}
	e.dirty = false
	return nil
}

// flush writes every dirty entry (dependencies first) and returns how many
// were written.
func (c *tableCache) flush() (int, error) {
	dirty := 0
	for _, e := range c.entries {
		if e.dirty {
			dirty++
		}
	}
	if dirty == 0 {
		return 0, nil
	}
	if err := c.prepareWrite(); err != nil {
		return 0, err
	}
	for _, e := range c.entries {
		if e.dirty {
			if err := c.writeEntry(e); err != nil {
				return 0, err
			}
		}
	}
	return dirty, nil
}

// writeThrough writes one entry now (after its dependencies), for the
// points where a table must be on disk before the next step (a new L2
// table before its L1 entry, an L2 change before releasing what it
// dropped). It does not sync; callers add the barrier they need.
func (c *tableCache) writeThrough(e *cacheEntry) error {
	if err := c.prepareWrite(); err != nil {
		return err
	}
	return c.writeEntry(e)
}

// drop forgets a table (freed cluster) without writing it, dirty or not:
// once the cluster is free its contents no longer matter, and writing
// them later could overwrite the cluster's next owner.
func (c *tableCache) drop(off int64) {
	delete(c.entries, off)
}

// reset forgets everything, dirty entries included (after a refcount
// rebuild, which wrote new blocks directly and leaves the cached ones
// describing freed clusters).
func (c *tableCache) reset() {
	clear(c.entries)
}
