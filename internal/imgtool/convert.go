package imgtool

import (
	"bytes"
	"cmp"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("convert", "copy/convert: convert [-c] [-p] [-n] [-f fmt] [-l snapshot] [-O fmt] [-o opts] [-B backing] [-t cache] [-T cache] [-m N] [-W] [-S size] src... dst", runConvert)
}

// convertChunk is the unit of work of one convert worker: 2 MiB, qemu-img's
// IO_BUF_SIZE, the largest request its convert issues.
const convertChunk = 2 << 20

// Job kinds.
const (
	jobCopy = iota // read from the source, write what is not zero
	jobZero        // make the target read zeroes (it may hold other data)
	jobSkip        // the target already reads right here
)

// convertJob is one range of the target and how to fill it. Jobs are
// planned in target order; seq numbers them so that, without -W, their
// writes happen in that order as qemu-img's (in-order coroutines), which
// keeps the target's cluster layout what qemu-img would make.
type convertJob struct {
	seq    int
	src    int   // source index
	srcOff int64 // offset in that source
	dstOff int64
	n      int64
	kind   int
	// counted: the job is part of what qemu-img convert's progress
	// measures (its allocated_sectors): data, and zeroes read from the
	// source itself when -S 0 writes them out as data.
	counted bool
}

// converter is one qemu-img convert run: the sources (concatenated when
// several), the target, and the planner's and workers' shared state.
type converter struct {
	srcs []block.Image
	dst  block.Image
	cw   block.CompressedWriter // -c
	// targetBacking is the size of a new target's backing file, -1 when
	// there is none (or the target existed: -n).
	targetBacking int64
	needZeroes    bool  // target does not read zeroes by itself (-n or -B)
	hasBacking    bool  // -B: data from the sources' backing files is skipped
	sparse        int64 // -S: zero detection granularity, 0 = off
	inOrder       bool  // without -W, writes complete in order
	workers       int
	progress      func(done int64)
	// warn reports what --salvage got past (nil without it); step, when
	// set, makes the run sequential: the planner waits for each job to be
	// done before it looks further (see convsalvage.go).
	warn func(format string, a ...any)
	step chan struct{}

	mu      sync.Mutex
	cond    *sync.Cond
	nextSeq int // next sequence number allowed to write (in-order mode)
	copied  atomic.Int64
	errOnce sync.Once
	err     error
}

