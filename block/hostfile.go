package block

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// HostFile is an image engine's host file. Without O_DIRECT it is the
// plain file. With O_DIRECT (cache=none) every read and write goes through
// one aligned-I/O layer: requests whose offset, length and buffer are
// aligned go straight to the file; others are bounced through page-aligned
// buffers, writes with read-modify-write of the partial blocks at either
// end. The file size is kept exact: a write past the end lands in whole
// blocks and is then truncated back to where the caller's bytes end.
//
// Locking: rmw is held shared by direct aligned writes that lie inside the
// file and exclusively by bounced writes and by anything changing the file
// size, so a read-modify-write can never overwrite a concurrent write to
// the same block with stale bytes, while aligned writes stay parallel.
// Reads take no lock.
type HostFile struct {
	f      *os.File
	path   string
	direct bool
	align  int64 // offset and length alignment for O_DIRECT
	memAl  uintptr
	size   atomic.Int64 // the file size, exact (direct mode only)
	rmw    sync.RWMutex
}

// ErrNoDirectIO is the error of opening with DirectIO (cache=none) a file
// whose file system has no O_DIRECT (QEMU fails the same way rather than
// use the page cache).
var ErrNoDirectIO = errors.New("filesystem does not support O_DIRECT")

// hostBounceSize is the size of one O_DIRECT bounce buffer; larger requests
// are split.
const hostBounceSize = 1 << 20

// hostBouncePool hands out page-aligned buffers (anonymous mmap is always
// page-aligned, which satisfies every O_DIRECT memory alignment).
var hostBouncePool = sync.Pool{New: func() any {
	b, err := unix.Mmap(-1, 0, hostBounceSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	return &b
}}

// OpenHostFile opens path read-only or read-write, with O_DIRECT if direct.
// A file system refusing O_DIRECT is an error, as in QEMU (cache=none never
// silently falls back to the page cache).
func OpenHostFile(path string, readOnly, direct bool) (*HostFile, error) {
	flags := os.O_RDWR
	if readOnly {
		flags = os.O_RDONLY
	}
	if direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		if direct && errors.Is(err, unix.EINVAL) {
			return nil, &os.PathError{Op: "open", Path: path, Err: ErrNoDirectIO}
		}
		return nil, err
	}
	hf, err := NewHostFile(f, direct)
	if err != nil {
		f.Close()
		return nil, err
	}
	return hf, nil
}

// NewHostFile wraps f, which must have been opened with O_DIRECT if direct.
func NewHostFile(f *os.File, direct bool) (*HostFile, error) {
	hf := &HostFile{f: f, path: f.Name(), direct: direct, align: 1, memAl: 1}
	if !direct {
		return hf, nil
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if st.Mode()&os.ModeDevice != 0 {
		// A block device's size is fixed; nothing writes past it.
		n, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
		if err != nil {
			return nil, fmt.Errorf("reading size of block device %s: %w", hf.path, err)
		}
		size = int64(n)
	}
	hf.size.Store(size)
	if err := hf.probeAlignment(); err != nil {
		return nil, err
	}
	return hf, nil
}

// probeAlignment finds the O_DIRECT alignment: statx's STATX_DIOALIGN where
// the file system reports it, else an aligned 512-byte read that succeeds,
// else 4096 (which covers every logical block size Linux disks use).
func (hf *HostFile) probeAlignment() error {
	var sx unix.Statx_t
	fd := int(hf.f.Fd())
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx); err == nil &&
		sx.Mask&unix.STATX_DIOALIGN != 0 {
		if sx.Dio_offset_align == 0 {
			return &os.PathError{Op: "open", Path: hf.path, Err: ErrNoDirectIO}
		}
		hf.align = int64(sx.Dio_offset_align)
		hf.memAl = uintptr(max(sx.Dio_mem_align, 1))
		return nil
	}
	bp, err := getHostBounce()
	if err != nil {
		return err
	}
	defer hostBouncePool.Put(bp)
	hf.align, hf.memAl = 4096, 4096
	if _, err := unix.Pread(fd, (*bp)[:512], 0); err == nil {
		hf.align, hf.memAl = 512, 512
	}
	return nil
}

