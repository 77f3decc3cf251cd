// Package qed is the QED image engine (QEMU docs/specs/qed_spec.txt):
// two-level tables, zero clusters, backing files, and the need-check bit
// with a consistency check on open.
//
// QED has no reference counts: a cluster is in use iff a table points at
// it, clusters are only ever appended at the end of the file, and none is
// freed while the image is open (MakeEmpty and check's leak repair
// truncate the file). Crash safety therefore rests on write order alone
// (data, then L2, then L1, spec "Unallocated L2 tables and data
// clusters") plus QED_F_NEED_CHECK, set before the first allocation and
// cleared once a flush has made everything consistent.
package qed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// init registers the qed format; its probe is the magic "QED\0" (spec
// "Header": magic is the first field).
func init() {
	block.Register(block.Format{
		Name:   "qed",
		Probe:  func(head []byte) bool { return len(head) >= 4 && binary.LittleEndian.Uint32(head) == magic },
		Open:   func(path string, opts block.Options) (block.Image, error) { return Open(path, opts) },
		Create: Create,
	})
}

// Image is an open QED image.
//
// Locking: mu guards the header, l1, the L2 cache and fileSize. Lookups
// take mu briefly; data I/O to allocated clusters runs without it.
// Allocating writes hold mu throughout, so allocation is serial (as in
// QEMU's QED) and the write order data -> L2 -> L1 is kept.
//
// Fields: clusterSize, clusterBits (log2 of it), tableEntries and
// tableBytes (a table's size in bytes) and backingName (the header's
// backing file string, "" for none) are fixed at open. Under mu: hdr is
// the header as last written (or about to be); l1 is the whole L1 table,
// always in memory and written through; cache holds L2 tables; fileSize
// is where the next cluster is appended, the file's size rounded up to a
// cluster; closed is set by Close (nothing reads it). ro and noSync are Options.ReadOnly and
// Options.NoSync; backing is the open backing image or nil.
type Image struct {
	f       block.File // a HostFile (O_DIRECT-aware for cache=none) or a filter over one
	path    string
	ro      bool
	noSync  bool // Options.NoSync
	backing block.Image

	clusterSize  int64
	clusterBits  uint
	tableEntries int64 // TABLE_NOFFSETS
	tableBytes   int64
	backingName  string

	mu       sync.Mutex
	hdr      header
	l1       []uint64
	cache    *tableCache
	fileSize int64 // end of the last cluster; new clusters go here
	closed   bool
	// events receives blkdebug events; nil over a plain host file.
	events block.EventSink
}

// Open opens a QED image and its backing chain. A writable image with the
// need-check bit set is checked and repaired first, as QEMU does.
func Open(path string, opts block.Options) (*Image, error) {
	// opts.DirectIO (cache=none) opens the file with O_DIRECT; HostFile
	// bounces the byte-granular header and table updates through aligned
	// read-modify-write, as for qcow2.
	f, err := block.OpenFile(path, opts)
	if err != nil {
		return nil, fmt.Errorf("opening QED image: %w", err)
	}
	img, err := openFile(f, path, opts)
	if err != nil {
		f.Close()
		return nil, &block.OpenError{Format: "QED", Path: path, Reason: err}
	}
	return img, nil
}

