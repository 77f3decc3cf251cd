// Package hostmem opens and maps the host shared memory behind ivshmem:
// POSIX shared memory objects (/dev/shm/NAME, what shm_open(3) opens),
// plain files, and unlinked (anonymous) shm objects, always MAP_SHARED so
// that every process mapping the object sees the same bytes.
package hostmem

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ShmDir is where Linux keeps POSIX shared memory objects.
const ShmDir = "/dev/shm"

// MaxSize bounds a region: half of the 1 TiB 64-bit PCI window.
const MaxSize = 1 << 39

// ErrSize marks a size that is zero, not a power of two, too large, or
// different from an existing object's.
var ErrSize = errors.New("bad shared memory size")

// CheckSize accepts a BAR2 size: a power of two of at least one page.
func CheckSize(size uint64) error {
	if size < uint64(os.Getpagesize()) || size&(size-1) != 0 || size > MaxSize {
		return fmt.Errorf("%w: %d is not a power of two between %d and %d", ErrSize, size, os.Getpagesize(), uint64(MaxSize))
	}
	return nil
}

// ShmPath turns a shm_open name ("ivshmem" or "/ivshmem") into its path.
func ShmPath(name string) (string, error) {
	n := strings.TrimPrefix(name, "/")
	if n == "" || strings.Contains(n, "/") || n == "." || n == ".." || len(n) > 255 {
		return "", fmt.Errorf("bad shared memory object name %q", name)
	}
	return filepath.Join(ShmDir, n), nil
}

// Open opens the regular file at path read-write, creating it with size
// bytes if it does not exist or is empty. An existing object of another size
// is refused rather than truncated (that would destroy or expose data).
func Open(path string, size uint64) (*os.File, error) {
	if err := CheckSize(size); err != nil {
		return nil, fmt.Errorf("shared memory %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening shared memory: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shared memory %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("shared memory %s: not a regular file (%v)", path, st.Mode().Type())
	}
	switch cur := uint64(st.Size()); {
	case cur == 0:
		if err := f.Truncate(int64(size)); err != nil {
			f.Close()
			return nil, fmt.Errorf("sizing shared memory %s to %d: %w", path, size, err)
		}
	case cur != size:
		f.Close()
		return nil, fmt.Errorf("shared memory %s: %w: it exists with %d bytes, %d requested", path, ErrSize, cur, size)
	}
	return f, nil
}

// Anonymous creates an unnamed POSIX shared memory object, as QEMU's
// memory-backend-shm does (shm_open of a fresh name, unlinked at once):
// shared with whoever is handed its fd, gone when the last one closes it.
func Anonymous(name string, size uint64) (*os.File, error) {
	return AnonymousIn(ShmDir, name, size)
}

// AnonymousIn is Anonymous in another directory, such as a hugetlbfs mount
// (QEMU's ivshmem-server -m with a directory).
func AnonymousIn(dir, name string, size uint64) (*os.File, error) {
	if err := CheckSize(size); err != nil {
		return nil, fmt.Errorf("anonymous shared memory %s: %w", name, err)
	}
	f, err := os.CreateTemp(dir, "petrel-shm-*")
	if err != nil {
		return nil, fmt.Errorf("creating anonymous shared memory %s: %w", name, err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("unlinking anonymous shared memory %s: %w", name, err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing anonymous shared memory %s: %w", name, err)
	}
	return f, nil
}

// SizeOf returns the size of the object behind fd, checked as a BAR2 size.
func SizeOf(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("stat of shared memory fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, fmt.Errorf("shared memory fd %d is not a regular file or shm object", fd)
	}
	size := uint64(st.Size)
	if err := CheckSize(size); err != nil {
		return 0, fmt.Errorf("shared memory fd %d: %w", fd, err)
	}
	return size, nil
}

// Map maps size bytes of fd read-write and MAP_SHARED. The mapping stays
// valid after fd is closed; release it with Unmap.
func Map(fd int, size uint64) ([]byte, error) {
	if err := CheckSize(size); err != nil {
		return nil, err
	}
	m, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping %d bytes of shared memory: %w", size, err)
	}
	return m, nil
}

// Unmap releases a mapping made by Map.
func Unmap(m []byte) error {
	if m == nil {
		return nil
	}
	if err := unix.Munmap(m); err != nil {
		return fmt.Errorf("unmapping shared memory: %w", err)
	}
	return nil
}

// Region is a mapped shared memory object: a QEMU memory backend
// (memory-backend-file with share=on, memory-backend-shm).
type Region struct {
	// ID is the backend's id (-object ...,id=ID).
	ID   string
	Path string // "" for an anonymous object
	Mem  []byte // MAP_SHARED mapping of the whole object
	file *os.File
}

// OpenRegion opens or creates the object at path (see Open) and maps it.
func OpenRegion(id, path string, size uint64) (*Region, error) {
	f, err := Open(path, size)
	if err != nil {
		return nil, err
	}
	return mapRegion(id, path, f, size)
}

// NewAnonymousRegion creates and maps an unnamed object (see Anonymous).
func NewAnonymousRegion(id string, size uint64) (*Region, error) {
	f, err := Anonymous(id, size)
	if err != nil {
		return nil, err
	}
	return mapRegion(id, "", f, size)
}

func mapRegion(id, path string, f *os.File, size uint64) (*Region, error) {
	m, err := Map(int(f.Fd()), size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("memory backend %s: %w", id, err)
	}
	return &Region{ID: id, Path: path, Mem: m, file: f}, nil
}

// Size is the object's size in bytes.
func (r *Region) Size() uint64 { return uint64(len(r.Mem)) }

// FD is the object's file descriptor (owned by the region).
func (r *Region) FD() int { return int(r.file.Fd()) }

// Close unmaps and closes the object; the named object itself stays.
func (r *Region) Close() error {
	err := Unmap(r.Mem)
	r.Mem = nil
	if cerr := r.file.Close(); err == nil {
		err = cerr
	}
	return err
}
