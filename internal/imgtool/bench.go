package imgtool

import (
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("bench", "I/O benchmark: bench [-c count] [-d depth] [-f fmt] [-n] [-o off] [-s size] [-S step] [-t cache] [-w] [--pattern=N] file", runBench)
}

// runBench is qemu-img bench: count requests of bufSize bytes, depth of
// them in flight at once, starting at offset and moving by step (0: all
// at the same offset), reads or with -w writes of pattern bytes; -n skips
// the host page cache (cache=none); --flush-interval N flushes after every
// N writes, the requests in flight drained first. It prints qemu-img's
// header line and "Run completed in N seconds.".
func runBench(t *tool, args []string) int {
	p, err := optSpec{short: "hc:d:f:ni:o:qs:S:t:wU", long: []string{"pattern=", "flush-interval=", "no-drain", "object=", "image-opts", "force-share"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	if len(p.args) != 1 {
		return t.fail("Expecting one image file name")
	}
	// intOpt reads a numeric option as qemu-img's cvtnum with its limits:
	// an int (31 bits) except the offset, and nonzero except the offset
	// and the flush interval; the message names the option as qemu-img.
	intOpt := func(k string, def int64, what string) (int64, error) {
		s := p.get(k)
		if s == "" {
			return def, nil
		}
		v, err := parseSize(s)
		if err != nil || v < 0 || (k != "o" && k != "flush-interval" && v == 0) || v > 1<<31-1 && k != "o" {
			return 0, fmt.Errorf("Invalid %s specified", what)
		}
		return v, nil
	}
	count, err1 := intOpt("c", 75000, "request count")
	depth, err2 := intOpt("d", 64, "queue depth")
	bufSize, err3 := intOpt("s", 4096, "buffer size")
	offset, err4 := intOpt("o", 0, "offset")
	flushIvl, err5 := intOpt("flush-interval", 0, "flush interval")
	for _, e := range []error{err1, err2, err3, err4, err5} {
		if e != nil {
			return t.fail("%v", e)
		}
	}
	// Without -S each request moves by its own size (sequential I/O).
	step := bufSize
	if p.has("S") {
		if step, err = intOpt("S", bufSize, "step size"); err != nil {
			return t.fail("%v", err)
		}
	}
	pattern := 0
	if s := p.get("pattern"); s != "" {
		v, err := strconv.ParseInt(s, 0, 64)
		if pattern = int(v); err != nil || v < 0 || v > 0xff {
			return t.fail("Invalid pattern byte specified")
		}
	}
	// qemu-img's checks of the flush interval, in its order and words.
	write := p.has("w")
	if flushIvl > 0 && !write {
		return t.fail("--flush-interval is only available in write tests")
	}
	if flushIvl > 0 && flushIvl < depth {
		return t.fail("Flush interval can't be smaller than depth")
	}
	direct := p.has("n")
	if c := p.get("t"); c != "" {
		if direct, err = cacheDirect(c); err != nil {
			return t.fail("%v", err)
		}
	}
	img, err := t.openImage(p.args[0], p.get("f"), block.Options{ReadOnly: !write, DirectIO: direct})
	if err != nil {
		return t.fail("%v", err)
	}
	defer img.Close()
	// Every request must fit in the image at least once.
	size := img.Size()
	if size == 0 || offset+bufSize > size {
		return t.fail("Image too small for the requested offset and buffer size")
	}
	kind := "read"
	if write {
		kind = "write"
	}
	if !p.has("q") {
		fmt.Fprintf(t.stdout, "Sending %d %s requests, %d bytes each, %d in parallel (starting at offset %d, step size %d)\n",
			count, kind, bufSize, depth, offset, step)
	}
	// Request i goes to offset+i*step, wrapping to 0 at the end of the
	// image like qemu-img bench (offset += step; offset %= image size).
	// depth workers take request numbers from next; flushMu is held
	// shared by every request and exclusively by a flush, so a flush
	// waits for the requests in flight and holds the next ones back.
	var next atomic.Int64
	var flushMu sync.RWMutex
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	workers := min(depth, count)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bufSize)
			for i := range buf {
				buf[i] = byte(pattern)
			}
			for {
				i := next.Add(1) - 1
				if i >= count {
					return
				}
				off := requestOffset(offset, step, size, bufSize, i)
				var err error
				flushMu.RLock()
				if write {
					_, err = img.WriteAt(buf, off)
				} else {
					_, err = img.ReadAt(buf, off)
				}
				flushMu.RUnlock()
				if err == nil && flushIvl > 0 && (i+1)%flushIvl == 0 {
					flushMu.Lock() // drain in-flight requests, as qemu-img bench
					err = img.Flush()
					flushMu.Unlock()
				}
				if err != nil {
					// The first failure ends the run: no new
					// requests, qemu-img reports it and exits 1.
					errOnce.Do(func() { firstErr = err })
					next.Store(count)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return t.fail("Failed request: %v", firstErr)
	}
	if !p.has("q") {
		fmt.Fprintf(t.stdout, "Run completed in %3.3f seconds.\n", elapsed.Seconds())
	}
	return 0
}

// requestOffset is the offset of request i: start + i*step modulo the
// image size (qemu-img bench's offset += step; offset %= size); a request
// that would cross the end of the image goes to offset 0 instead.
func requestOffset(start, step, size, bufSize, i int64) int64 {
	hi, lo := bits.Mul64(uint64(i), uint64(step))
	_, rem := bits.Div64(hi%uint64(size), lo, uint64(size))
	off := int64((rem + uint64(start)%uint64(size)) % uint64(size))
	if off+bufSize > size {
		off = 0
	}
	return off
}