func getHostBounce() (*[]byte, error) {
	b, _ := hostBouncePool.Get().(*[]byte)
	if b == nil {
		return nil, errors.New("allocating O_DIRECT bounce buffer")
	}
	return b, nil
}

// Direct reports whether the file was opened with O_DIRECT.
func (hf *HostFile) Direct() bool { return hf.direct }

// Alignment is the O_DIRECT offset/length alignment (1 without O_DIRECT).
func (hf *HostFile) Alignment() int64 { return hf.align }

// RaiseAlignment makes every O_DIRECT request aligned to n bytes in offset,
// length and memory, which must be a power of two no smaller than the
// probed alignment (as a 4096-byte logical block device behind a file
// system reporting 512 would need; tests use it to exercise read-modify-
// write of blocks larger than a cluster). Call it before any I/O.
func (hf *HostFile) RaiseAlignment(n int64) error {
	if !hf.direct {
		return nil
	}
	if n <= 0 || n&(n-1) != 0 || n < hf.align || n > hostBounceSize {
		return fmt.Errorf("invalid O_DIRECT alignment %d (probed %d)", n, hf.align)
	}
	hf.align, hf.memAl = n, max(hf.memAl, uintptr(n))
	return nil
}

// File is the underlying file (for Fd, Stat and the like; its ReadAt and
// WriteAt bypass the alignment layer).
func (hf *HostFile) File() *os.File { return hf.f }

func (hf *HostFile) Name() string               { return hf.path }
func (hf *HostFile) Stat() (os.FileInfo, error) { return hf.f.Stat() }
func (hf *HostFile) Close() error               { return hf.f.Close() }

// Sync is fdatasync(2), as QEMU's file driver flushes (the data and what
// reading it needs, such as the size; not the timestamps).
func (hf *HostFile) Sync() error {
	if err := unix.Fdatasync(int(hf.f.Fd())); err != nil {
		return &os.PathError{Op: "sync", Path: hf.path, Err: err}
	}
	return nil
}

// aligned reports whether off, len(p) and p's address all suit O_DIRECT.
func (hf *HostFile) aligned(p []byte, off int64) bool {
	return off%hf.align == 0 && int64(len(p))%hf.align == 0 && sliceAddr(p)%hf.memAl == 0
}

// ReadAt reads as os.File.ReadAt (io.EOF on a short read).
func (hf *HostFile) ReadAt(p []byte, off int64) (int, error) {
	if !hf.direct || len(p) == 0 {
		return hf.f.ReadAt(p, off)
	}
	if off < 0 {
		return 0, fmt.Errorf("read %s at negative offset %d", hf.path, off)
	}
	if hf.aligned(p, off) {
		return hf.f.ReadAt(p, off)
	}
	bp, err := getHostBounce()
	if err != nil {
		return 0, err
	}
	defer hostBouncePool.Put(bp)
	buf := *bp
	done := 0
	for done < len(p) {
		o := off + int64(done)
		start := o &^ (hf.align - 1)
		end := min((o+int64(len(p)-done)+hf.align-1)&^(hf.align-1), start+hostBounceSize)
		m, err := hf.f.ReadAt(buf[:end-start], start)
		if err != nil && !errors.Is(err, io.EOF) {
			return done, err
		}
		avail := int64(m) - (o - start)
		if avail <= 0 {
			return done, io.EOF
		}
		c := copy(p[done:], buf[o-start:o-start+min(avail, end-o)])
		done += c
		if int64(c) < end-o && done < len(p) {
			return done, io.EOF
		}
	}
	return done, nil
}

// WriteAt writes as os.File.WriteAt, growing the file to exactly off+len(p)
// if that lies past its end.
func (hf *HostFile) WriteAt(p []byte, off int64) (int, error) {
	if !hf.direct || len(p) == 0 {
		return hf.f.WriteAt(p, off)
	}
	if off < 0 {
		return 0, fmt.Errorf("write %s at negative offset %d", hf.path, off)
	}
	end := off + int64(len(p))
	if hf.aligned(p, off) {
		hf.rmw.RLock()
		if end <= hf.size.Load() {
			defer hf.rmw.RUnlock()
			return hf.f.WriteAt(p, off)
		}
		hf.rmw.RUnlock()
	}
	hf.rmw.Lock()
	defer hf.rmw.Unlock()
	n, err := hf.bounceWrite(p, off)
	if size := hf.size.Load(); (end+hf.align-1)&^(hf.align-1) > size && n > 0 {
		// Whole blocks were written past the old end (which may lie
		// inside the last block even if this write ends before it): cut
		// the file back to the old end or the caller's last byte.
		newSize := max(size, off+int64(n))
		if terr := hf.f.Truncate(newSize); terr != nil && err == nil {
			err = terr
		}
		hf.size.Store(newSize)
	}
	return n, err
}

