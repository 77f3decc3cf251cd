// Package raw is the raw image engine: a file or block device holding the
// disk byte for byte. It is sparse-aware (SEEK_DATA/SEEK_HOLE for block
// status, hole punching for discard) and supports O_DIRECT through aligned
// bounce buffers.
package raw

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// init registers the raw format. Its probe never matches: raw is what a
// file is when no other format's probe claims it, so block/all's probing
// falls back to it, as qemu-img does (with a warning there).
func init() {
	block.Register(block.Format{
		Name:    "raw",
		Probe:   func([]byte) bool { return false }, // raw is what nothing else claims
		Open:    func(path string, opts block.Options) (block.Image, error) { return Open(path, opts) },
		Create:  Create,
		Measure: Measure,
	})
}

// Image is an open raw file or block device.
//
// The disk is the file itself: guest offset X is file offset X, with no
// metadata, so an Image keeps no lock; concurrent requests go straight to
// pread/pwrite, and only size is shared state.
//
// Fields: path is as given to Open (for messages and Filename). size is
// the disk size in bytes: the file's at open (or the device's, from
// BLKGETSIZE64), then what Resize set; atomic because a resize may run
// while other goroutines' requests check it. ro makes writes, discards and
// resizes fail with os.ErrPermission. device marks a block device: its
// size is fixed, and SEEK_DATA means nothing there, so BlockStatus reports
// all data.
type Image struct {
	f      *block.HostFile // bounces unaligned O_DIRECT requests
	path   string
	size   atomic.Int64
	ro     bool
	noSync bool // Options.NoSync
	device bool
}

// Open opens a raw image: a regular file (its size is the disk's) or a
// block device. With opts.DirectIO the file is opened O_DIRECT and
// block.HostFile bounces requests the device's alignment does not allow.
func Open(path string, opts block.Options) (*Image, error) {
	f, err := block.OpenHostFile(path, opts.ReadOnly, opts.DirectIO)
	if err != nil {
		return nil, fmt.Errorf("opening raw image: %w", err)
	}
	img := &Image{f: f, path: path, ro: opts.ReadOnly, noSync: opts.NoSync}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening raw image %s: %w", path, err)
	}
	size := st.Size()
	if st.Mode()&os.ModeDevice != 0 {
		img.device = true
		n, err := unix.IoctlGetUint64(int(f.File().Fd()), unix.BLKGETSIZE64)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reading size of block device %s: %w", path, err)
		}
		size = int64(n)
	}
	img.size.Store(size)
	return img, nil
}

// Create writes a new raw image of opts.Size bytes with the requested
// preallocation ("off", "falloc" or "full").
func Create(path string, opts block.CreateOptions) error {
	if opts.Size < 0 {
		return fmt.Errorf("creating %s: negative size", path)
	}
	if opts.BackingFile != "" {
		return fmt.Errorf("creating %s: raw images have no backing file", path)
	}
	mode := opts.Preallocation
	if mode == "" {
		mode = "off"
	}
	if mode != "off" && mode != "falloc" && mode != "full" {
		return fmt.Errorf("creating %s: unsupported preallocation mode: %s", path, mode)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("creating raw image: %w", err)
	}
	defer f.Close()
	block.SetExtentSizeHint(f, opts.ExtentSizeHint)
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() { // a block device keeps its size
		n, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
		if err != nil || int64(n) < opts.Size {
			return fmt.Errorf("creating %s: device smaller than %d bytes", path, opts.Size)
		}
		return nil
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	hf, err := block.NewHostFile(f, false)
	if err != nil {
		return err
	}
	// QEMU's file driver makes whole sectors (raw_co_create: ROUND_UP to
	// BDRV_SECTOR_SIZE); growing the empty file writes its first block
	// (HostFile.Truncate, as allocate_first_block).
	size := (opts.Size + 511) &^ 511
	if err := preallocate(hf, 0, size, mode); err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if mode == "full" {
		return f.Sync() // as QEMU, which flushes only after writing zeroes
	}
	return nil
}

// preallocate grows f from old to size bytes with the given mode: "off"
// only truncates (a hole), "falloc" reserves blocks (they read as zeroes
// and SEEK_DATA may still call them holes), "full" writes zeroes, so the
// blocks are allocated and written as qemu-img's full preallocation does.
func preallocate(f *block.HostFile, old, size int64, mode string) error {
	switch mode {
	case "falloc":
		if size > old {
			if err := f.Fallocate(0, old, size-old); err != nil {
				return fmt.Errorf("fallocate: %w", err)
			}
			if old == 0 {
				f.AllocateFirstBlock(size)
			}
		}
	case "full":
		buf := make([]byte, 1<<20)
		for off := old; off < size; off += int64(len(buf)) {
			n := min(int64(len(buf)), size-off)
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("preallocating: %w", err)
			}
		}
	}
	return f.Truncate(size)
}

