package qcow2

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

var crashIterations = flag.Int("crash-iterations", 0, "kill/verify rounds per mode in TestCrashConsistency (0: default, or QCOW2_CRASH_ITERATIONS)")

const crashDiskSize = 8 << 20

// crashData is the deterministic content of write number i.
func crashData(seed int64, i, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed*1000003 + int64(i))).Read(b)
	return b
}

// crashCompressible is the deterministic content of compressed write i.
func crashCompressible(seed int64, i int, n int64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewSource(seed*7 + int64(i)))
	for j := range b {
		b[j] = "qcow2"[r.Intn(5)]
	}
	return b
}

// crashState is the deterministic VM state saved by operation i: random
// data with whole clusters and shorter runs of zeroes, 64 KiB to 2 MiB.
func crashState(seed int64, i int) []byte {
	r := rand.New(rand.NewSource(seed*31 + int64(i)))
	return vmStateData(r.Int63(), 64<<10+r.Intn(2<<20))
}

// TestCrashChild is the writer the crash test runs in a child process and
// kills: it logs every operation on stdout before doing it and "F" after
// each Flush returns.
func TestCrashChild(t *testing.T) {
	spec := os.Getenv("QCOW2_CRASH_CHILD")
	if spec == "" {
		t.Skip("only run as the crash test's child")
	}
	parts := strings.Split(spec, ",")
	path := parts[0]
	seed, _ := strconv.ParseInt(parts[1], 10, 64)
	img, err := Open(path, block.Options{})
	if err != nil {
		fmt.Printf("E %v\n", err)
		os.Exit(3)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "R\n") // ready: the parent starts its kill timer now
	out.Flush()
	rng := rand.New(rand.NewSource(seed))
	for i := 0; ; i++ {
		off := rng.Int63n(crashDiskSize)
		n := 1 + rng.Int63n(min(96<<10, crashDiskSize-off))
		op := rng.Intn(20)
		switch rng.Intn(2 * crashSnapshotEvery) {
		case 0, 1:
			op = 100 // snapshot churn: create, and delete the oldest beyond two
		case 2:
			op = 101 // apply a snapshot
		case 3, 4:
			op = 102 // snapshot churn with a VM state saved
		}
		switch {
		case op == 101:
			list, _ := img.Snapshots()
			if len(list) == 0 {
				continue
			}
			name := list[rng.Intn(len(list))].Name
			fmt.Fprintf(out, "A %s\n", name)
			out.Flush()
			if err := img.ApplySnapshot(name); err != nil {
				fmt.Printf("E %v\n", err)
				os.Exit(3)
			}
		case op == 100 || op == 102:
			name := fmt.Sprintf("s%d-%d", seed, i)
			var err error
			if op == 102 {
				fmt.Fprintf(out, "S v %s %d\n", name, i)
				out.Flush()
				err = img.CreateSnapshotWithState(name, uint64(i), streamIn(crashState(seed, i), seed+int64(i)))
			} else {
				fmt.Fprintf(out, "S c %s\n", name)
				out.Flush()
				err = img.CreateSnapshot(name)
			}
			if err != nil {
				fmt.Printf("E %v\n", err)
				os.Exit(3)
			}
			if snaps, _ := img.Snapshots(); len(snaps) > 2 {
				fmt.Fprintf(out, "S d %s\n", snaps[0].Name)
				out.Flush()
				if err := img.DeleteSnapshot(snaps[0].ID); err != nil {
					fmt.Printf("E %v\n", err)
					os.Exit(3)
				}
			}
		case op == 14:
			cs := img.ClusterSize()
			c := off &^ (cs - 1)
			fmt.Fprintf(out, "C %d %d %d\n", c, cs, i)
			out.Flush()
			if err := img.WriteCompressed(crashCompressible(seed, i, cs), c); err != nil {
				fmt.Printf("E %v\n", err)
				os.Exit(3)
			}
		case op < 15:
			fmt.Fprintf(out, "W %d %d %d\n", off, n, i)
			out.Flush()
			if _, err := img.WriteAt(crashData(seed, i, int(n)), off); err != nil {
				fmt.Printf("E %v\n", err)
				os.Exit(3)
			}
		case op < 17:
			fmt.Fprintf(out, "Z %d %d\n", off, n)
			out.Flush()
			if err := img.WriteZeroes(off, n, op == 16); err != nil {
				fmt.Printf("E %v\n", err)
				os.Exit(3)
			}
		case op < 18:
			fmt.Fprintf(out, "D %d %d\n", off, n)
			out.Flush()
			if err := img.Discard(off, n); err != nil {
				fmt.Printf("E %v\n", err)
				os.Exit(3)
			}
		default:
			if err := img.Flush(); err != nil {
				fmt.Printf("E %v\n", err)
				os.Exit(3)
			}
			fmt.Fprintf(out, "F\n")
			out.Flush()
		}
	}
}

