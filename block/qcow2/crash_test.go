package qcow2

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/block"
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
	snapshots := os.Getenv("QCOW2_CRASH_SNAPSHOTS") != ""
	for i := 0; ; i++ {
		off := rng.Int63n(crashDiskSize)
		n := 1 + rng.Int63n(min(96<<10, crashDiskSize-off))
		op := rng.Intn(20)
		if rng.Intn(400) == 0 && snapshots {
			op = 100 // snapshot churn: create, and delete the oldest beyond two
		}
		switch {
		case op == 100:
			if err := img.CreateSnapshot(fmt.Sprintf("s%d", i)); err != nil {
				fmt.Printf("E %v\n", err)
				os.Exit(3)
			}
			if snaps, _ := img.Snapshots(); len(snaps) > 2 {
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

// TestCrashConsistency kills a writer child with SIGKILL at random points,
// with and without lazy refcounts: afterwards qemu-img check finds no
// corruption (leaks are allowed, as in QEMU) and everything acknowledged
// by a completed Flush reads back.
//
// QCOW2_CRASH_SNAPSHOTS=1 adds internal snapshot create/delete to the
// child's workload. That run is not in `make test`: a kill in the middle of
// a snapshot operation can leave L1 entries flagged COPIED over L2 tables
// with refcount 2 (qemu-img check counts them as corruptions, fixed by
// check -r all), seen about once in a thousand rounds; snapshot operations
// are not yet crash-atomic.
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
			rng := rand.New(rand.NewSource(time.Now().UnixNano()))
			ops, flushes := 0, 0
			for it := 0; it < iters; it++ {
				seed := rng.Int63n(1 << 40)
				var o, f int
				model, o, f = crashRound(t, path, seed, time.Duration(10+rng.Intn(150))*time.Millisecond, model, lazy, co.ClusterSize)
				ops, flushes = ops+o, flushes+f
			}
			t.Logf("%d rounds, %d operations logged, %d completed flushes", iters, ops, flushes)
			if flushes == 0 || ops < iters {
				t.Fatalf("the child did too little work to test anything (%d ops, %d flushes)", ops, flushes)
			}
		})
	}
}

// crashRound runs one child, kills it after d, verifies the image and
// returns the new verified content and how many operations and flushes
// the child logged.
func crashRound(t *testing.T, path string, seed int64, d time.Duration, model []byte, lazy bool, crashCluster int64) ([]byte, int, int) {
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
	// Collect the log; the kill timer starts when the child is ready, so
	// a slow start on a loaded machine does not make empty rounds.
	var log []string
	ready := make(chan struct{})
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			if sc.Text() == "R" && !signalled {
				close(ready)
				signalled = true
				continue
			}
			log = append(log, sc.Text())
		}
	}()
	select {
	case <-ready:
	case <-collected:
	case <-time.After(30 * time.Second):
	}
	time.Sleep(d)
	cmd.Process.Signal(syscall.SIGKILL)
	<-collected
	cmd.Wait()

	// Replay: flushed holds what a completed Flush made durable; dirty
	// marks bytes touched since the last completed Flush.
	flushed := append([]byte(nil), model...)
	cur := append([]byte(nil), model...)
	dirty := make([]bool, len(model))
	ops, flushes := 0, 0
	for _, l := range log {
		f := strings.Fields(l)
		switch f[0] {
		case "E":
			t.Fatalf("child failed: %s", l)
		case "F":
			flushes++
			copy(flushed, cur)
			clear(dirty)
			continue
		case "PASS", "ok", "---", "===":
			continue
		}
		if len(f) < 3 {
			continue
		}
		ops++
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
	qemuCheck(t, path, true)
	img, err := Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening after crash (seed %d): %v", seed, err)
	}
	defer img.Close()
	got := readAll(t, img)
	for j := range got {
		if !dirty[j] && got[j] != flushed[j] {
			t.Fatalf("seed %d (%d log lines): flushed byte at %#x is %#x, want %#x", seed, len(log), j, got[j], flushed[j])
		}
	}
	return got, ops, flushes
}