// openFile reads and validates the header, loads the L1 table, repairs a
// writable image that needs it (openFixups), then opens the backing file.
// The backing chain is opened last so that a check on open never depends
// on it, and on error the caller closes f (no backing is open yet).
func openFile(f block.File, path string, opts block.Options) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, headerLen)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	h, err := parseHeader(buf)
	if err != nil {
		return nil, err
	}
	if err := h.validate(st.Size()); err != nil {
		return nil, err
	}
	img := &Image{
		events: block.Events(f),
		f:      f, path: path, ro: opts.ReadOnly, noSync: opts.NoSync, hdr: h,
		clusterSize:  int64(h.ClusterSize),
		tableEntries: int64(h.tableEntries()),
		tableBytes:   int64(h.TableSize) * int64(h.ClusterSize),
	}
	for img.clusterSize>>img.clusterBits > 1 {
		img.clusterBits++
	}
	img.fileSize = (st.Size() + img.clusterSize - 1) &^ (img.clusterSize - 1)
	if img.l1, err = img.readTable(int64(h.L1TableOffset)); err != nil {
		return nil, fmt.Errorf("reading L1 table: %w", err)
	}
	img.cache = newTableCache(opts.CacheSize, img.tableBytes)
	if h.Features&featBackingFile != 0 {
		name := make([]byte, h.BackingNameSize)
		if _, err := f.ReadAt(name, int64(h.BackingNameOffset)); err != nil {
			return nil, fmt.Errorf("reading backing file name: %w", err)
		}
		img.backingName = string(name)
	}
	if !img.ro {
		if err := img.openFixups(); err != nil {
			return nil, err
		}
	}
	if img.backingName != "" {
		fmtName := ""
		if h.Features&featBackingNoProbe != 0 {
			fmtName = "raw"
		}
		if img.backing, err = block.OpenBacking(path, img.backingName, fmtName, opts); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// openFixups clears unknown autoclear bits and runs the consistency check
// when the need-check bit says the last writer did not finish cleanly.
// Both follow the spec ("Header": autoclear bits unknown to the opener are
// cleared; "Consistency checking": a dirty image is checked on open). A
// read-only open skips both and serves the image as it is, as QEMU does.
func (img *Image) openFixups() error {
	dirty := false
	if img.hdr.AutoclearFeatures != 0 {
		img.hdr.AutoclearFeatures = 0
		dirty = true
	}
	if img.hdr.Features&featNeedCheck != 0 {
		res, err := img.check(block.RepairAll)
		if err != nil {
			return fmt.Errorf("checking image marked as needing a check: %w", err)
		}
		if res.Corruptions-res.CorruptionsFixed > 0 || res.CheckErrors > 0 {
			return fmt.Errorf("image is corrupt (%d corruptions); run petrel img check -r all", res.Corruptions)
		}
		img.hdr.Features &^= featNeedCheck
		dirty = true
	}
	if dirty {
		return img.writeHeader()
	}
	return nil
}

// readTable reads one L1 or L2 table, refusing offsets outside the file.
// A table cut short by the end of the file (a file that is not a whole
// number of clusters) reads as zero entries past what the file holds.
func (img *Image) readTable(off int64) ([]uint64, error) {
	if off <= 0 || off%img.clusterSize != 0 || off > img.fileSize-img.tableBytes {
		return nil, fmt.Errorf("table offset %#x outside the image file", off)
	}
	raw := make([]byte, img.tableBytes)
	n, err := img.f.ReadAt(raw, off)
	if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return nil, fmt.Errorf("reading table at %#x: %w", off, err)
	}
	t := make([]uint64, img.tableEntries)
	for i := range t {
		t[i] = binary.LittleEndian.Uint64(raw[i*8:])
	}
	return t, nil
}

// encodeTable serialises a table to its on-disk form, little-endian
// 64-bit offsets (spec "Tables").
func encodeTable(t []uint64) []byte {
	b := make([]byte, len(t)*8)
	for i, v := range t {
		binary.LittleEndian.PutUint64(b[i*8:], v)
	}
	return b
}

// writeHeader rewrites the fixed header and makes it durable.
func (img *Image) writeHeader() error {
	if _, err := img.f.WriteAt(img.hdr.encode(), 0); err != nil {
		return fmt.Errorf("writing header: %w", err)
	}
	return img.sync()
}

// syncFile makes a file's data durable (fdatasync on a host file, the
// filter's Sync otherwise); FuzzOpen replaces it.
var syncFile = func(f block.File) error {
	if hf, ok := f.(*block.HostFile); ok {
		return unix.Fdatasync(int(hf.File().Fd()))
	}
	return f.Sync()
}

// event tells the file below about a point in the engine's work, as
// QEMU's qed raises blkdebug events (nil check over a plain host file).
func (img *Image) event(e block.DebugEvent) {
	if img.events != nil {
		img.events.DebugEvent(e)
	}
}

// sync makes what was written so far durable (fdatasync), unless
// Options.NoSync. Every ordering point of the format goes through it.
func (img *Image) sync() error {
	if img.noSync {
		return nil
	}
	if err := syncFile(img.f); err != nil {
		return fmt.Errorf("syncing %s: %w", img.path, err)
	}
	return nil
}

// Size is the guest-visible size, image_size; it takes mu because Resize
// may change it.
func (img *Image) Size() int64 {
	img.mu.Lock()
	defer img.mu.Unlock()
	return int64(img.hdr.ImageSize)
}

// Format, Backing, ReadOnly, Filename and ClusterSize implement
// block.Image (and the cluster size qemu-img info and convert use).
func (img *Image) Format() string       { return "qed" }
func (img *Image) Backing() block.Image { return img.backing }
func (img *Image) ReadOnly() bool       { return img.ro }
func (img *Image) Filename() string     { return img.path }
func (img *Image) ClusterSize() int64   { return img.clusterSize }