// runConvert is qemu-img convert. Order of checks and words as
// img_convert: option conflicts first (-n with -o, --bitmaps), then the
// sources are opened, the target's options and backing file checked, the
// target created (unless -n) and opened, and the copy run by -m workers.
// The target defaults to raw and to cache=unsafe (flushed once at the
// end), as qemu-img.
func runConvert(t *tool, args []string) int {
	p, err := optSpec{short: "hf:O:B:Cco:l:S:pt:T:qnm:WUr:F:", long: []string{"object=", "image-opts", "target-image-opts", "force-share", "salvage", "target-is-zero", "bitmaps", "skip-broken-bitmaps"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	// Copy offloading (-C) copies ranges as they are, which rules out
	// what rewrites the data (img_convert's checks and words, iotest 082).
	if p.has("C") {
		switch {
		case p.has("S"):
			return t.fail("Cannot enable copy offloading when -S is used")
		case p.has("c"):
			return t.fail("Cannot enable copy offloading when -c is used")
		case p.has("salvage"):
			return t.fail("Cannot use copy offloading in salvaging mode")
		}
	}
	// As img_convert: -o help lists the target format's options (with
	// the file protocol's when a target is named) and converts nothing.
	if list, given, err := optionList(p.opts["o"]); err != nil {
		return t.fail("%v", err)
	} else if given && hasHelpOption(list) {
		target := ""
		if len(p.args) >= 2 {
			target = p.args[len(p.args)-1]
		}
		return t.createHelp(cmp.Or(p.get("O"), "raw"), target)
	}
	if len(p.args) < 2 {
		return t.fail("Expecting image file name")
	}
	srcPaths, dstPath := p.args[:len(p.args)-1], p.args[len(p.args)-1]
	if p.has("n") && p.has("o") {
		// img_convert refuses -o options it would not use (iotest 122).
		return t.fail("-o has no effect when skipping image creation")
	}
	if p.has("skip-broken-bitmaps") && !p.has("bitmaps") {
		return t.fail("Use of --skip-broken-bitmaps requires --bitmaps")
	}
	if p.has("bitmaps") && len(srcPaths) > 1 {
		return t.fail("Copying bitmaps only possible with single source")
	}
	var snap snapshotSel
	if p.has("l") {
		if snap, err = parseSnapshotSel(p.get("l")); err != nil {
			return t.failEachLine(err)
		}
	}
	outFmt := p.get("O")
	if outFmt == "" {
		outFmt = "raw"
	}
	if _, ok := block.Lookup(outFmt); !ok {
		return t.fail("Unknown file format '%s'", outFmt)
	}
	srcDirect, err := cacheDirect(p.get("T"))
	if err != nil {
		return t.fail("%v", err)
	}
	// The target's default cache mode is unsafe, as in qemu-img convert.
	dstCache := p.get("t")
	if dstCache == "" {
		dstCache = "unsafe"
	}
	var dstOpts block.Options
	if err := cacheMode(dstCache, &dstOpts); err != nil {
		return t.fail("%v", err)
	}
	// -m: qemu-img's number of coroutines, 8 by default, 1..16; here
	// the number of workers copying at once.
	workers := 8
	if m := p.get("m"); m != "" {
		if workers, err = strconv.Atoi(m); err != nil || workers < 1 || workers > 16 {
			return t.fail("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16")
		}
	}
	// -S: runs of at least this many zero bytes (4 KiB by default) are
	// not written; 0 writes everything, allocating the whole target.
	sparse := int64(4096)
	if s := p.get("S"); s != "" {
		if sparse, err = parseSize(s); err != nil || sparse < 0 || sparse%512 != 0 {
			return t.fail("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 2147483136")
		}
	}
	var srcs []block.Image
	defer func() {
		for _, s := range srcs {
			s.Close()
		}
	}()
	// total is the target's size: the sources' sizes added up, as
	// qemu-img concatenates several sources.
	var total int64
	for _, sp := range srcPaths {
		img, err := t.openImage(sp, p.get("f"), block.Options{ReadOnly: true, DirectIO: srcDirect})
		if err != nil {
			return t.fail("%v", err)
		}
		srcs = append(srcs, img)
		total += img.Size()
	}
	if p.has("l") {
		if snap.idOrName != "" && len(srcs) > 1 {
			return t.fail("No support for concatenating multiple snapshot")
		}
		if err := loadSnapshot(srcs[0], snap); err != nil {
			return t.fail("%v", err)
		}
	}
	if p.has("bitmaps") {
		if err := checkBitmapCopy(srcs[0], outFmt, p.has("skip-broken-bitmaps")); err != nil {
			return t.fail("%v", err)
		}
	}
	// -B and -F are the old-style spellings of -o backing_file and
	// backing_fmt. The size is always the sources' total, whatever -o
	// size says.
	o := block.CreateOptions{Size: total, BackingFile: p.get("B"), BackingFormat: p.get("F"), ExtentSizeHint: block.DefaultExtentSizeHint, Secrets: t.secrets}
	given := map[string]string{}
	for _, s := range p.opts["o"] {
		pairs, err := parseKV(s)
		if err == nil {
			err = createOptions(outFmt, pairs, &o, given)
		}
		if err != nil {
			return t.fail("%v", err)
		}
	}
	o.Size = total
	// img_convert's checks of the target's backing file, in its order
	// (iotests 114, 122): -B or -o backing_file, never with several
	// sources; and when it creates the target, only with a format.
	if o.BackingFile != "" && len(srcs) > 1 {
		return t.fail("Having a backing file for the target makes no sense when concatenating multiple input images")
	}
	if o.BackingFile != "" && o.BackingFormat == "" && !p.has("n") {
		return t.fail("Use of backing file requires explicit backing format")
	}
	if !p.has("n") {
		if err := block.Create(outFmt, dstPath, o); err != nil {
			return t.fail("%s: %v", dstPath, createReason(outFmt, err))
		}
	}
	// The new target opens with the key it was created with.
	if id, ok := given["encrypt.key-secret"]; ok && dstOpts.KeySecret == "" {
		dstOpts.KeySecret = id
	} else if id, ok := given["key-secret"]; ok && dstOpts.KeySecret == "" {
		dstOpts.KeySecret = id
	}
	// --image-opts describes the sources; the target is a file name.
	dst, err := t.openFileLayer(dstPath, outFmt, dstOpts)
	if err != nil {
		return t.fail("%v", err)
	}
	// needZeroes: the target may hold other data where the sources read
	// zeroes (an existing target with -n, unless --target-is-zero says
	// otherwise; or a backing file under the new target; or a raw
	// network export, which creating does not zero, as qemu-img finds no
	// zero init there), so zeroes must be written rather than skipped. A
	// format on an export says for itself (HasZeroInit below).
	_, remote := block.ProtocolOf(dstPath)
	remote = remote && dst.Format() == "raw"
	c := &converter{
		srcs: srcs, dst: dst, sparse: sparse, workers: workers, inOrder: !p.has("W"), targetBacking: -1,
		needZeroes: (p.has("n") || remote) && !p.has("target-is-zero") || o.BackingFile != "",
		hasBacking: o.BackingFile != "",
	}
	// A new target that does not read zeroes by itself (an encrypted,
	// preallocated qcow2: QEMU's bdrv_has_zero_init) gets them written.
	if zi, ok := dst.(interface{ HasZeroInit() bool }); ok && !zi.HasZeroInit() {
		c.needZeroes = true
	}
	c.cond = sync.NewCond(&c.mu)
	if b := dst.Backing(); b != nil && o.BackingFile != "" && !p.has("n") {
		c.targetBacking = b.Size()
	}
	if p.has("c") {
		cw, ok := dst.(block.CompressedWriter)
		if !ok {
			dst.Close()
			return t.fail("Compression not supported for this file format")
		}
		c.cw = cw
	}
	// An existing target (-n) must hold every source byte.
	if p.has("n") && dst.Size() < total {
		dst.Close()
		return t.fail("error while converting %s: target image is smaller than the source", outFmt)
	}
	progressEnd := func() {}
	if p.has("p") && !p.has("q") {
		// As img_convert: the total is measured first (a plan that
		// copies nothing), progress counts only the counted jobs, and a
		// new value is printed when it moved more than 1% from the last
		// one printed (qemu_progress_init(progress, 1.0)), or is 0 or
		// 100; 100 is printed once more at the end. iotest 086: four 1
		// MiB extents of a 128 MiB image go 0, 25, 50, 75, 100, 100.
		total, err := c.progressTotal()
		if err != nil {
			dst.Close()
			return t.fail("error while converting %s: %v", outFmt, err)
		}
		last := 0.0
		var pm sync.Mutex
		show := func(cur float64) {
			fmt.Fprintf(t.stdout, "    (%3.2f/100%%)\r", cur)
			last = cur
		}
		c.progress = func(done int64) {
			pm.Lock()
			defer pm.Unlock()
			cur := 100.0
			if total > 0 {
				cur = min(100, float64(done)*100/float64(total))
			}
			if cur > last+1 || cur < last-1 || cur == 0 || cur == 100 {
				show(cur)
			}
		}
		show(0)
		progressEnd = func() { show(100); fmt.Fprintln(t.stdout) }
	}
	if p.has("salvage") {
		c.warn = func(format string, a ...any) { t.errorf("warning: "+format, a...) }
		// qemu-img measures the sources before copying, warning about
		// the block status it cannot read then too.
		if !p.has("p") || p.has("q") {
			if _, err := c.progressTotal(); err != nil {
				dst.Close()
				return t.fail("error while converting %s: %v", outFmt, err)
			}
		}
		c.workers, c.step = 1, make(chan struct{})
	}
	// Close flushes the target (cache=unsafe skipped every flush before);
	// its error counts as the copy's.
	err = c.run()
	progressEnd()
	if err == nil && p.has("bitmaps") {
		if berr := t.copyBitmaps(srcs[0], dst); berr != nil {
			dst.Close()
			return t.fail("%v", berr)
		}
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return t.fail("error while writing at byte %v", err)
	}
	return 0
}

// plan lists the jobs: extents of each source, split into chunks (for -c
// aligned to the target's clusters, so each write is whole clusters).
func (c *converter) plan(out chan<- *convertJob) error {
	defer close(out)
	align := int64(convertChunk)
	if c.cw != nil {
		return c.planGrid(out, max(align/c.cw.ClusterSize(), 1)*c.cw.ClusterSize())
	}
	seq := 0
	var pending *convertJob
	emit := func() {
		if pending != nil {
			pending.seq = seq
			seq++
			out <- pending
			pending = nil
			if c.step != nil {
				<-c.step
			}
		}
	}
	var base int64
	for si, src := range c.srcs {
		size := src.Size()
		for off := int64(0); off < size; {
			if c.failed() {
				return nil
			}
			e, err := c.sourceStatus(src, base, off, size-off)
			if err != nil {
				return fmt.Errorf("%#x: reading block status: %w", base+off, err)
			}
			n := max(e.Length, 1)
			// img_convert splits requests at the end of a new target's
			// backing file: past it, the target reads zeroes by itself.
			if tb := c.targetBacking; tb >= 0 && base+off < tb && base+off+n > tb {
				n = tb - base - off
			}
			kind := jobCopy
			switch {
			case c.hasBacking && e.Depth > 0:
				kind = jobSkip // the new backing file is expected to hold it
			case e.Flags&block.ExtentData != 0:
			case c.targetBacking >= 0 && base+off >= c.targetBacking:
				// Zeroes past the new target's backing file are left
				// out (QEMU's post_backing_zero; iotest 122: nothing is
				// allocated there, even in a v2 image).
				kind = jobSkip
			case c.sparse == 0:
				// -S 0: zeroes are written as data, the target is fully
				// allocated (iotest 122).
			case c.needZeroes:
				kind = jobZero
			default:
				kind = jobSkip
			}
			counted := kind == jobCopy
			// Extents of one kind are coalesced (engines report runs of
			// host-contiguous clusters, convert only cares about the
			// kind); copy jobs end on the chunk grid of the target.
			for done := int64(0); done < n; {
				d := base + off + done
				if pending != nil && (pending.kind != kind || pending.src != si || pending.counted != counted) {
					emit()
				}
				if pending == nil {
					pending = &convertJob{src: si, srcOff: off + done, dstOff: d, kind: kind, counted: counted}
				}
				l := n - done
				if kind == jobCopy {
					l = min(l, align-d%align)
				}
				pending.n += l
				done += l
				if kind == jobCopy && (d+l)%align == 0 {
					emit()
				}
			}
			off += n
			if c.step != nil {
				emit()
			}
		}
		emit()
		base += size
	}
	return nil
}

// planGrid plans -c: whole aligned chunks (so compressed writes cover
// whole clusters), each copied unless every source byte in it is
// unallocated zeroes.
func (c *converter) planGrid(out chan<- *convertJob, align int64) error {
	// total is the target's size: the sources' sizes added up, as
	// qemu-img concatenates several sources.
	var total int64
	for _, s := range c.srcs {
		total += s.Size()
	}
	for seq, d := 0, int64(0); d < total; seq, d = seq+1, d+align {
		if c.failed() {
			return nil
		}
		n := min(align, total-d)
		kind := jobSkip
		for off := d; off < d+n && kind == jobSkip; {
			si, so := c.locate(off)
			src := c.srcs[si]
			e, err := src.BlockStatus(so, min(d+n-off, src.Size()-so))
			if err != nil {
				return fmt.Errorf("%#x: reading block status: %w", off, err)
			}
			if e.Flags&block.ExtentData != 0 || c.needZeroes || c.sparse == 0 {
				kind = jobCopy
			}
			off += max(e.Length, 1)
		}
		out <- &convertJob{seq: seq, src: -1, dstOff: d, n: n, kind: kind, counted: kind == jobCopy}
	}
	return nil
}

// progressTotal is the byte count convert's progress runs up to: the
// counted jobs of a plan run once without copying.
func (c *converter) progressTotal() (int64, error) {
	jobs := make(chan *convertJob, 16)
	planErr := make(chan error, 1)
	go func() { planErr <- c.plan(jobs) }()
	// total is the target's size: the sources' sizes added up, as
	// qemu-img concatenates several sources.
	var total int64
	for j := range jobs {
		if j.counted {
			total += j.n
		}
	}
	return total, <-planErr
}

// locate maps an offset of the concatenated sources to (source, offset).
func (c *converter) locate(off int64) (int, int64) {
	for i, s := range c.srcs {
		if off < s.Size() || i == len(c.srcs)-1 {
			return i, off
		}
		off -= s.Size()
	}
	return 0, off
}

// readConcat fills b from the concatenated sources at off.
func (c *converter) readConcat(b []byte, off int64) error {
	for len(b) > 0 {
		si, so := c.locate(off)
		src := c.srcs[si]
		n := min(int64(len(b)), src.Size()-so)
		if n <= 0 {
			return fmt.Errorf("read beyond the sources at %#x", off)
		}
		if _, err := src.ReadAt(b[:n], so); err != nil {
			return err
		}
		b, off = b[n:], off+n
	}
	return nil
}

// failed reports whether a worker or the planner has failed; the others
// then stop taking work.
func (c *converter) failed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// fail records the first error; later ones are consequences of it.
func (c *converter) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.cond.Broadcast()
}

// run plans and copies: one planner goroutine feeds jobs to c.workers
// workers over a bounded channel (the plan never runs far ahead of the
// copy), and the first error of either ends the run.
func (c *converter) run() error {
	jobs := make(chan *convertJob, 2*c.workers)
	// plan closes jobs before it returns, so the workers can finish before
	// its error is known: take the error through a channel.
	planErr := make(chan error, 1)
	go func() { planErr <- c.plan(jobs) }()
	bufs, unmap := convertBuffers(c.workers, convertChunk)
	defer unmap()
	var wg sync.WaitGroup
	for _, buf := range bufs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if !c.failed() {
					if err := c.do(j, buf); err != nil {
						c.fail(err)
					}
				}
				if c.step != nil {
					c.step <- struct{}{}
				}
			}
		}()
	}
	wg.Wait()
	if err := <-planErr; err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// waitTurn blocks until job seq may write (in-order mode).