// crashSnapshotEvery: one operation in this many is a snapshot create
// (and a delete of the oldest beyond two), as many again a create with a
// VM state saved, and one in twice as many an apply of a snapshot.
const crashSnapshotEvery = 40

// crashStats counts what the children logged.
type crashStats struct {
	ops, flushes, snapshotOps, stateSaves int
	killedInStateSave                     int // kills that came while a save with VM state ran
	stateSavesDone                        int // of those, saves whose snapshot was complete
}

// crashSnap is what a snapshot must hold: the disk content when it was
// taken and, for a save with state, the VM state.
type crashSnap struct{ disk, state []byte }

// TestCrashConsistency kills a writer child with SIGKILL at random points,
// with and without lazy refcounts and with extended L2 entries, while it
// writes, zeroes, discards, compresses, flushes and creates, deletes and
// applies internal snapshots. Afterwards qemu-img check finds nothing but leaks and
// missing copied flags (a crash may leave those, as in QEMU: an extra
// copy-on-write, never shared data written in place), everything a
// completed Flush acknowledged reads back, and every snapshot in the image
// holds exactly the disk content at the moment it was taken.
func TestCrashConsistency(t *testing.T) {
	iters := 15
	if *crashIterations > 0 {
		iters = *crashIterations
	} else if v, err := strconv.Atoi(os.Getenv("QCOW2_CRASH_ITERATIONS")); err == nil && v > 0 {
		iters = v
	}
	for _, mode := range []string{"plain", "lazy", "extended_l2"} {
		lazy := mode == "lazy"
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "crash.qcow2")
			co := block.CreateOptions{Size: crashDiskSize, ClusterSize: 4096, LazyRefcounts: lazy}
			if mode == "extended_l2" {
				co.ClusterSize, co.ExtendedL2 = 32768, true // 1 KiB subclusters
			}
			if err := Create(path, co); err != nil {
				t.Fatal(err)
			}
			model := make([]byte, crashDiskSize)
			snaps := map[string]crashSnap{}
			rng := rand.New(rand.NewSource(time.Now().UnixNano()))
			var total crashStats
			for it := 0; it < iters; it++ {
				seed := rng.Int63n(1 << 40)
				var st crashStats
				// Every other round aims its kill at a save with VM state.
				kill := crashKill{after: rng.Intn(80), d: time.Duration(rng.Intn(20000)) * time.Microsecond, inStateSave: it%2 == 1}
				model, st = crashRound(t, path, seed, kill, model, snaps, lazy, co.ClusterSize)
				total.ops, total.flushes, total.snapshotOps = total.ops+st.ops, total.flushes+st.flushes, total.snapshotOps+st.snapshotOps
				total.stateSaves += st.stateSaves
				total.killedInStateSave += st.killedInStateSave
				total.stateSavesDone += st.stateSavesDone
			}
			t.Logf("%d rounds (kills), %d operations logged, %d completed flushes, %d snapshot creates/deletes/applies, %d of them saves with VM state; %d kills during such a save (%d after its snapshot was listed)", iters, total.ops, total.flushes, total.snapshotOps, total.stateSaves, total.killedInStateSave, total.stateSavesDone)
			if total.flushes == 0 || total.ops < iters || total.snapshotOps == 0 || total.stateSaves == 0 {
				t.Fatalf("the child did too little work to test anything (%+v)", total)
			}
		})
	}
}

