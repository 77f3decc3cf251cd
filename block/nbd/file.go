package nbd

import (
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/petrel-vmm/petrel/block"
	"golang.org/x/sys/unix"
)

// File is an export as the byte store of a format engine (block.File): a
// qcow2 image kept in an export, as QEMU's qcow2 over its nbd protocol
// node. The export has a fixed size: writes inside it only, no growing.
type File struct {
	img *Image
}

var _ block.File = (*File)(nil)

// AsFile hands img to a format engine as its file; closing the File
// closes img.
func (img *Image) AsFile() *File { return &File{img: img} }

func (f *File) ReadAt(p []byte, off int64) (int, error)  { return f.img.ReadAt(p, off) }
func (f *File) WriteAt(p []byte, off int64) (int, error) { return f.img.WriteAt(p, off) }
func (f *File) Name() string                             { return f.img.Filename() }
func (f *File) Sync() error                              { return f.img.Flush() }
func (f *File) Close() error                             { return f.img.Close() }

// HasZeroInit is false: a new image on an export reads whatever the
// export held before (QEMU's nbd has no .bdrv_has_zero_init).
func (f *File) HasZeroInit() bool { return false }

// Stat reports the export's size; nothing else of a host file applies.
func (f *File) Stat() (os.FileInfo, error) {
	return exportInfo{name: f.img.Filename(), size: f.img.Size()}, nil
}

// Truncate to the export's size or below does nothing; growing fails, in
// QEMU's words (nbd_co_truncate without exact: an export keeps its size).
func (f *File) Truncate(size int64) error {
	if size > f.img.Size() {
		return fmt.Errorf("Cannot grow NBD nodes")
	}
	return nil
}

// Fallocate maps the host file's modes onto the export: punching a hole
// or zeroing a range writes zeroes (unmapping where a hole was asked), so
// the range reads as zeroes as it would in a host file; plain allocation
// inside the export has nothing to do.
func (f *File) Fallocate(mode uint32, off, n int64) error {
	if off < 0 || n < 0 || off+n > f.img.Size() {
		return fmt.Errorf("Cannot grow NBD nodes")
	}
	switch {
	case mode&unix.FALLOC_FL_PUNCH_HOLE != 0:
		return f.img.WriteZeroes(off, n, true)
	case mode&unix.FALLOC_FL_ZERO_RANGE != 0:
		return f.img.WriteZeroes(off, n, false)
	}
	return nil
}

// exportInfo is the os.FileInfo of an export: a name and a size.
type exportInfo struct {
	name string
	size int64
}

func (i exportInfo) Name() string       { return i.name }
func (i exportInfo) Size() int64        { return i.size }
func (i exportInfo) Mode() fs.FileMode  { return 0 }
func (i exportInfo) ModTime() time.Time { return time.Time{} }
func (i exportInfo) IsDir() bool        { return false }
func (i exportInfo) Sys() any           { return nil }