func (c *converter) waitTurn(seq int) {
	if !c.inOrder {
		return
	}
	c.mu.Lock()
	for c.nextSeq != seq && c.err == nil {
		c.cond.Wait()
	}
	c.mu.Unlock()
}

// finish lets the next job write (in-order mode) and advances the
// progress by the job's bytes when it is one progress counts.
func (c *converter) finish(j *convertJob) {
	if c.inOrder {
		c.mu.Lock()
		c.nextSeq = j.seq + 1
		c.mu.Unlock()
		c.cond.Broadcast()
	}
	if j.counted && c.progress != nil {
		c.progress(c.copied.Add(j.n))
	}
}

// do runs one job. Reads happen before the job's turn, so that workers
// read in parallel; only the write waits for the jobs before it.
func (c *converter) do(j *convertJob, buf []byte) error {
	defer c.finish(j)
	switch j.kind {
	case jobSkip:
		c.waitTurn(j.seq)
		return nil
	case jobZero:
		c.waitTurn(j.seq)
		if err := c.dst.WriteZeroes(j.dstOff, j.n, false); err != nil {
			return fmt.Errorf("%d: %w", j.dstOff, err)
		}
		return nil
	}
	b := buf[:j.n]
	var err error
	if j.src < 0 {
		err = c.readConcat(b, j.dstOff)
	} else {
		err = c.readSource(j.src, b, j.srcOff)
	}
	if err != nil {
		return fmt.Errorf("%d: reading source: %w", j.dstOff, err)
	}
	c.waitTurn(j.seq)
	if c.cw != nil {
		return c.writeCompressed(b, j.dstOff)
	}
	return c.writeSparse(b, j.dstOff)
}

