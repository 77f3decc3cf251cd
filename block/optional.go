package block

import (
	"io"
	"time"
)

// The interfaces below are optional capabilities an Image may have; `petrel
// img` type-asserts for them and says clearly when a format lacks one.

// RepairMode selects what Check fixes, as `qemu-img check -r`.
type RepairMode int

const (
	RepairNone  RepairMode = iota
	RepairLeaks            // -r leaks
	RepairAll              // -r all
)

// CheckResult mirrors `qemu-img check --output=json`.
type CheckResult struct {
	Corruptions        int   `json:"corruptions"`
	Leaks              int   `json:"leaks"`
	CheckErrors        int   `json:"check-errors"`
	CorruptionsFixed   int   `json:"corruptions-fixed,omitempty"`
	LeaksFixed         int   `json:"leaks-fixed,omitempty"`
	ImageEndOffset     int64 `json:"image-end-offset,omitempty"`
	TotalClusters      int64 `json:"total-clusters,omitempty"`
	AllocatedClusters  int64 `json:"allocated-clusters,omitempty"`
	FragmentedClusters int64 `json:"fragmented-clusters,omitempty"`
	CompressedClusters int64 `json:"compressed-clusters,omitempty"`
	// Messages are human-readable lines ("ERROR cluster 5 refcount=1 reference=2").
	Messages []string `json:"-"`
}

// Checker is implemented by formats with metadata to check.
type Checker interface {
	Check(mode RepairMode) (CheckResult, error)
}

// SnapshotInfo is one internal snapshot, as `qemu-img snapshot -l`.
type SnapshotInfo struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	VMStateSize int64         `json:"vm-state-size"`
	Date        time.Time     `json:"-"`
	VMClock     time.Duration `json:"-"`
	DiskSize    int64         `json:"-"`
	// ICount is the instruction count recorded with the snapshot, -1 when
	// none was (QEMU's savevm without record/replay; qemu-img records 0).
	ICount int64 `json:"icount"`
}

// Snapshotter is implemented by formats with internal snapshots.
type Snapshotter interface {
	Snapshots() ([]SnapshotInfo, error)
	CreateSnapshot(name string) error
	// ApplySnapshot and DeleteSnapshot take a name or an ID.
	ApplySnapshot(nameOrID string) error
	DeleteSnapshot(nameOrID string) error
}

// Resizer changes the virtual size (shrinking may be refused).
type Resizer interface {
	Resize(newSize int64) error
}

// BackingSetter rewrites the backing file name and format in the header
// only (`qemu-img rebase -u`); an empty name removes the backing file.
type BackingSetter interface {
	SetBackingFile(name, format string) error
}

// CompressedWriter writes whole clusters compressed (`convert -c`).
type CompressedWriter interface {
	ClusterSize() int64
	// WriteCompressed writes one cluster-aligned cluster (the last may be
	// short at the end of the disk).
	WriteCompressed(p []byte, off int64) error
}

// Describer gives what `qemu-img info` prints about the format.
type Describer interface {
	// Describe returns info fields such as "cluster-size", "dirty-flag",
	// "backing-filename", "backing-filename-format", and "format-specific"
	// ({"type": "qcow2", "data": {"compat": "1.1", ...}}), using
	// qemu-img's JSON key names.
	Describe() map[string]any
}

// Emptier is implemented by formats that can drop every allocation of the
// image at once, so that it reads through to its backing file again
// (`qemu-img commit` without -d).
type Emptier interface {
	MakeEmpty() error
}

// PreallocResizer grows an image with the new area preallocated
// (`qemu-img resize --preallocation=falloc|full`).
type PreallocResizer interface {
	ResizePrealloc(newSize int64, mode string) error
}

// SnapshotLoader is implemented by formats whose read-only images can show
// an internal snapshot's contents instead of the active state (`qemu-img
// convert -l`, QEMU's bdrv_snapshot_load_tmp). The virtual size stays the
// image's current size, as in QEMU.
type SnapshotLoader interface {
	// LoadSnapshot selects the snapshot whose ID and name match; an empty
	// id or name matches any (not both empty).
	LoadSnapshot(id, name string) error
}

// BitmapHolder is implemented by formats that can store persistent dirty
// bitmaps (qcow2). PersistentBitmaps counts the valid ones the image holds.
type BitmapHolder interface {
	PersistentBitmaps() int
}

// VMStateHolder is implemented by formats that keep a saved machine's
// state with an internal snapshot (qcow2, as QEMU's savevm/loadvm).
type VMStateHolder interface {
	// CreateSnapshotWithState creates internal snapshot name recording
	// vmClockNs as its VM clock. When state is non-nil it is called once to
	// stream the VM state, and the snapshot's VM state size is the number
	// of bytes it wrote; whole clusters of zeroes cost nothing. state==nil
	// makes a disk-only snapshot with the clock. state runs with the image
	// quiesced and must not do I/O on it. A failure or a crash leaves the
	// older snapshots and the disk as they were (a crash may leak space).
	CreateSnapshotWithState(name string, vmClockNs uint64, state func(w io.Writer) error) error
	// VMState returns a reader over the VM state of snapshot nameOrID and
	// the state's size (0 if the snapshot has none). It reads the
	// snapshot's own clusters: nothing in the image changes, and the
	// reader stays valid until that snapshot is deleted or the image is
	// closed. Read it through io.NewSectionReader(r, 0, size) and a
	// buffer: each ReadAt looks up the metadata.
	VMState(nameOrID string) (r io.ReaderAt, size int64, err error)
}
