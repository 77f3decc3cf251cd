// Package block is Petrel's disk image layer: one Image interface served by
// native qcow2, QED and raw engines, with backing chains.
//
// Format engines live in sub-packages (block/qcow2, block/qed, block/raw)
// and register themselves with Register from init; block/all imports every
// engine so that a program gets them all with one import.
package block

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
)

// Image is an open disk image. All methods are safe for concurrent use by
// several goroutines (several virtio queues); writes to different clusters
// proceed in parallel.
type Image interface {
	io.ReaderAt
	io.WriterAt
	// Size is the virtual disk size in bytes.
	Size() int64
	// Flush makes every completed write durable (metadata included).
	Flush() error
	// Discard deallocates the range where the format can; later reads of it
	// return zeroes or backing data as the format defines.
	Discard(off, n int64) error
	// WriteZeroes makes the range read as zeroes, deallocating when unmap
	// is true and the format allows it.
	WriteZeroes(off, n int64, unmap bool) error
	// BlockStatus describes the allocation of the extent starting at off and
	// at most n bytes long; the returned extent is never empty for off < Size.
	BlockStatus(off, n int64) (Extent, error)
	// Format is the format name as qemu-img prints it ("qcow2", "qed", "raw").
	Format() string
	// Backing is the image this one reads unallocated data from, or nil.
	Backing() Image
	// ReadOnly reports whether writes are refused.
	ReadOnly() bool
	Close() error
}

// Extent flags, as `qemu-img map` reports them.
const (
	ExtentData = 1 << iota // some layer holds data here
	ExtentZero             // reads as zeroes
	// ExtentAllocated: allocated in the layer at Extent.Depth. Engines set
	// it for their own clusters (Depth 0); for extents of a backing layer
	// they may pass the layer's flag up or clear it (petrel img asks the
	// layer itself).
	ExtentAllocated
)

// Extent is one run of uniform allocation state.
type Extent struct {
	Offset, Length int64
	Flags          int
	// HostOffset is where the data lies in File, or -1.
	HostOffset int64
	// Depth is how far down the backing chain the data was found (0 = top).
	Depth int
	// File is the file name of the layer holding the data, if any.
	File string
}

// Options control how an image is opened.
type Options struct {
	ReadOnly bool
	// Format forces the format; empty means probe.
	Format string
	// NoBacking opens the image without its backing file (as qemu-img -u).
	NoBacking bool
	// DirectIO opens files with O_DIRECT (cache=none).
	DirectIO bool
	// NoSync is cache=unsafe: Flush and Close still write every cached
	// table but skip fdatasync (qemu-img convert's default target mode).
	// Engines that ignore it are merely slower.
	NoSync bool
	// CacheSize bounds the metadata cache in bytes (0: the engine default,
	// as QEMU's l2-cache-size).
	CacheSize int64
	// BackingOverride, when set, replaces the backing file named in the image.
	BackingOverride string
	// BackingFormat forces the backing file's format.
	BackingFormat string
	// NoIO: opened for its metadata only (qemu-img info, QEMU's
	// BDRV_O_NO_IO); guest data I/O may fail. Engines skip opening what
	// only data I/O needs (a qcow2 external data file).
	NoIO bool
	// Repair: opened for `check -r`. A qcow2 image marked corrupt may then
	// be opened writable; only Check may change it (as QEMU's BDRV_O_CHECK).
	Repair bool
	// Warn receives the problems an engine works around rather than
	// fails on (QEMU prints them to stderr: "qcow2_free_clusters failed:
	// ..." when freeing clusters fails and they leak); nil prints them
	// to os.Stderr.
	Warn func(msg string)
	// OpenFile, when set, opens the file under the format (a filter such
	// as blkdebug between the engine and the host file); see OpenFile.
	OpenFile func(path string, readOnly, direct bool) (File, error)
	// Secrets are the --object secret values by id. KeySecret names the
	// one that unlocks this image (encrypt.key-secret), BackingKeySecret
	// its backing file's (backing.encrypt.key-secret). With NoIO an
	// encrypted image opens without its key and refuses data I/O.
	Secrets                     map[string][]byte
	KeySecret, BackingKeySecret string

	// parents are the files above this one in the chain being opened
	// (OpenBacking's loop and depth checks).
	parents []string
}

// CreateOptions are the `qemu-img create -o` settings understood across
// formats; engines ignore what does not apply to them and reject values they
// cannot honour.
type CreateOptions struct {
	Size            int64
	BackingFile     string
	BackingFormat   string
	ClusterSize     int64  // 0: format default
	Compat          string // qcow2: "0.10" or "1.1"
	LazyRefcounts   bool
	Preallocation   string // "off", "metadata", "falloc", "full"
	RefcountBits    int    // qcow2: 1..64, power of two
	ExtendedL2      bool
	CompressionType string // qcow2: "zlib" or "zstd"
	// DataFile names a qcow2 external data file to create beside the
	// image (relative to the working directory); DataFileRaw keeps it a
	// standalone raw image.
	DataFile    string
	DataFileRaw bool
	// ExtentSizeHint is set on each created file where the file system
	// has extent size hints (XFS), in bytes; 0 sets none (SetExtentSizeHint).
	ExtentSizeHint int64
	// Secrets are the --object secret values by id, for encryption keys.
	Secrets map[string][]byte
	// Extra holds -o keys the generic layer does not know.
	Extra map[string]string
}

