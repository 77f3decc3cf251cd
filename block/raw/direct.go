package raw

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/sys/unix"
)

// bounceSize is the size of one O_DIRECT bounce buffer; larger requests
// are split.
const bounceSize = 1 << 20

// bouncePool hands out page-aligned buffers (anonymous mmap is always
// page-aligned, which satisfies O_DIRECT without unsafe pointer tricks).
var bouncePool = sync.Pool{New: func() any {
	b, err := unix.Mmap(-1, 0, bounceSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	return &b
}}

func getBounce() (*[]byte, error) {
	b, _ := bouncePool.Get().(*[]byte)
	if b == nil {
		return nil, fmt.Errorf("allocating O_DIRECT bounce buffer")
	}
	return b, nil
}

// alignedSpan returns the directAlign-aligned span covering [off, off+n).
func alignedSpan(off, n int64) (start, end int64) {
	start = off &^ (directAlign - 1)
	end = (off + n + directAlign - 1) &^ (directAlign - 1)
	return start, end
}

// directRead reads p at off through aligned bounce buffers.
func (img *Image) directRead(p []byte, off int64) error {
	bp, err := getBounce()
	if err != nil {
		return err
	}
	defer bouncePool.Put(bp)
	buf := *bp
	for len(p) > 0 {
		start, end := alignedSpan(off, int64(len(p)))
		end = min(end, start+bounceSize)
		m, err := img.f.ReadAt(buf[:end-start], start)
		if err != nil && m < int(off-start) {
			return err
		}
		avail := max(0, int64(m)-(off-start))
		want := min(int64(len(p)), end-off)
		c := copy(p[:want], buf[off-start:off-start+min(avail, want)])
		clear(p[c:want]) // past the end of a file whose size is not aligned
		p, off = p[want:], off+want
	}
	return nil
}

// directWrite writes p at off through aligned bounce buffers, reading the
// partial blocks at either end first.
func (img *Image) directWrite(p []byte, off int64) error {
	bp, err := getBounce()
	if err != nil {
		return err
	}
	defer bouncePool.Put(bp)
	buf := *bp
	for len(p) > 0 {
		start, end := alignedSpan(off, int64(len(p)))
		end = min(end, start+bounceSize)
		want := min(int64(len(p)), end-off)
		partial := off != start || off+want != end || end > img.Size()
		if partial {
			img.rmw.Lock()
			clear(buf[:end-start])
			if _, err := img.f.ReadAt(buf[:end-start], start); err != nil && !isEOF(err) {
				img.rmw.Unlock()
				return err
			}
		}
		copy(buf[off-start:], p[:want])
		wend := end
		if size := img.Size(); wend > size && size%directAlign != 0 {
			// The file ends mid-block: O_DIRECT cannot write a short
			// tail, so write the aligned part directly and the tail
			// through a buffered descriptor.
			wend = size &^ (directAlign - 1)
		}
		var werr error
		if wend > start {
			_, werr = img.f.WriteAt(buf[:wend-start], start)
		}
		if werr == nil && wend < end {
			werr = img.writeTail(buf[wend-start:img.Size()-start], wend)
		}
		if partial {
			img.rmw.Unlock()
		}
		if werr != nil {
			return werr
		}
		p, off = p[want:], off+want
	}
	return nil
}

// writeTail writes the unaligned last bytes of a file without O_DIRECT.
func (img *Image) writeTail(p []byte, off int64) error {
	fd, err := unix.Open(img.path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.Pwrite(fd, p, off); err != nil {
		return err
	}
	return unix.Fdatasync(fd)
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
