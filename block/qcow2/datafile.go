package qcow2

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// External data files (QEMU's docs/interop/qcow2.txt: incompatible feature
// bit 2, autoclear bit 1 "raw external data", header extension 0x44415441
// naming the file). Guest clusters then live in a second file, each at its
// guest offset: an L2 entry's host offset must equal the guest offset of
// its cluster, data clusters are not refcounted (the refcounts describe
// the image file, which holds metadata only), and compressed clusters and
// internal snapshots are impossible. Guest cluster 0 lives at host offset
// 0, which in an L2 entry otherwise means "unallocated": there the copied
// flag, always set on an external data cluster since its refcount counts
// as 1, tells the two apart (hostCluster).
//
// With raw data (autoclear bit 1) the data file is also a consistent raw
// image on its own: every guest cluster is allocated (metadata
// preallocation at create and on growth), zero writes write zeroes into
// the data file too, and a backing file is refused.
//
// The name in the header is opened as a plain file name, relative to the
// working directory as QEMU does (not to the image's directory, unlike a
// backing file), and never parsed as json: or a protocol (QEMU's fix for
// CVE-2024-4467).

// errNotSupported is QEMU's ENOTSUP in strerror's words, what an image with
// an external data file answers for compressed writes and internal
// snapshots. It matches errors.ErrUnsupported.
var errNotSupported error = notSupported{}

type notSupported struct{}

func (notSupported) Error() string        { return "Operation not supported" }
func (notSupported) Is(target error) bool { return target == errors.ErrUnsupported }

// openDataFile sets img.data: the image file itself, or the external data
// file named in the header, opened like the image (read-only, O_DIRECT).
// With Options.NoIO (qemu-img info; read-only opens only, so that no write
// can find data nil) an external data file is not opened,
// as QEMU's BDRV_O_NO_IO, so info works without it. The messages are
// QEMU's (qemu-img prints them after "Could not open 'IMAGE': ").
func (img *Image) openDataFile(opts block.Options) error {
	h := img.hdr
	img.data = img.f
	if h.incompat&incompatDataFile == 0 {
		return nil
	}
	img.external = true
	img.rawData = h.autoclear&autoclearDataRaw != 0
	img.data = nil
	if opts.NoIO && opts.ReadOnly {
		return nil
	}
	if h.dataFile == "" {
		return errors.New("'data-file' is required for this image")
	}
	f, err := openDataHost(h.dataFile, opts.ReadOnly, opts.DirectIO)
	if err != nil {
		return fmt.Errorf("Could not open '%s': %s", h.dataFile, strerror(err))
	}
	img.data, img.dataPath = f, h.dataFile
	return nil
}

// openDataHost opens an external data file. FuzzOpen points it at a
// scratch file: a fuzzed header may name any file at all.
var openDataHost = block.OpenHostFile

// closeDataFile closes an external data file (the image file is closed by
// Close itself).
func (img *Image) closeDataFile() error {
	if !img.external || img.data == nil {
		return nil
	}
	d := img.data
	img.data = nil
	return d.Close()
}

// strerror words an OS error as C's strerror does (QEMU's messages): the
// errno's text, capitalized, without Go's "open NAME:" prefix.
func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		s := errno.Error()
		r, n := utf8.DecodeRuneInString(s)
		return string(unicode.ToUpper(r)) + s[n:]
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// errnoError is err as QEMU's error_setg_errno words it, "MSG: ERRNO
// TEXT" (the context Petrel's wrapping adds left out), still wrapping err
// so that errors.Is sees a corruption or an errno through it.
func errnoError(msg string, err error) error {
	return &qemuError{msg: msg + ": " + strerror(err), err: err}
}

type qemuError struct {
	msg string
	err error
}

func (e *qemuError) Error() string { return e.msg }
func (e *qemuError) Unwrap() error { return e.err }

// dataName is the file qemu-img map names for data: the data file's.
func (img *Image) dataName() string {
	if img.external {
		return img.dataPath
	}
	return img.path
}

// needData fails data I/O on an image opened with Options.NoIO.
func (img *Image) needData() error {
	if img.data == nil {
		return errors.New("qcow2 image opened without its external data file (metadata only)")
	}
	return nil
}

// readData reads guest data at host offset host of the external data file.
// Bytes past its end read as zeroes, as QEMU's file driver reads them (a
// data file may be shorter than the disk: it grows as clusters are
// written).
func (img *Image) readData(p []byte, host int64) error {
	if err := img.needData(); err != nil {
		return err
	}
	n, err := img.data.ReadAt(p, host)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading data at %#x of %s: %w", host, img.dataPath, err)
	}
	return nil
}

// allocData returns the host offset of k new data clusters for the guest
// clusters from c0: in an external data file the guest offset itself (the
// mapping is fixed and nothing is refcounted), else k contiguous free
// clusters of the image file, refcounted. Caller holds mu.
func (img *Image) allocData(c0, k int64) (int64, error) {
	if img.external {
		if err := img.needData(); err != nil {
			return 0, err
		}
		return c0 << img.clusterBits, nil
	}
	return img.allocClusters(k)
}