// qemuCheckAfterCrash runs qemu-img check on an image a kill left behind.
// Leaks are allowed, and so are copied flags missing on clusters with
// refcount 1; every other complaint fails the test.
func qemuCheckAfterCrash(t *testing.T, path string, seed int64) {
	t.Helper()
	testutil.NeedTool(t, "qemu-img")
	out, _ := exec.Command("qemu-img", "check", path).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "ERROR") && !strings.Contains(l, "internal errors") {
			continue
		}
		if missingCopiedFlag(l) {
			continue
		}
		t.Fatalf("seed %d: qemu-img check %s:\n%s", seed, path, out)
	}
}

// missingCopiedFlag reports whether a qemu-img check line is "ERROR
// OFLAG_COPIED ... refcount=1" about an entry without the flag.
func missingCopiedFlag(l string) bool {
	if !strings.HasPrefix(l, "ERROR OFLAG_COPIED ") || !strings.HasSuffix(l, " refcount=1") {
		return false
	}
	for _, f := range strings.Fields(l) {
		if k, v, ok := strings.Cut(f, "="); ok && (k == "l1_entry" || k == "l2_entry") {
			e, err := strconv.ParseUint(v, 16, 64)
			return err == nil && e&oflagCopied == 0
		}
	}
	return false
}

// crashKill says when a round kills its child: d after the child logged
// its after-th line or, with inStateSave, d after the first save with VM
// state it starts from then on.
type crashKill struct {
	after       int
	d           time.Duration
	inStateSave bool
}

// crashRound runs one child, kills it as kill says, verifies the image and
// returns the new verified content and what the child logged. snaps holds
// the expected content of every snapshot by name, across rounds.
func crashRound(t *testing.T, path string, seed int64, kill crashKill, model []byte, snaps map[string]crashSnap, lazy bool, crashCluster int64) ([]byte, crashStats) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("QCOW2_CRASH_CHILD=%s,%d", path, seed))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Collect the log. The kill comes d after the child has logged
	// kill.after lines (operations, flushes, snapshot steps), so that every
	// round does work however loaded the machine is, and lands at a random
	// point inside the operation under way.
	var log []string
	reached := make(chan struct{})
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		sc := bufio.NewScanner(stdout)
		started, fired, lines := false, false, 0
		for sc.Scan() {
			if sc.Text() == "R" && !started {
				started = true
			} else {
				log = append(log, sc.Text())
				lines++
			}
			if started && !fired && lines >= kill.after && (!kill.inStateSave || strings.HasPrefix(sc.Text(), "S v ")) {
				fired = true
				close(reached)
			}
		}
	}()
	select {
	case <-reached:
	case <-collected:
	case <-time.After(60 * time.Second):
	}
	time.Sleep(kill.d)
	cmd.Process.Signal(syscall.SIGKILL)
	<-collected
	cmd.Wait()

	// Replay: flushed holds what a completed Flush made durable; dirty
	// marks bytes touched since the last completed Flush.
	flushed := append([]byte(nil), model...)
	cur := append([]byte(nil), model...)
	dirty := make([]bool, len(model))
	var st crashStats
	applying := "" // a snapshot apply not yet known to have completed
	for _, l := range log {
		f := strings.Fields(l)
		if applying != "" {
			// The child logged a next line: the apply completed, and it
			// flushes; the disk is the snapshot's content.
			copy(cur, snaps[applying].disk)
			copy(flushed, cur)
			clear(dirty)
			applying = ""
		}
		switch f[0] {
		case "A":
			st.snapshotOps++
			applying = f[1]
			continue
		case "E":
			t.Fatalf("child failed: %s", l)
		case "F":
			st.flushes++
			copy(flushed, cur)
			clear(dirty)
			continue
		case "S":
			// A snapshot holds everything written before it was taken.
			st.snapshotOps++
			switch f[1] {
			case "c":
				snaps[f[2]] = crashSnap{disk: bytes.Clone(cur)}
			case "v":
				st.stateSaves++
				i, _ := strconv.Atoi(f[3])
				snaps[f[2]] = crashSnap{disk: bytes.Clone(cur), state: crashState(seed, i)}
			}
			continue
		case "PASS", "ok", "---", "===":
			continue
		}
		if len(f) < 3 {
			continue
		}
		st.ops++
		off, _ := strconv.ParseInt(f[1], 10, 64)
		n, _ := strconv.ParseInt(f[2], 10, 64)
		switch f[0] {
		case "W":
			i, _ := strconv.Atoi(f[3])
			copy(cur[off:], crashData(seed, i, int(n)))
		case "C":
			i, _ := strconv.Atoi(f[3])
			copy(cur[off:], crashCompressible(seed, i, n))
		case "Z":
			clear(cur[off : off+n])
		case "D":
			s, e := (off+crashCluster-1)&^(crashCluster-1), (off+n)&^(crashCluster-1)
			if e > s {
				clear(cur[s:e])
			}
		}
		for j := off; j < off+n; j++ {
			dirty[j] = true
		}
	}
	inSave := ""
	if n := len(log); n > 0 && strings.HasPrefix(log[n-1], "S v ") {
		st.killedInStateSave++
		inSave = strings.Fields(log[n-1])[2]
	}
	if lazy {
		// The image is dirty: a read-write open repairs the refcounts.
		img, err := Open(path, block.Options{})
		if err != nil {
			t.Fatalf("reopening after crash (seed %d): %v", seed, err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
	}
	qemuCheckAfterCrash(t, path, seed)
	img, err := Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening after crash (seed %d): %v", seed, err)
	}
	defer img.Close()
	got := readAll(t, img)
	if inSave != "" {
		if list, _ := img.Snapshots(); slices.ContainsFunc(list, func(sn block.SnapshotInfo) bool { return sn.Name == inSave }) {
			st.stateSavesDone++ // killed after the snapshot table named it
		}
	}
	if applying != "" && bytes.Equal(got, snaps[applying].disk) {
		// Killed inside an apply that got as far as switching the L1 table.
		verifyCrashSnapshots(t, path, img, snaps, seed)
		return got, st
	}
	for j := range got {
		if !dirty[j] && got[j] != flushed[j] {
			t.Fatalf("seed %d (%d log lines): flushed byte at %#x is %#x, want %#x", seed, len(log), j, got[j], flushed[j])
		}
	}
	verifyCrashSnapshots(t, path, img, snaps, seed)
	return got, st
}

