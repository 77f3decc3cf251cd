package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/luks"
)

// init registers the qcow2 format with block, probed by its magic.
func init() {
	block.Register(block.Format{
		Name:     "qcow2",
		Probe:    Probe,
		Open:     func(path string, opts block.Options) (block.Image, error) { return Open(path, opts) },
		Create:   Create,
		CreateOn: CreateOn,
		Measure:  Measure,
	})
}

// Probe reports whether head starts with the qcow2 magic.
func Probe(head []byte) bool {
	return len(head) >= 4 && string(head[:4]) == Magic
}

// Default cache sizes, as QEMU's l2-cache-size (1 MiB) and a refcount cache
// a quarter of that. With 64 KiB clusters, 1 MiB of L2 tables maps 8 GiB
// of guest space (each 8-byte entry maps a cluster).
const defaultCacheSize = 1 << 20

// Image is an open qcow2 image.
//
// Locking: mu guards all metadata (header, L1, refcount table, both caches,
// inflight). Data I/O runs without mu on host ranges resolved under it,
// inside gate's shared lock.
// Guest clusters being allocated are listed in inflight so that a second
// writer to the same cluster waits instead of allocating twice.
//
// Fields fixed at open: path (as opened), readOnly, backing (the open
// backing image or nil), clusterSize and clusterBits, l2Entries and
// l2EntryShift (log2 of an L2 entry's size: 3, or 4 with extended L2,
// extL2), rcBits (refcount width in bits, 1 << refcount_order) and
// rbEntries. Under mu: hdr (the header as last written or about to be),
// l1 (the whole active L1 table, host-endian, written through), rt (the
// whole refcount table), the L2 and refcount block caches l2c and rbc,
// inflight (guest cluster index -> channel closed when its allocation
// ends), scratchTable (a reusable table-sized buffer) and closed.
type Image struct {
	f        block.File // a HostFile (O_DIRECT-aware for cache=none) or a filter over one
	path     string
	readOnly bool
	noSync   bool             // cache=unsafe: ordering by write order only, no fsync
	warn     func(msg string) // Options.Warn
	backing  block.Image

	// data is the file guest clusters live in: f itself, or the external
	// data file (incompatible bit 2; nil when opened with Options.NoIO).
	// external and rawData (autoclear bit 1) are fixed at open; dataPath
	// is the data file's name as opened. See datafile.go.
	data     block.File
	dataPath string
	external bool
	rawData  bool

	clusterSize  int64
	clusterBits  uint32
	l2Entries    int64 // entries per L2 table
	l2EntryShift uint32
	extL2        bool
	rcBits       uint32
	rbEntries    int64 // refcount entries per refcount block

	// gate is held shared by every ReadAt/WriteAt for its whole duration
	// and exclusively by operations that must see no I/O in flight
	// (snapshots, discard, resize, check, compressed writes, close).
	// Lock order: gate before mu.
	gate         sync.RWMutex
	mu           sync.Mutex
	hdr          *header
	l1           []uint64
	rt           []uint64
	l2c, rbc     *tableCache
	freeHint     int64 // lowest host cluster index that may be free
	freeByte     int64 // next free byte for compressed data (0: none)
	dirtyMarked  bool  // the dirty bit is set on disk (lazy refcounts)
	inflight     map[int64]chan struct{}
	scratchTable []byte
	closed       bool
	// fileEnd bounds valid data offsets: the file size at open, raised by
	// every allocation. A data cluster at or beyond it is corrupt metadata
	// (refused rather than letting a write grow a huge sparse file).
	fileEnd atomic.Int64
	// corrupted is set once corruption was found while writing.
	corrupted atomic.Bool
	// size mirrors hdr.size for lock-free range checks; written under mu.
	size atomic.Int64

	bufPool sync.Pool // cluster-sized []byte

	// events receives the blkdebug events (block.DebugEvent) at the
	// points QEMU's qcow2 raises them; nil over a plain host file.
	events block.EventSink
	// Persistent dirty bitmaps (bitmap.go), under mu: bitmaps in
	// directory order, removedBitmaps (stored copies to free), bitmapErr
	// (why the directory could not be read), bitmapsTracked (the bitmaps
	// are held in memory, marked in use on disk, and are stored on
	// Close). bmMu guards the bitmaps' bits against concurrent writers;
	// bitmapsLive says writes must mark them.
	bitmaps        []*dirtyBitmap
	removedBitmaps []bitmapEntry
	bitmapErr      error
	bitmapsTracked bool
	bitmapsLive    atomic.Bool
	bmMu           sync.Mutex
	// cipher encrypts data clusters (nil: plain, or an encrypted image
	// opened without its key for metadata only); luksHdr is the parsed
	// LUKS header of crypt_method 2. Both are fixed at open (crypt.go).
	cipher  luks.Cipher
	luksHdr *luks.Header
}