// checkDataHost verifies the fixed mapping of an external data file: an
// allocated cluster's host offset must be its guest offset g (rounded to
// the cluster), QEMU's words for the corruption.
func (img *Image) checkDataHost(host, g int64) error {
	if gc := g &^ (img.clusterSize - 1); host != gc {
		return corruptf("External data file host cluster offset %#x does not match guest cluster offset: %#x, but external data files have a fixed mapping", host, gc)
	}
	return nil
}

// discardData gives the space of [off, off+n) of the external data file
// back (a hole punched, the size kept), as QEMU passes the discard of a
// cluster down to the data file. Best effort, as any discard: a file
// system without hole punching keeps the old bytes, which no L2 entry
// maps any more.
func (img *Image) discardData(off, n int64) {
	if img.data == nil || n <= 0 {
		return
	}
	_ = img.data.Fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// zeroData makes [off, off+n) of a raw external data file read as zeroes,
// so that it stays the same standalone raw image the qcow2 view shows
// (spec, autoclear bit 1: "writing zeros requires writing to the data
// file"). unmap punches a hole; otherwise the range is zeroed in place
// (FALLOC_FL_ZERO_RANGE), or written with zeroes where the file system
// has neither.
func (img *Image) zeroData(off, n int64, unmap bool) error {
	if err := img.needData(); err != nil {
		return err
	}
	if unmap {
		st, err := img.data.Stat()
		if err == nil && off+n <= st.Size() &&
			img.data.Fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n) == nil {
			return nil
		}
	}
	if img.data.Fallocate(unix.FALLOC_FL_ZERO_RANGE, off, n) == nil {
		return nil
	}
	return writeZeroRange(img.data, off, n)
}

// extendData grows the external data file to at least end bytes for
// preallocated clusters, as QEMU's preallocate_co: what the file already
// holds is never touched (a raw data file may carry data the image is
// being laid over); only the new tail is reserved (falloc) or written
// with zeroes (full).
func (img *Image) extendData(end int64, mode string) error {
	if err := img.needData(); err != nil {
		return err
	}
	st, err := img.data.Stat()
	if err != nil {
		return err
	}
	cur := st.Size()
	if cur >= end {
		return nil
	}
	switch mode {
	case "falloc":
		err = img.data.Fallocate(0, cur, end-cur)
	case "full":
		err = writeZeroRange(img.data, cur, end-cur)
	default:
		err = img.data.Truncate(end)
	}
	if err != nil {
		return fmt.Errorf("extending the data file %s for preallocation: %w", img.dataPath, err)
	}
	return nil
}

// resizeDataFile is the external data file's part of a resize, as QEMU's
// qcow2_co_truncate: a raw data file keeps every guest cluster mapped, so
// growing preallocates the new clusters' metadata (over whatever the data
// file holds there); otherwise, and when shrinking, the data file is cut
// or extended to the new size. Called after the size changed.
func (img *Image) resizeDataFile(old, newSize int64) error {
	if !img.external {
		return nil
	}
	if err := img.needData(); err != nil {
		return err
	}
	if img.rawData && newSize > old {
		return img.preallocate("metadata", old)
	}
	if err := img.data.Truncate(newSize); err != nil {
		return fmt.Errorf("resizing the data file %s: %w", img.dataPath, err)
	}
	return nil
}

// createDataFile creates (or truncates) the external data file for Create,
// as QEMU creates it through the file driver with the image's options:
// size bytes long, sparse for preallocation off and metadata, reserved
// (falloc) or written with zeroes (full) otherwise, with the extent size
// hint. Relative names are relative to the working directory.
func createDataFile(name string, size int64, mode string, hint int64) error {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("Could not create '%s': %s", name, strerror(err))
	}
	block.SetExtentSizeHint(f, hint)
	hf, err := block.NewHostFile(f, false)
	if err == nil {
		switch mode {
		case "falloc":
			err = hf.Fallocate(0, 0, size)
		case "full":
			err = writeZeroRange(hf, 0, size)
		}
	}
	if err == nil {
		err = hf.Truncate(size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("Could not create '%s': %v", name, err)
	}
	return nil
}

// dataFileOptions checks the data file options of Create in
// qcow2_co_create's words and order, and records them in h: the name in
// the header extension and incompatible bit 2, raw data in autoclear bit
// 1. Raw data needs a data file and no backing file.
func dataFileOptions(h *header, o block.CreateOptions) error {
	if o.DataFile != "" {
		if h.version < 3 {
			return errors.New("External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
		}
		h.dataFile = o.DataFile
		h.incompat |= incompatDataFile
	}
	if o.DataFileRaw {
		if o.DataFile == "" {
			return errors.New("data-file-raw requires data-file")
		}
		if o.BackingFile != "" {
			return errors.New("Backing file and data-file-raw cannot be used at the same time")
		}
		h.autoclear |= autoclearDataRaw
	}
	return nil
}