// Format is one image format engine.
type Format struct {
	Name string
	// Probe reports whether the first bytes of a file (at least 512 when the
	// file is that long) are this format.
	Probe func(head []byte) bool
	// Open opens the named file. The engine opens its backing file through
	// block.Open with opts' backing settings.
	Open func(path string, opts Options) (Image, error)
	// Create writes a new image.
	Create func(path string, opts CreateOptions) error
	// CreateOn writes a new image into f, a file that exists already (a
	// protocol's export; see block.CreateOn), and closes f. Nil when the
	// engine lays out host files only.
	CreateOn func(f File, path string, opts CreateOptions) error
	// Measure sizes an image of this format made with opts: of opts.Size
	// bytes, or holding in's contents when in is not nil (`qemu-img
	// measure`). Nil when the format cannot say.
	Measure func(opts CreateOptions, in Image) (MeasureInfo, error)
}

// MeasureInfo is `qemu-img measure`'s answer, in bytes: the file size an
// image needs for the data given, the size with every cluster allocated,
// and (when HasBitmaps) the room its persistent dirty bitmaps would take.
type MeasureInfo struct {
	Required, FullyAllocated int64
	HasBitmaps               bool
	Bitmaps                  int64
}

// The registry. probeOrder holds every name but "raw" sorted, the fixed
// order in which Probe asks the engines; it changes only in Register.
var (
	formatsMu  sync.RWMutex
	formats    = map[string]Format{}
	probeOrder []string
)

// Register adds a format engine. Registering a name twice panics.
func Register(f Format) {
	formatsMu.Lock()
	defer formatsMu.Unlock()
	if _, dup := formats[f.Name]; dup {
		panic("block: format registered twice: " + f.Name)
	}
	formats[f.Name] = f
	if f.Name != "raw" {
		i := sort.SearchStrings(probeOrder, f.Name)
		probeOrder = append(probeOrder[:i], append([]string{f.Name}, probeOrder[i:]...)...)
	}
}

// Lookup returns the engine for a format name.
func Lookup(name string) (Format, bool) {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	f, ok := formats[name]
	return f, ok
}

// Formats lists the registered format names.
func Formats() []string {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	var n []string
	for k := range formats {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// OpenError is an engine's refusal of an image it recognized. Error names
// the format and the file, for logs; Reason alone is what qemu-img prints
// after "Could not open 'FILE': ", which petrel img matches.
type OpenError struct {
	Format, Path string
	Reason       error
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("opening %s image %s: %v", e.Format, e.Path, e.Reason)
}

func (e *OpenError) Unwrap() error { return e.Reason }

// CreateError is an engine's refusal to create an image; as OpenError,
// Reason alone is what qemu-img prints after "FILE: ".
type CreateError struct {
	Format, Path string
	Reason       error
}

func (e *CreateError) Error() string {
	return fmt.Sprintf("creating %s image %s: %v", e.Format, e.Path, e.Reason)
}

func (e *CreateError) Unwrap() error { return e.Reason }

// ErrSizeTooLarge: the virtual size is beyond what the format can address
// with the chosen geometry (QEMU's EFBIG from a driver).
var ErrSizeTooLarge = errors.New("image size too large for the format")

// ErrUnknownFormat is returned when no engine claims a file or a name.
var ErrUnknownFormat = errors.New("unknown image format")

// Probe names the format of the file at path: the first engine, in the
// order of their names, whose Probe claims its first 4 KiB; "raw" when none
// does. The order is fixed so that a file two engines claim always opens
// the same way (the engines' magics do not overlap today).
func Probe(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", fmt.Errorf("probing %s: %w", path, err)
	}
	return ProbeHead(head[:n]), nil
}

// ProbeHead names the format of an image whose first bytes (up to 4 KiB)
// are head, as Probe does for a file.
func ProbeHead(head []byte) string {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	for _, name := range probeOrder {
		if fm := formats[name]; fm.Probe != nil && fm.Probe(head) {
			return name
		}
	}
	return "raw"
}

// Open opens an image of any registered format, probing unless opts.Format
// is set, with its backing chain.
func Open(path string, opts Options) (Image, error) {
	if p, ok := ProtocolOf(path); ok {
		return p.Open(path, opts)
	}
	name := opts.Format
	if name == "" {
		var err error
		if name, err = Probe(path); err != nil {
			return nil, err
		}
	}
	f, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("opening %s: %w %q", path, ErrUnknownFormat, name)
	}
	return f.Open(path, opts)
}

// Create writes a new image of the named format.
func Create(format, path string, opts CreateOptions) error {
	if p, ok := ProtocolOf(path); ok {
		return p.Create(path, format, opts)
	}
	f, ok := Lookup(format)
	if !ok || f.Create == nil {
		return fmt.Errorf("creating %s: %w %q", path, ErrUnknownFormat, format)
	}
	return f.Create(path, opts)
}

// Secret returns the data of secret id, in QEMU's words when it is absent.
func Secret(secrets map[string][]byte, id string) ([]byte, error) {
	data, ok := secrets[id]
	if !ok {
		return nil, fmt.Errorf("No secret with id '%s'", id)
	}
	return data, nil
}
