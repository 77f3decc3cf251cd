package blkdebug_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/blkdebug"
	"github.com/petrel-vmm/petrel/block/qcow2"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// recorder is a File that notes which events the engine raises.
type recorder struct {
	block.File
	mu   sync.Mutex
	seen map[block.DebugEvent]int
}

func (r *recorder) DebugEvent(e block.DebugEvent) {
	r.mu.Lock()
	r.seen[e]++
	r.mu.Unlock()
}

// workload is what runs on an image opened through blkdebug; its first
// error is returned.
type workload func(img block.Image) error

// allocate writes clusters all over a 32 MiB disk with 512-byte clusters:
// new L2 tables, new refcount blocks and a refcount table that has to
// grow (one 512-byte table cluster covers 64 blocks of 256 clusters).
func allocate(img block.Image) error {
	buf := make([]byte, 1536)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	for off := int64(0); off+int64(len(buf)) <= 32<<20; off += 131072 + 512 {
		if _, err := img.WriteAt(buf, off); err != nil {
			return err
		}
	}
	return img.Flush()
}

// deleteSnapshot deletes the snapshot prepare made.
func deleteSnapshot(img block.Image) error {
	if err := img.(block.Snapshotter).DeleteSnapshot("snap"); err != nil {
		return err
	}
	return img.Flush()
}

// newImage makes a qcow2 image with 512-byte clusters; with snapshot, it
// holds data, an internal snapshot "snap" and data written after it (so
// the snapshot shares some clusters and owns others).
func newImage(t *testing.T, snapshot bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.qcow2")
	if err := qcow2.Create(path, block.CreateOptions{Size: 32 << 20, ClusterSize: 512}); err != nil {
		t.Fatal(err)
	}
	if snapshot {
		img, err := block.Open(path, block.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := allocate(img); err != nil {
			t.Fatal(err)
		}
		if err := img.(block.Snapshotter).CreateSnapshot("snap"); err != nil {
			t.Fatal(err)
		}
		if _, err := img.WriteAt(make([]byte, 4096), 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// eventsOf runs w on a fresh image and lists the events it raises.
func eventsOf(t *testing.T, snapshot bool, w workload) []block.DebugEvent {
	t.Helper()
	path := newImage(t, snapshot)
	rec := &recorder{seen: map[block.DebugEvent]int{}}
	img, err := block.Open(path, block.Options{OpenFile: func(p string, ro, direct bool) (block.File, error) {
		hf, err := block.OpenHostFile(p, ro, direct)
		rec.File = hf
		return rec, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w(img); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	var evs []block.DebugEvent
	for e := range rec.seen {
		evs = append(evs, e)
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i] < evs[j] })
	return evs
}

// benignCopied is the one inconsistency qemu-img check counts as a
// corruption that an interrupted snapshot deletion may leave: a cluster
// whose refcount dropped to 1 on disk while its OFLAG_COPIED flag was not
// yet set. Writes then copy the cluster instead of writing in place (space,
// not data, is lost) and check -r sets the flag. A flag set where the
// refcount is above 1 would let a write change another snapshot's data.
var benignCopied = regexp.MustCompile(`^ERROR OFLAG_COPIED (L2|data) cluster: .* refcount=1$`)

// qemuCheckNoCorruption runs Debian's qemu-img check: leaks (and
// benignCopied) are what an interrupted update may leave, corruption
// never. It returns whether anything was found.
func qemuCheckNoCorruption(t *testing.T, path string) bool {
	t.Helper()
	testutil.NeedTool(t, "qemu-img")
	out, _ := exec.Command("qemu-img", "check", path).CombinedOutput()
	found := false
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "Leaked cluster"), benignCopied.MatchString(line):
			found = true
		case strings.HasPrefix(line, "ERROR"), strings.HasPrefix(line, "Warning"), strings.Contains(line, "check failed"):
			t.Fatalf("qemu-img check after the injected error:\n%s", out)
		}
	}
	return found
}

// injectEach fails w at every event it raises, once (only the next
// request fails, the engine carries on) and for good (every request
// after the event fails), and checks that the error reaches the caller
// and that qemu-img finds no corruption afterwards.
func injectEach(t *testing.T, snapshot bool, w workload) {
	testutil.NeedTool(t, "qemu-img")
	evs := eventsOf(t, snapshot, w)
	if len(evs) == 0 {
		t.Fatal("the workload raised no event")
	}
	for _, ev := range evs {
		for _, once := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/once=%v", ev, once), func(t *testing.T) {
				path := newImage(t, snapshot)
				var before []byte
				if snapshot {
					before = qemuRaw(t, path)
				}
				conf := fmt.Sprintf("[inject-error]\nevent = \"%s\"\nerrno = \"28\"\nonce = \"%v\"\n", ev, map[bool]string{true: "on", false: "off"}[once])
				cfg, err := blkdebug.ParseConfig([]byte(conf))
				if err != nil {
					t.Fatal(err)
				}
				// A failed free is reported and leaks, as QEMU's
				// qcow2_free_clusters: the warning is the caller's news.
				var warned []string
				warn := func(msg string) { warned = append(warned, msg) }
				img, err := block.Open(path, block.Options{OpenFile: blkdebug.Opener(cfg), Warn: warn})
				if err != nil {
					t.Fatal(err)
				}
				werr := w(img)
				cerr := img.Close()
				var inj *blkdebug.Error
				if !errors.As(werr, &inj) && !errors.As(cerr, &inj) && !slices.Contains(warned, "qcow2_free_clusters failed: No space left on device") {
					t.Fatalf("the injected error did not reach the caller: workload %v, close %v, warnings %q", werr, cerr, warned)
				}
				if qemuCheckNoCorruption(t, path) {
					// What check -r all leaves must be clean, and a
					// snapshot deletion never changes the active disk.
					run(t, "qemu-img", "check", "-r", "all", path)
					if qemuCheckNoCorruption(t, path) {
						t.Fatal("qemu-img check -r all left inconsistencies")
					}
				}
				if snapshot && !bytes.Equal(qemuRaw(t, path), before) {
					t.Fatal("the active disk changed")
				}
			})
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// qemuRaw is the guest-visible disk as qemu-img reads it.
func qemuRaw(t *testing.T, path string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "raw")
	run(t, "qemu-img", "convert", "-O", "raw", path, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInjectDuringClusterAllocation(t *testing.T) { injectEach(t, false, allocate) }

func TestInjectDuringSnapshotDelete(t *testing.T) { injectEach(t, true, deleteSnapshot) }
