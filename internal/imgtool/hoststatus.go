package imgtool

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// hostFiles answers "is this range of an image file a hole?" the way
// qemu's block status does when it recurses from a format into the file
// under it: data clusters lying in a hole of the host file read as zeroes
// ("zero": true in qemu-img map). Files are opened once per command.
type hostFiles map[string]*os.File

// status returns whether [off, off+n) of path starts in a hole and how far
// that state extends (at most n). Errors mean "data" (no information).
func (h hostFiles) status(path string, off, n int64) (hole bool, length int64) {
	if _, remote := block.ProtocolOf(path); remote {
		return false, n // an NBD export's status is the server's alone
	}
	f, ok := h[path]
	if !ok {
		var err error
		if f, err = os.Open(path); err != nil {
			f = nil
		}
		h[path] = f
	}
	if f == nil {
		return false, n
	}
	// SEEK_DATA from off finds where data starts: off itself (data
	// here, then SEEK_HOLE says how far) or later (a hole up to there),
	// as file-posix's find_allocation.
	fd := int(f.Fd())
	d, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true, n // no data at or after off
	}
	if err != nil {
		return false, n
	}
	if d > off {
		return true, min(n, d-off)
	}
	e, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil || e <= off {
		return false, n
	}
	return false, min(n, e-off)
}

// close closes every file status opened.
func (h hostFiles) close() {
	for _, f := range h {
		if f != nil {
			f.Close()
		}
	}
}