// Size, Format, Backing, ReadOnly, Filename and Close implement
// block.Image; raw images never have a backing file.
func (img *Image) Size() int64          { return img.size.Load() }
func (img *Image) Format() string       { return "raw" }
func (img *Image) Backing() block.Image { return nil }
func (img *Image) ReadOnly() bool       { return img.ro }
func (img *Image) Filename() string     { return img.path }
func (img *Image) Close() error         { return img.f.Close() }

// Describe gives what qemu-img info shows for raw: nothing beyond the
// generic fields.
func (img *Image) Describe() map[string]any { return map[string]any{} }

// Flush makes completed writes durable with fdatasync (the file's size and
// data, not its timestamps). With Options.NoSync (cache=unsafe) it does
// nothing, as QEMU ignores flushes then.
func (img *Image) Flush() error {
	if img.ro || img.noSync {
		return nil
	}
	if err := unix.Fdatasync(int(img.f.File().Fd())); err != nil {
		return fmt.Errorf("flushing %s: %w", img.path, err)
	}
	return nil
}

// clamp checks a request against the disk size: it returns how many bytes
// of a len-byte request at off lie inside the disk.
func (img *Image) clamp(off int64, n int) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("raw: negative offset %d", off)
	}
	size := img.Size()
	if off >= size {
		return 0, io.EOF
	}
	return int(min(int64(n), size-off)), nil
}

// ReadAt reads from the disk; a read crossing the end returns the part
// inside with io.EOF, one starting at or past the end (0, io.EOF), as
// io.ReaderAt specifies. A file shorter than Size (truncated behind our
// back) reads as zeroes there.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	n, err := img.clamp(off, len(p))
	if err != nil {
		return 0, err
	}
	m, err := img.f.ReadAt(p[:n], off)
	if errors.Is(err, io.EOF) { // file shorter than the size we saw: zeroes
		clear(p[m:n])
		err = nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s at %#x: %w", img.path, off, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes to the disk; raw images never grow by writing, so a write
// that reaches past the end fails whole, nothing written (unlike ReadAt,
// which returns the part inside).
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if img.ro {
		return 0, fmt.Errorf("writing %s: %w", img.path, os.ErrPermission)
	}
	n, err := img.clamp(off, len(p))
	if err != nil || n < len(p) {
		return 0, fmt.Errorf("raw: write of %d bytes at %#x beyond disk size %d", len(p), off, img.Size())
	}
	_, err = img.f.WriteAt(p, off)
	if err != nil {
		return 0, fmt.Errorf("writing %s at %#x: %w", img.path, off, err)
	}
	return n, nil
}

// Measure answers `qemu-img measure -O raw`: a raw image needs its whole
// virtual size, allocated or not (the input's size, or the size asked for
// rounded up to whole 512-byte sectors as qemu-img's raw_measure).
func Measure(o block.CreateOptions, in block.Image) (block.MeasureInfo, error) {
	size := (o.Size + 511) &^ 511
	if in != nil {
		size = in.Size()
	}
	return block.MeasureInfo{Required: size, FullyAllocated: size}, nil
}
