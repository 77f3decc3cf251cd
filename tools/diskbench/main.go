// Command diskbench measures a block device from inside a Linux guest, the
// way `make bench-boot`'s nested row compares two VMMs' virtio-blk: every
// request goes to the device (O_DIRECT, page-aligned buffers, one request
// at a time), so the figures are the VMM's request path, not the guest's
// page cache. The benchmark copies it, built static, into the guest's
// initramfs.
//
//	diskbench DEVICE [REGION_MIB [RANDOM_OPS]]
//
// On the first REGION_MIB (default 64) of DEVICE, in this order:
// sequential write and read in 1 MiB requests, then RANDOM_OPS (default
// 2000) random 4 KiB writes and as many random 4 KiB reads (offsets from a
// fixed seed, so two runs issue the same requests). Each line reads
//
//	DISKBENCH NAME MBps=X iops=Y ms=Z
//
// The writes store a pattern and the reads check it: a VMM that returns
// other bytes makes diskbench fail (status 1) rather than look fast.
package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Request sizes in bytes: 1 MiB for the sequential passes, 4 KiB (one
// page, the smallest O_DIRECT request on most devices) for the random
// ones.
const (
	seqBlock  = 1 << 20
	randBlock = 4096
)

// main exits 2 for bad arguments and 1 when a pass fails.
func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: diskbench DEVICE [REGION_MIB [RANDOM_OPS]]")
		os.Exit(2)
	}
	regionMiB, ops := 64, 2000
	if len(os.Args) > 2 {
		regionMiB = atoi(os.Args[2])
	}
	if len(os.Args) > 3 {
		ops = atoi(os.Args[3])
	}
	if err := run(os.Args[1], int64(regionMiB)<<20, ops); err != nil {
		fmt.Fprintln(os.Stderr, "diskbench:", err)
		os.Exit(1)
	}
}

// atoi parses a positive count or exits with status 2.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		fmt.Fprintf(os.Stderr, "diskbench: %q is not a positive number\n", s)
		os.Exit(2)
	}
	return n
}

// run makes the four passes over the first region bytes of dev. A write
// pass ends with fdatasync, inside its timing, so the figures include the
// flush that makes the data durable in the image. Short writes are not detected (the
// byte count Pwrite returns is not checked); the read passes would then
// fail on the pattern.
func run(dev string, region int64, ops int) error {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return fmt.Errorf("open %s with O_DIRECT: %w", dev, err)
	}
	defer unix.Close(fd)
	// mmap'd buffers are page-aligned, as O_DIRECT needs.
	buf, err := unix.Mmap(-1, 0, seqBlock, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	want := make([]byte, seqBlock)

	// pattern fills b with bytes that name the offset they belong at.
	pattern := func(b []byte, off int64) {
		for i := 0; i < len(b); i += 8 {
			v := uint64(off+int64(i)) ^ 0x50455452454c // "PETREL"
			for j := 0; j < 8; j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
	}
	io := func(name string, n int, size int, write bool, offset func(int) int64) error {
		start := time.Now()
		for i := 0; i < n; i++ {
			off := offset(i)
			b := buf[:size]
			if write {
				pattern(b, off)
				if _, err := unix.Pwrite(fd, b, off); err != nil {
					return fmt.Errorf("%s: write at %d: %w", name, off, err)
				}
				continue
			}
			if _, err := unix.Pread(fd, b, off); err != nil {
				return fmt.Errorf("%s: read at %d: %w", name, off, err)
			}
			pattern(want[:size], off)
			if !bytes.Equal(b, want[:size]) {
				return fmt.Errorf("%s: the %d bytes at %d read back other than written", name, size, off)
			}
		}
		if write {
			if err := unix.Fdatasync(fd); err != nil {
				return fmt.Errorf("%s: fdatasync: %w", name, err)
			}
		}
		d := time.Since(start)
		fmt.Printf("DISKBENCH %s MBps=%.1f iops=%.0f ms=%d\n", name,
			float64(n)*float64(size)/d.Seconds()/1e6, float64(n)/d.Seconds(), d.Milliseconds())
		return nil
	}
	seq := func(i int) int64 { return int64(i) * seqBlock }
	nseq := int(region / seqBlock)
	if err := io("seq-write-1M", nseq, seqBlock, true, seq); err != nil {
		return err
	}
	if err := io("seq-read-1M", nseq, seqBlock, false, seq); err != nil {
		return err
	}
	offsets := make([]int64, ops)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range offsets {
		offsets[i] = r.Int64N(region/randBlock) * randBlock
	}
	rnd := func(i int) int64 { return offsets[i] }
	if err := io("rand-write-4k", ops, randBlock, true, rnd); err != nil {
		return err
	}
	return io("rand-read-4k", ops, randBlock, false, rnd)
}