// bounceWrite writes p at off through aligned buffers; rmw is held.
func (hf *HostFile) bounceWrite(p []byte, off int64) (int, error) {
	if hf.aligned(p, off) {
		return hf.f.WriteAt(p, off)
	}
	bp, err := getHostBounce()
	if err != nil {
		return 0, err
	}
	defer hostBouncePool.Put(bp)
	buf := *bp
	a := hf.align
	done := 0
	for done < len(p) {
		o := off + int64(done)
		start := o &^ (a - 1)
		end := min((o+int64(len(p)-done)+a-1)&^(a-1), start+hostBounceSize)
		want := min(int64(len(p)-done), end-o)
		// Fill the partial first and last blocks from the file (zeroes
		// past its end).
		if o != start {
			if err := hf.readBlock(buf[:a], start); err != nil {
				return done, err
			}
		}
		if last := end - a; o+want != end && (last != start || o == start) {
			if err := hf.readBlock(buf[last-start:end-start], last); err != nil {
				return done, err
			}
		}
		copy(buf[o-start:], p[done:done+int(want)])
		if _, err := hf.f.WriteAt(buf[:end-start], start); err != nil {
			return done, err
		}
		done += int(want)
	}
	return done, nil
}

// readBlock reads one aligned block into b, zero-filling past the end.
func (hf *HostFile) readBlock(b []byte, off int64) error {
	m, err := hf.f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	clear(b[m:])
	return nil
}

// Truncate sets the file size. Growing an empty file then allocates its
// first block, as QEMU's file driver does to make later alignment probing
// cheap (file-posix.c allocate_first_block, after a PREALLOC_MODE_OFF
// truncate from length 0): zeroes are written over the first 4 KiB, or
// the first 512 bytes of a file smaller than that, so qemu-img map,
// measure and du see a block of data there in a new raw image or data
// file. A failure of that write is ignored, as in QEMU.
func (hf *HostFile) Truncate(size int64) error {
	hf.rmw.Lock()
	defer hf.rmw.Unlock()
	st, err := hf.f.Stat()
	if err != nil {
		return err
	}
	if err := hf.f.Truncate(size); err != nil {
		return err
	}
	hf.size.Store(size)
	if st.Size() == 0 && size > 0 && st.Mode().IsRegular() {
		hf.AllocateFirstBlock(size)
	}
	return nil
}

// AllocateFirstBlock writes zeroes over the start of a file just grown
// from empty to size bytes (Truncate does; a format preallocating with
// fallocate calls it, as QEMU's falloc path does): 4 KiB (QEMU's
// MAX_BLOCKSIZE), or 512 bytes (BDRV_SECTOR_SIZE) when the file is
// smaller, never past size. The buffer is page-aligned for O_DIRECT. A
// failure is ignored, as in QEMU.
func (hf *HostFile) AllocateFirstBlock(size int64) {
	n := int64(4096)
	if size < n {
		n = min(512, size)
	}
	bp, _ := hostBouncePool.Get().(*[]byte)
	if bp == nil {
		return
	}
	defer hostBouncePool.Put(bp)
	buf := (*bp)[:n]
	clear(buf)
	hf.f.WriteAt(buf, 0)
}

// Fallocate is fallocate(2) on the file, keeping the tracked size exact.
func (hf *HostFile) Fallocate(mode uint32, off, n int64) error {
	hf.rmw.Lock()
	defer hf.rmw.Unlock()
	if err := unix.Fallocate(int(hf.f.Fd()), mode, off, n); err != nil {
		return err
	}
	if mode&unix.FALLOC_FL_KEEP_SIZE == 0 && off+n > hf.size.Load() {
		hf.size.Store(off + n)
	}
	return nil
}
