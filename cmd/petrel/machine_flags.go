package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/petrel-vmm/petrel/qemuopt"
)

// The -m and -smp parsers are shared by run (x86, amd64 hosts only) and
// run-pseries (ppc64 hosts), so they live outside run.go.

// parseMemSize parses QEMU's -m: [size=]SIZE with an optional K/M/G/T
// suffix (MiB without one).
func parseMemSize(s string) (int, error) {
	o, err := qemuopt.Parse("-m", s, "size")
	if err != nil {
		return 0, err
	}
	size := o.Str("size")
	if err := o.Unused("-m: unsupported option '%s'"); err != nil {
		return 0, err
	}
	// Bounds: 2 MiB to 1 TiB, in whole MiB, since pc.Config takes its RAM
	// size in MiB.
	bytes, err := qemuopt.ParseSizeUnit(size, 1<<20)
	if err != nil || bytes > 1<<40 {
		return 0, fmt.Errorf("-m %q: not a size between 2M and 1T", s)
	}
	if bytes < 2<<20 || bytes%(1<<20) != 0 {
		return 0, fmt.Errorf("-m %q: need a whole number of MiB, at least 2M", s)
	}
	return int(bytes >> 20), nil
}

// parseSMP parses "N" or "cpus=N[,...]". The first item that is a number
// (bare or after cpus=) is the count; other -smp keys (sockets=, cores=,
// threads=) are accepted and ignored. The limit of 255 keeps every vCPU's
// xAPIC ID (8 bits) below 0xff, the broadcast ID.
func parseSMP(s string) (int, error) {
	for _, p := range strings.Split(s, ",") {
		v := strings.TrimPrefix(p, "cpus=")
		if n, err := strconv.Atoi(v); err == nil {
			if n < 1 || n > 255 {
				return 0, fmt.Errorf("-smp %q: cpu count must be 1..255", s)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("-smp %q: want N or cpus=N", s)
}
