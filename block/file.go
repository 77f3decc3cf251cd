package block

import (
	"io"
	"os"
	"strings"
	"sync"
)

// File is the byte store a format engine keeps its image in: a HostFile,
// or a filter node between the engine and the host file (blkdebug's error
// injection). The methods are HostFile's.
type File interface {
	io.ReaderAt
	io.WriterAt
	Name() string
	Stat() (os.FileInfo, error)
	Sync() error
	Truncate(size int64) error
	Fallocate(mode uint32, off, n int64) error
	Close() error
}

var _ File = (*HostFile)(nil)

// OpenFile opens the file an engine's image lives in: through
// opts.OpenFile when the caller stacked a filter under the format,
// otherwise the host file at path (O_DIRECT with opts.DirectIO).
func OpenFile(path string, opts Options) (File, error) {
	if opts.OpenFile != nil {
		return opts.OpenFile(path, opts.ReadOnly, opts.DirectIO)
	}
	return OpenHostFile(path, opts.ReadOnly, opts.DirectIO)
}

// DebugEvent is a point in an engine's work where QEMU raises a blkdebug
// event (BLKDBG_*): the engine tells its File, which may start failing
// requests from then on. The names are QEMU's (docs/devel/blkdebug.txt,
// qapi BlkdebugEvent).
type DebugEvent int

// The events Petrel's engines raise, and the others blkdebug accepts in a
// rule (a rule on an event nothing raises never fires, as in QEMU for an
// engine without that code path).
const (
	EventL1Update DebugEvent = iota
	EventL1GrowAllocTable
	EventL1GrowWriteTable
	EventL1GrowActivateTable
	EventL2Load
	EventL2Update
	EventL2UpdateCompressed
	EventL2AllocCOWRead
	EventL2AllocWrite
	EventReadAIO
	EventReadBackingAIO
	EventReadCompressed
	EventWriteAIO
	EventWriteCompressed
	EventVMStateLoad
	EventVMStateSave
	EventCOWRead
	EventCOWWrite
	EventReftableLoad
	EventReftableGrow
	EventReftableUpdate
	EventRefblockLoad
	EventRefblockUpdate
	EventRefblockUpdatePart
	EventRefblockAlloc
	EventRefblockAllocHookup
	EventRefblockAllocWrite
	EventRefblockAllocWriteBlocks
	EventRefblockAllocWriteTable
	EventRefblockAllocSwitchTable
	EventClusterAlloc
	EventClusterAllocBytes
	EventClusterFree
	EventFlushToOS
	EventFlushToDisk
	EventPwritevRMWHead
	EventPwritevRMWAfterHead
	EventPwritevRMWTail
	EventPwritevRMWAfterTail
	EventPwritev
	EventPwritevZero
	EventPwritevDone
	EventEmptyImagePrepare
	EventL1ShrinkWriteTable
	EventL1ShrinkFreeL2Clusters
	EventCORWrite
	EventClusterAllocSpace
	EventNone
	numDebugEvents
)

var debugEventNames = [numDebugEvents]string{
	"l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
	"l2_load", "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write",
	"read_aio", "read_backing_aio", "read_compressed", "write_aio", "write_compressed",
	"vmstate_load", "vmstate_save", "cow_read", "cow_write",
	"reftable_load", "reftable_grow", "reftable_update",
	"refblock_load", "refblock_update", "refblock_update_part", "refblock_alloc",
	"refblock_alloc_hookup", "refblock_alloc_write", "refblock_alloc_write_blocks",
	"refblock_alloc_write_table", "refblock_alloc_switch_table",
	"cluster_alloc", "cluster_alloc_bytes", "cluster_free",
	"flush_to_os", "flush_to_disk",
	"pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail", "pwritev_rmw_after_tail",
	"pwritev", "pwritev_zero", "pwritev_done", "empty_image_prepare",
	"l1_shrink_write_table", "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space",
	"none",
}

func (e DebugEvent) String() string {
	if e >= 0 && e < numDebugEvents {
		return debugEventNames[e]
	}
	return "unknown"
}

// ParseDebugEvent reads an event name as a blkdebug rule gives it.
func ParseDebugEvent(name string) (DebugEvent, bool) {
	for i, n := range debugEventNames {
		if n == name {
			return DebugEvent(i), true
		}
	}
	return 0, false
}

// EventSink is implemented by Files that want the engine's debug events.
// Engines look for it once when they open, so a plain HostFile costs a
// nil check per event.
type EventSink interface {
	DebugEvent(e DebugEvent)
}

// Events returns f's EventSink, or nil.
func Events(f File) EventSink {
	s, _ := f.(EventSink)
	return s
}

// nameOpeners open backing file names that are not file paths
// (json:{...}, blkdebug:...), by prefix; petrel img registers its parser
// of them (internal/imgtool/imagespec.go).
var (
	nameOpenersMu sync.RWMutex
	nameOpeners   = map[string]func(name string, opts Options) (Image, error){}
)

// RegisterNameOpener makes OpenBacking open names starting with prefix
// through open, which gets the backing file's options (read-only, format).
func RegisterNameOpener(prefix string, open func(name string, opts Options) (Image, error)) {
	nameOpenersMu.Lock()
	defer nameOpenersMu.Unlock()
	nameOpeners[prefix] = open
}

// nameOpener returns the opener registered for name's prefix, or nil.
func nameOpener(name string) func(string, Options) (Image, error) {
	nameOpenersMu.RLock()
	defer nameOpenersMu.RUnlock()
	for p, open := range nameOpeners {
		if strings.HasPrefix(name, p) {
			return open
		}
	}
	return nil
}

// HasNameOpener reports whether name is opened by a registered opener
// rather than as a file path.
func HasNameOpener(name string) bool { return nameOpener(name) != nil }