// event tells the file below about a point in the engine's work (QEMU's
// BLKDBG_EVENT); a blkdebug node there may fail the requests after it.
func (img *Image) event(e block.DebugEvent) {
	if img.events != nil {
		img.events.DebugEvent(e)
	}
}

// Open opens a qcow2 image file.
func Open(path string, opts block.Options) (*Image, error) {
	// opts.DirectIO (cache=none) opens the file with O_DIRECT; HostFile
	// bounces the sub-block metadata updates and unaligned guest buffers.
	f, err := block.OpenFile(path, opts)
	if err != nil {
		return nil, err
	}
	img, err := openFile(f, path, opts)
	if err != nil {
		f.Close()
		return nil, &block.OpenError{Format: "qcow2", Path: path, Reason: err}
	}
	return img, nil
}

// readHeaderCluster reads the first cluster of the file (or all of a
// smaller file): the header, its extensions and the backing file name lie
// there (spec "Header"), and parseHeader looks no further. It reads 64 KiB,
// the default cluster size, and the rest when the header names larger
// clusters, rather than the largest cluster possible (2 MiB) every time.
func readHeaderCluster(f block.File, fileSize int64) ([]byte, error) {
	readAt := func(b []byte, off int64) error {
		if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	}
	head := make([]byte, min(fileSize, 64<<10))
	if err := readAt(head, 0); err != nil {
		return nil, err
	}
	if len(head) < 24 || string(head[:4]) != Magic {
		return head, nil // parseHeader says what is wrong
	}
	bits := binary.BigEndian.Uint32(head[20:])
	if n := min(fileSize, 1<<min(bits, maxClusterBits)); n > int64(len(head)) {
		full := make([]byte, n)
		copy(full, head)
		if err := readAt(full[len(head):], int64(len(head))); err != nil {
			return nil, err
		}
		head = full
	}
	return head, nil
}