// writeSparse writes b at off, leaving out (or zeroing, if the target does
// not read zeroes by itself) runs of -S bytes that are all zero. Each
// block of -S bytes is tested once.
func (c *converter) writeSparse(b []byte, off int64) error {
	if c.sparse == 0 {
		if _, err := c.dst.WriteAt(b, off); err != nil {
			return fmt.Errorf("%d: %w", off, err)
		}
		return nil
	}
	bs := int(c.sparse)
	zeroAt := func(i int) bool { return allZero(b[i:min(len(b), i+bs)]) }
	isZero := zeroAt(0)
	for i := 0; i < len(b); {
		// [i, j) is a run of blocks of one kind; next is the kind of
		// the block at j.
		j, next := min(len(b), i+bs), isZero
		for j < len(b) {
			if next = zeroAt(j); next != isZero {
				break
			}
			j = min(len(b), j+bs)
		}
		var err error
		switch {
		case !isZero:
			_, err = c.dst.WriteAt(b[i:j], off+int64(i))
		case c.needZeroes:
			err = c.dst.WriteZeroes(off+int64(i), int64(j-i), false)
		}
		if err != nil {
			return fmt.Errorf("%d: %w", off+int64(i), err)
		}
		i, isZero = j, next
	}
	return nil
}

// writeCompressed writes b (cluster-aligned at off) cluster by cluster,
// compressed; all-zero clusters are left unallocated.
func (c *converter) writeCompressed(b []byte, off int64) error {
	cs := int(c.cw.ClusterSize())
	for i := 0; i < len(b); i += cs {
		cl := b[i:min(len(b), i+cs)]
		// With -S 0 zero clusters are compressed too, as qemu-img's
		// convert_co_write (the target is fully allocated).
		if c.sparse != 0 && allZero(cl) {
			if c.needZeroes {
				if err := c.dst.WriteZeroes(off+int64(i), int64(len(cl)), false); err != nil {
					return fmt.Errorf("%d: %w", off+int64(i), err)
				}
			}
			continue
		}
		if err := c.cw.WriteCompressed(cl, off+int64(i)); err != nil {
			return fmt.Errorf("%d: %w", off+int64(i), err)
		}
	}
	return nil
}

// zeroBlock is what allZero compares against: bytes.Equal is vectorized,
// an order of magnitude faster than a loop over the bytes.
var zeroBlock [64 << 10]byte

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