// Flush syncs data and metadata, then clears the need-check bit: after a
// flush with no allocation in flight the metadata is consistent. Holding
// mu keeps allocations out while it runs. The bit is cleared only after
// the sync, so the header never claims a clean image whose tables are not
// yet durable.
func (img *Image) Flush() error {
	if img.ro {
		return nil
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.sync(); err != nil {
		return err
	}
	if img.hdr.Features&featNeedCheck != 0 {
		img.hdr.Features &^= featNeedCheck
		return img.writeHeader()
	}
	return nil
}

// Close flushes (clearing the need-check bit) and closes the chain: the
// file, then the backing image, which this image owns. The first error is
// returned, but every close is attempted. The image must not be used
// afterwards.
func (img *Image) Close() error {
	err := img.Flush()
	img.mu.Lock()
	img.closed = true
	img.mu.Unlock()
	if cerr := img.f.Close(); err == nil {
		err = cerr
	}
	if img.backing != nil {
		if berr := img.backing.Close(); err == nil {
			err = berr
		}
	}
	return err
}

// Describe gives the fields qemu-img info prints for QED: cluster size,
// the need-check bit as QEMU's "dirty-flag", and the backing file with
// its format when QED_F_BACKING_FORMAT_NO_PROBE pins it to raw.
func (img *Image) Describe() map[string]any {
	img.mu.Lock()
	defer img.mu.Unlock()
	d := map[string]any{
		"cluster-size": img.clusterSize,
		"dirty-flag":   img.hdr.Features&featNeedCheck != 0,
	}
	if img.backingName != "" {
		d["backing-filename"] = img.backingName
		if img.hdr.Features&featBackingNoProbe != 0 {
			d["backing-filename-format"] = "raw"
		}
	}
	return d
}

// Create writes an empty QED image: header cluster(s), then the L1 table.
// opts.Extra["table_size"] sets the table size in clusters (default 4).
// The defaults (64 KiB clusters, 4-cluster tables, one header cluster,
// the backing name right after the 64-byte header) are QEMU's.
func Create(path string, opts block.CreateOptions) error {
	h := header{ClusterSize: defaultClusterSize, TableSize: defaultTableSize, HeaderSize: 1}
	if opts.ClusterSize != 0 {
		h.ClusterSize = uint32(opts.ClusterSize)
		if int64(h.ClusterSize) != opts.ClusterSize || !isPow2(uint64(h.ClusterSize)) || h.ClusterSize < minClusterSize || h.ClusterSize > maxClusterSize {
			return fmt.Errorf("creating %s: QED cluster size must be a power of 2 between %d and %d", path, minClusterSize, maxClusterSize)
		}
	}
	if ts := opts.Extra["table_size"]; ts != "" {
		var v uint32
		if _, err := fmt.Sscan(ts, &v); err != nil || !isPow2(uint64(v)) || v > maxTableSize {
			return fmt.Errorf("creating %s: QED table size must be a power of 2 between 1 and %d", path, maxTableSize)
		}
		h.TableSize = v
	}
	// A size that is not a whole number of sectors is rounded up, as
	// qemu-img's QED create does (iotest 104: 1234 bytes make 1.5 KiB).
	if opts.Size < 0 || uint64(opts.Size) > maxImageSize(uint64(h.ClusterSize), uint64(h.TableSize)) {
		return fmt.Errorf("creating %s: invalid image size specified; must be at most %d", path, maxImageSize(uint64(h.ClusterSize), uint64(h.TableSize)))
	}
	// (The limit is a multiple of the cluster size, so rounding stays within it.)
	opts.Size = (opts.Size + sectorSize - 1) &^ (sectorSize - 1)
	// As in QEMU, preallocation applies to the file QED creates (header
	// and L1 table); there is no metadata preallocation.
	switch opts.Preallocation {
	case "", "off", "falloc", "full":
	default:
		return fmt.Errorf("creating %s: unsupported preallocation mode: %s", path, opts.Preallocation)
	}
	h.ImageSize = uint64(opts.Size)
	h.L1TableOffset = uint64(h.HeaderSize) * uint64(h.ClusterSize)
	var name []byte
	if opts.BackingFile != "" {
		name = []byte(opts.BackingFile)
		if len(name) > maxBackingName || headerLen+len(name) > int(h.ClusterSize) {
			return fmt.Errorf("creating %s: backing file name too long", path)
		}
		h.Features |= featBackingFile
		h.BackingNameOffset, h.BackingNameSize = headerLen, uint32(len(name))
		if opts.BackingFormat == "raw" {
			h.Features |= featBackingNoProbe
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating QED image: %w", err)
	}
	defer f.Close()
	block.SetExtentSizeHint(f, opts.ExtentSizeHint)
	first := make([]byte, headerLen+len(name))
	copy(first, h.encode())
	copy(first[headerLen:], name)
	if _, err := f.WriteAt(first, 0); err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	end := int64(h.L1TableOffset) + int64(h.TableSize)*int64(h.ClusterSize)
	if err := f.Truncate(end); err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	switch opts.Preallocation {
	case "falloc":
		if err := unix.Fallocate(int(f.Fd()), 0, 0, end); err != nil {
			return fmt.Errorf("creating %s: fallocate: %w", path, err)
		}
	case "full":
		if _, err := f.WriteAt(make([]byte, end-int64(len(first))), int64(len(first))); err != nil {
			return fmt.Errorf("creating %s: %w", path, err)
		}
	}
	return f.Sync()
}

// SetBackingFile rewrites the backing file name and format (rebase -u).
// The name goes right after the fixed header and must fit in the header
// clusters; it is written before the header that points at it. The open
// backing image is not changed: the new name takes effect on the next
// open.
func (img *Image) SetBackingFile(name, format string) error {
	if img.ro {
		return fmt.Errorf("changing backing file of %s: %w", img.path, os.ErrPermission)
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	h := img.hdr
	h.Features &^= featBackingFile | featBackingNoProbe
	h.BackingNameOffset, h.BackingNameSize = 0, 0
	if name != "" {
		if len(name) > maxBackingName || headerLen+int64(len(name)) > int64(h.HeaderSize)*img.clusterSize {
			return fmt.Errorf("changing backing file of %s: name too long for the header", img.path)
		}
		h.Features |= featBackingFile
		h.BackingNameOffset, h.BackingNameSize = headerLen, uint32(len(name))
		if format == "raw" {
			h.Features |= featBackingNoProbe
		}
		if _, err := img.f.WriteAt([]byte(name), headerLen); err != nil {
			return fmt.Errorf("writing backing file name: %w", err)
		}
	}
	img.hdr = h
	img.backingName = name
	return img.writeHeader()
}

// Resize grows the image; QED cannot shrink (as in QEMU). Only image_size
// changes: the L1 table already has an entry for every offset up to the
// format's maximum (spec "Tables": image_size <= TABLE_NOFFSETS^2 *
// cluster_size), so no table moves.
func (img *Image) Resize(newSize int64) error {
	if img.ro {
		return fmt.Errorf("resizing %s: %w", img.path, os.ErrPermission)
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if newSize < int64(img.hdr.ImageSize) {
		return fmt.Errorf("resizing %s: QED images cannot be shrunk", img.path)
	}
	if newSize%sectorSize != 0 || uint64(newSize) > maxImageSize(uint64(img.clusterSize), uint64(img.hdr.TableSize)) {
		return fmt.Errorf("resizing %s: invalid image size %d", img.path, newSize)
	}
	// Growing over a backing file longer than the image would show the
	// backing file's data in the new area. QEMU's bdrv_co_truncate asks
	// the driver to zero it (BDRV_REQ_ZERO_WRITE), which its QED driver
	// cannot do, so the resize is refused.
	if old := int64(img.hdr.ImageSize); newSize > old && img.backing != nil && img.backing.Size() > old {
		return errors.New("Block driver does not support requested flags")
	}
	img.hdr.ImageSize = uint64(newSize)
	return img.writeHeader()
}

// MakeEmpty drops every L2 table and data cluster: the L1 table is zeroed
// and the file truncated after it, so the image reads through to its
// backing file. The L1 is cleared (and synced) before the truncation, so a
// crash in between leaves only leaked clusters. It implements block.Emptier
// for qemu-img commit without -d, which opens the image alone and does
// nothing else with it; no other I/O may run at the same time.
func (img *Image) MakeEmpty() error {
	if img.ro {
		return fmt.Errorf("emptying %s: %w", img.path, os.ErrPermission)
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	clear(img.l1)
	if _, err := img.f.WriteAt(encodeTable(img.l1), int64(img.hdr.L1TableOffset)); err != nil {
		return fmt.Errorf("emptying %s: writing L1 table: %w", img.path, err)
	}
	if err := img.sync(); err != nil {
		return err
	}
	img.cache.drop()
	end := int64(img.hdr.L1TableOffset) + img.tableBytes
	if err := img.f.Truncate(end); err != nil {
		return fmt.Errorf("emptying %s: %w", img.path, err)
	}
	img.fileSize = end
	return img.sync()
}
