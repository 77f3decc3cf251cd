// Package null is QEMU's null-co driver for petrel img: an image of a
// given size that holds nothing. Writes are accepted and dropped; reads
// return zeroes (QEMU leaves the buffer alone unless read-zeroes is set;
// Petrel always zeroes it, which is one of the contents QEMU may return).
package null

import (
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// Image is a null-co node.
type Image struct {
	size       int64
	readZeroes bool
}

// MaxSize is the largest size QEMU's block layer accepts (INT64_MAX
// rounded down to a sector), so a size past it is refused, not wrapped.
const MaxSize = (1<<63 - 1) &^ 511

// New makes a null-co node of size bytes. readZeroes is the read-zeroes
// option: block status then reports zeroes, as QEMU's null-co does.
func New(size int64, readZeroes bool) (*Image, error) {
	if size < 0 || size > MaxSize {
		return nil, fmt.Errorf("Parameter 'size' is out of range")
	}
	return &Image{size: size, readZeroes: readZeroes}, nil
}

func (n *Image) Size() int64 { return n.size }

func (n *Image) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

func (n *Image) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
func (n *Image) Flush() error                             { return nil }
func (n *Image) Discard(off, l int64) error               { return nil }
func (n *Image) WriteZeroes(off, l int64, unmap bool) error {
	return nil
}

// BlockStatus: the whole range in one extent, allocated at its own
// offset, reading zeroes when read-zeroes is on; never data (QEMU's
// null_co_block_status sets only OFFSET_VALID and ZERO).
func (n *Image) BlockStatus(off, l int64) (block.Extent, error) {
	e := block.Extent{Offset: off, Length: min(l, n.size-off), HostOffset: off, File: "null-co://"}
	if n.readZeroes {
		e.Flags |= block.ExtentZero
	}
	return e, nil
}

func (n *Image) Format() string       { return "null-co" }
func (n *Image) Backing() block.Image { return nil }
func (n *Image) ReadOnly() bool       { return false }
func (n *Image) Close() error         { return nil }
func (n *Image) Filename() string     { return "null-co://" }

var _ block.Image = (*Image)(nil)