// verifyCrashSnapshots reads every snapshot left in the image and compares
// it with the disk content when it was taken, and its VM state with the
// one saved; snapshots no longer listed are forgotten.
func verifyCrashSnapshots(t *testing.T, path string, img *Image, snaps map[string]crashSnap, seed int64) {
	t.Helper()
	list, err := img.Snapshots()
	if err != nil {
		t.Fatalf("seed %d: listing snapshots: %v", seed, err)
	}
	present := map[string]bool{}
	for _, sn := range list {
		present[sn.Name] = true
		want, ok := snaps[sn.Name]
		if !ok {
			t.Fatalf("seed %d: snapshot %q was never created", seed, sn.Name)
		}
		view, err := Open(path, block.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := view.LoadSnapshot("", sn.Name); err != nil {
			t.Fatalf("seed %d: loading snapshot %s: %v", seed, sn.Name, err)
		}
		got := readAll(t, view)
		view.Close()
		if !bytes.Equal(got, want.disk) {
			t.Fatalf("seed %d: snapshot %s changed: %s", seed, sn.Name, firstDiff(got, want.disk))
		}
		if sn.VMStateSize != int64(len(want.state)) {
			t.Fatalf("seed %d: snapshot %s has a VM state of %d bytes, want %d", seed, sn.Name, sn.VMStateSize, len(want.state))
		}
		if want.state != nil {
			assertEqual(t, fmt.Sprintf("seed %d: VM state of snapshot %s", seed, sn.Name), readVMState(t, img, sn.Name), want.state)
		}
	}
	for name := range snaps {
		if !present[name] {
			delete(snaps, name)
		}
	}
}