// openFile opens an image on f: header, caches, L1 and refcount tables, the
// writable-open fixups, then the backing chain. The caches are sized from
// Options.CacheSize (QEMU's l2-cache-size; refcount blocks get a quarter),
// and the L2 cache depends on the refcount cache (see tableCache). A
// corrupt-marked image opens writable only for repair (Options.Repair),
// with every change but Check refused.
func openFile(f block.File, path string, opts block.Options) (_ *Image, err error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	head, err := readHeaderCluster(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	h, err := parseHeader(head, st.Size())
	if err != nil {
		return nil, err
	}
	img := &Image{
		f: f, path: path, readOnly: opts.ReadOnly, noSync: opts.NoSync, warn: opts.Warn, hdr: h,
		clusterBits: h.clusterBits, clusterSize: 1 << h.clusterBits,
		rcBits: 1 << h.refcountOrder, extL2: h.incompat&incompatExtendedL2 != 0,
		inflight: map[int64]chan struct{}{}, events: block.Events(f),
	}
	img.fileEnd.Store(st.Size())
	img.size.Store(int64(h.size))
	if err := img.openDataFile(opts); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			img.closeDataFile()
		}
	}()
	img.l2EntryShift = h.l2EntryBits()
	img.l2Entries = img.clusterSize >> img.l2EntryShift
	img.rbEntries = img.clusterSize * 8 / int64(img.rcBits)
	img.bufPool.New = func() any { b := make([]byte, img.clusterSize); return &b }
	if !opts.ReadOnly && h.incompat&incompatCorrupt != 0 {
		if !opts.Repair {
			return nil, errors.New("image is marked corrupt (incompatible feature bit 1); it can only be opened read-only, or for repair with check -r all")
		}
		// Opened for repair: Check may rebuild it; every other change is
		// refused until a repair clears the bit.
		img.corrupted.Store(true)
	}
	cacheSize := opts.CacheSize
	if cacheSize <= 0 {
		cacheSize = defaultCacheSize
	}
	img.rbc = newTableCache(img, "refcount block", int(cacheSize/4/img.clusterSize))
	img.rbc.loadEvent, img.rbc.writeEvent = block.EventRefblockLoad, block.EventRefblockUpdatePart
	img.l2c = newTableCache(img, "L2 table", int(cacheSize/img.clusterSize))
	img.l2c.loadEvent, img.l2c.writeEvent = block.EventL2Load, block.EventL2Update
	img.l2c.depends = img.rbc
	img.l2c.noBarrier = h.compat&compatLazyRefcounts != 0
	if img.l1, err = img.loadL1(int64(h.l1Off), h.l1Size); err != nil {
		return nil, err
	}
	if err := img.loadRefcountTable(); err != nil {
		return nil, err
	}
	if err := img.openCrypto(opts); err != nil {
		return nil, err
	}
	if !opts.ReadOnly {
		if err := img.openWritable(opts.Repair); err != nil {
			return nil, err
		}
	}
	if err := img.openBitmaps(!opts.ReadOnly, opts.Repair); err != nil {
		return nil, err
	}
	if h.backingFile != "" {
		if img.backing, err = block.OpenBacking(path, h.backingFile, h.backingFormat, opts); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// openWritable clears unknown autoclear bits and repairs an image left
// dirty by lazy refcounts, as qcow2_do_open does. The raw external data
// bit is cleared too (spec "Header": autoclear bits a writer does not
// maintain are cleared before writing); the bitmaps bit stays, as the
// bitmaps are kept up to date (bitmap.go). A dirty image's refcounts
// are rebuilt by a full check with repair before anything else is done.
func (img *Image) openWritable(repair bool) error {
	h := img.hdr
	if h.autoclear&^autoclearKnown != 0 {
		h.autoclear &= autoclearKnown
		if err := img.writeHeader(); err != nil {
			return err
		}
	}
	// Opened for check -r, the dirty image is left to Check, which
	// reports what the lazy refcounts left wrong before repairing it, as
	// qemu-img check -r does (iotest 039).
	if h.incompat&incompatDirty != 0 && !repair {
		img.dirtyMarked = true
		if _, err := img.check(block.RepairAll); err != nil {
			return fmt.Errorf("repairing refcounts of a dirty image: %w", err)
		}
		if err := img.clearDirty(); err != nil {
			return err
		}
	}
	return nil
}

// writeHeader rewrites the header cluster from img.hdr, extensions and
// backing name included, and syncs. Used for changes that may move the
// extensions (backing file, feature bits on open); smaller updates write
// their own fields (writeFeatures, the size, the table locations).
func (img *Image) writeHeader() error {
	buf, err := img.hdr.encode()
	if err != nil {
		return err
	}
	if err := img.writeMeta(buf, 0); err != nil {
		return fmt.Errorf("writing header: %w", err)
	}
	return img.sync()
}

// writeFeatures rewrites the three feature words (v3 only), header bytes
// 72-95, in one write, and syncs: the dirty and corrupt bits must be on
// disk before the changes they announce.
func (img *Image) writeFeatures() error {
	if img.hdr.version < 3 {
		return nil
	}
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], img.hdr.incompat)
	binary.BigEndian.PutUint64(b[8:], img.hdr.compat)
	binary.BigEndian.PutUint64(b[16:], img.hdr.autoclear)
	if err := img.writeMeta(b[:], 72); err != nil {
		return fmt.Errorf("writing feature bits: %w", err)
	}
	return img.sync()
}

