package raw

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// zeroChunk is the buffer written when the file system cannot punch holes.
// It is shared by every image and goroutine, which is safe only because it
// is never written: it is only ever the source of WriteAt.
var zeroChunk = make([]byte, 1<<20)

// checkRange refuses op on a read-only image or on a range not wholly
// inside the disk; op names the operation in the error.
func (img *Image) checkRange(op string, off, n int64) error {
	if img.ro {
		return fmt.Errorf("%s on %s: %w", op, img.path, os.ErrPermission)
	}
	if off < 0 || n < 0 || off > img.Size() || n > img.Size()-off {
		return fmt.Errorf("%s on %s: range %#x+%#x outside the disk", op, img.path, off, n)
	}
	return nil
}

// Discard punches a hole; where the file system cannot, it writes zeroes
// so that the range still reads as zeroes.
func (img *Image) Discard(off, n int64) error {
	return img.WriteZeroes(off, n, true)
}

// WriteZeroes makes the range read as zeroes: a punched hole when unmap is
// set, FALLOC_FL_ZERO_RANGE otherwise, and written zeroes as the fallback.
func (img *Image) WriteZeroes(off, n int64, unmap bool) error {
	if err := img.checkRange("write zeroes", off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	mode := uint32(unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE)
	if unmap {
		mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	}
	// fallocate is tried only on a range aligned to the file's O_DIRECT
	// alignment (1 without O_DIRECT): a file system may refuse unaligned
	// ranges, or zero whole blocks around them. Any failure (EOPNOTSUPP on
	// a file system without the mode, a block device without discard)
	// falls back to writing zeroes, which is always correct.
	if a := img.f.Alignment(); off%a == 0 && n%a == 0 {
		if err := img.f.Fallocate(mode, off, n); err == nil {
			return nil
		}
	}
	for done := int64(0); done < n; {
		c := min(int64(len(zeroChunk)), n-done)
		if _, err := img.WriteAt(zeroChunk[:c], off+done); err != nil {
			return err
		}
		done += c
	}
	return nil
}

// BlockStatus reports data and holes with SEEK_DATA/SEEK_HOLE. Every byte
// of a raw image is "allocated" in qemu-img's sense; holes read as zeroes.
// It describes one extent starting at off, at most n bytes long; callers
// (qemu-img map, convert) loop from its end. The answer is advisory: a
// file system may report data where a hole is (never the reverse), and a
// file system without SEEK_DATA makes everything data.
func (img *Image) BlockStatus(off, n int64) (block.Extent, error) {
	size := img.Size()
	if off < 0 || off >= size || n <= 0 {
		return block.Extent{}, fmt.Errorf("block status of %s: offset %#x outside the disk", img.path, off)
	}
	n = min(n, size-off)
	data := block.Extent{Offset: off, Length: n, Flags: block.ExtentData | block.ExtentAllocated, HostOffset: off, File: img.path}
	if img.device {
		return data, nil
	}
	fd := int(img.f.File().Fd())
	d, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO): // no data after off
		d = size
	case err != nil: // file system without SEEK_DATA: all data
		return data, nil
	}
	if d > off {
		return block.Extent{Offset: off, Length: min(n, d-off), Flags: block.ExtentZero | block.ExtentAllocated, HostOffset: off, File: img.path}, nil
	}
	h, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil || h <= off {
		return data, nil
	}
	data.Length = min(n, h-off)
	return data, nil
}

// Resize changes the file size; growing leaves a hole, which reads as
// zeroes. A block device cannot be resized: that is an error.
func (img *Image) Resize(newSize int64) error {
	if img.ro {
		return fmt.Errorf("resizing %s: %w", img.path, os.ErrPermission)
	}
	if newSize < 0 {
		return fmt.Errorf("resizing %s: negative size", img.path)
	}
	if img.device {
		return fmt.Errorf("resizing %s: cannot resize a block device", img.path)
	}
	if err := img.f.Truncate(newSize); err != nil {
		return fmt.Errorf("resizing %s: %w", img.path, err)
	}
	img.size.Store(newSize)
	return nil
}

// ResizePrealloc resizes like Resize; growth is preallocated with mode
// ("off", "falloc" or "full", as preallocate). Shrinking, and any resize
// of a block device, ignores mode. A failure part way may leave the file
// longer than Size (preallocate truncates only at its end).
func (img *Image) ResizePrealloc(newSize int64, mode string) error {
	switch mode {
	case "", "off":
		return img.Resize(newSize)
	case "falloc", "full":
	default:
		return fmt.Errorf("resizing %s: unsupported preallocation mode: %s", img.path, mode)
	}
	if img.ro {
		return fmt.Errorf("resizing %s: %w", img.path, os.ErrPermission)
	}
	old := img.Size()
	if newSize < old || img.device {
		return img.Resize(newSize)
	}
	if err := preallocate(img.f, old, newSize, mode); err != nil {
		return fmt.Errorf("resizing %s: %w", img.path, err)
	}
	img.size.Store(newSize)
	return nil
}