// markDirty sets the dirty bit before the first metadata change of an
// image with lazy refcounts (spec "Header", compatible bit 0: mark the
// image dirty, then postpone refcount updates). It is written and synced
// at once; dirtyMarked avoids doing it again until clearDirty.
func (img *Image) markDirty() error {
	if img.dirtyMarked || img.hdr.compat&compatLazyRefcounts == 0 || img.hdr.version < 3 {
		return nil
	}
	img.dirtyMarked = true
	img.hdr.incompat |= incompatDirty
	return img.writeFeatures()
}

// clearDirty flushes everything and clears the dirty bit.
func (img *Image) clearDirty() error {
	if !img.dirtyMarked {
		return nil
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	img.hdr.incompat &^= incompatDirty
	if err := img.writeFeatures(); err != nil {
		return err
	}
	img.dirtyMarked = false
	return nil
}

// readMeta reads metadata at off; a read past the end of the file is
// corruption (some table points outside the file), not an I/O error.
func (img *Image) readMeta(p []byte, off int64) error {
	_, err := img.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		return corruptf("metadata at %#x+%d lies beyond the end of the file", off, len(p))
	}
	return err
}

// writeMeta writes metadata at off, without ordering or syncing: callers
// place barriers (barrier, sync) where the format needs them.
func (img *Image) writeMeta(p []byte, off int64) error {
	_, err := img.f.WriteAt(p, off)
	return err
}

// sync makes everything written so far durable (fdatasync), unless
// Options.NoSync (cache=unsafe), where write order alone remains.
func (img *Image) sync() error {
	if img.noSync {
		return nil
	}
	img.event(block.EventFlushToDisk)
	// Guest data first: an L2 entry written after this barrier must not
	// reach the disk before the data it maps.
	if img.external && img.data != nil {
		if err := img.data.Sync(); err != nil {
			return fmt.Errorf("syncing %s: %w", img.dataPath, err)
		}
	}
	if err := img.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", img.path, err)
	}
	return nil
}

// barrier orders metadata writes as QEMU's bdrv_flush between dependent
// updates; lazy refcounts make it unnecessary.
func (img *Image) barrier() error {
	if img.hdr.compat&compatLazyRefcounts != 0 {
		return nil
	}
	return img.sync()
}

// flushLocked writes dirty refcount blocks, then dirty L2 tables, then
// syncs. (Flushing the L2 cache first does that: its prepareWrite flushes
// the refcount cache and places the barrier; the refcount flush after it
// catches blocks dirtied without any L2 change.) Caller holds mu.
func (img *Image) flushLocked() error {
	if img.readOnly {
		return nil
	}
	if _, err := img.l2c.flush(); err != nil {
		return err
	}
	if _, err := img.rbc.flush(); err != nil {
		return err
	}
	return img.sync()
}

// Flush makes every completed write durable: dirty tables are written in
// dependency order and the file is synced. It does not clear the dirty
// bit of a lazy-refcounts image (only Close does, after a full flush), so
// a crash after Flush still triggers the refcount repair.
func (img *Image) Flush() error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.closed {
		return errors.New("qcow2 image is closed")
	}
	img.event(block.EventFlushToOS)
	return img.flushLocked()
}

// Close flushes, clears the dirty bit and closes the file and backing chain.
// It waits for every request in flight (quiesce); a second Close does
// nothing. All errors are joined, every close is attempted.
func (img *Image) Close() error {
	img.quiesce()
	defer img.unquiesce()
	if img.closed {
		return nil
	}
	img.closed = true
	var errs []error
	if !img.readOnly {
		errs = append(errs, img.storeBitmaps(), img.flushLocked(), img.clearDirty())
	}
	errs = append(errs, img.f.Close())
	errs = append(errs, img.closeDataFile())
	if img.backing != nil {
		errs = append(errs, img.backing.Close())
	}
	return errors.Join(errs...)
}

// Size is the virtual disk size.
func (img *Image) Size() int64 {
	return img.size.Load()
}

// Format, Backing, ReadOnly and Filename implement block.Image.
func (img *Image) Format() string       { return "qcow2" }
func (img *Image) Backing() block.Image { return img.backing }
func (img *Image) ReadOnly() bool       { return img.readOnly }
func (img *Image) Filename() string     { return img.path }

// ClusterSize is the cluster size in bytes.
func (img *Image) ClusterSize() int64 { return img.clusterSize }

// getBuf and putBuf lend cluster-sized scratch buffers (for compressed
// clusters and copy-on-write) without allocating per request; a buffer's
// contents are undefined when lent.
func (img *Image) getBuf() *[]byte  { return img.bufPool.Get().(*[]byte) }
func (img *Image) putBuf(b *[]byte) { img.bufPool.Put(b) }

// checkRange validates a guest I/O range: no negative or overflowing
// values, and nothing past the disk's end (an error wrapping io.EOF).
func (img *Image) checkRange(off, n int64) error {
	if off < 0 || n < 0 || off+n < off {
		return fmt.Errorf("invalid range %d+%d", off, n)
	}
	if size := img.Size(); off+n > size {
		return fmt.Errorf("range %d+%d beyond the disk size %d: %w", off, n, size, io.EOF)
	}
	return nil
}

// quiesce waits until no read or write is in flight and takes img.mu, in
// the lock order (gate, then mu). New requests wait on gate until
// unquiesce.
func (img *Image) quiesce() {
	img.gate.Lock()
	img.mu.Lock()
}

// unquiesce releases what quiesce took, mu first (the reverse order).
func (img *Image) unquiesce() {
	img.mu.Unlock()
	img.gate.Unlock()
}

// ReadAt reads guest data; unallocated ranges come from the backing file.
// Unlike io.ReaderAt it reads nothing for a range crossing the end: it
// fails whole with an error wrapping io.EOF (checkRange). Each run is
// resolved under mu and read without it. gate's shared lock keeps out the
// operations that free clusters wholesale (discard, snapshots, resize);
// a write to the same guest cluster running at the same time can still
// release the cluster being read (copy-on-write of a compressed cluster,
// or of one whose copied flag was missing), so overlapping guest read and
// write requests may read another cluster's bytes.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	if err := img.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	img.gate.RLock()
	defer img.gate.RUnlock()
	done := 0
	for done < len(p) {
		img.mu.Lock()
		m, err := img.resolve(off+int64(done), int64(len(p)-done))
		img.mu.Unlock()
		if err != nil {
			return done, err
		}
		chunk := p[done : done+int(m.length)]
		if err := img.readMapped(chunk, off+int64(done), m); err != nil {
			return done, err
		}
		done += len(chunk)
	}
	return done, nil
}

// readMapped reads one resolved run without the metadata lock.
func (img *Image) readMapped(p []byte, off int64, m mapping) error {
	switch m.kind {
	case mapZero:
		clear(p)
	case mapUnallocated:
		if img.backing != nil {
			img.event(block.EventReadBackingAIO)
		}
		return block.ReadBacking(img.backing, p, off)
	case mapData:
		img.event(block.EventReadAIO)
		if img.hdr.cryptMethod != cryptNone {
			return img.readEncrypted(p, off, m.host)
		}
		if img.external {
			return img.readData(p, m.host)
		}
		if _, err := img.f.ReadAt(p, m.host); err != nil {
			if errors.Is(err, io.EOF) {
				return corruptf("data at host offset %#x lies beyond the end of the file", m.host)
			}
			return fmt.Errorf("reading data at %#x: %w", m.host, err)
		}
	case mapCompressed:
		bp := img.getBuf()
		defer img.putBuf(bp)
		if err := img.readCompressed(*bp, m.l2e); err != nil {
			return err
		}
		copy(p, (*bp)[off&(img.clusterSize-1):])
	}
	return nil
}
