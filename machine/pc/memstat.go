//go:build amd64

package pc

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// resident reports the process's resident set split into guest RAM
// pages the guest has touched (mincore over the RAM mappings) and the rest,
// which is what the VMM itself costs.
func (r *guestRAM) resident() (vmm, guest uint64, err error) {
	// VmRSS counts the guest's RAM pages too, as they are this process's
	// anonymous memory.
	rss, err := procStatus("VmRSS")
	if err != nil {
		return 0, 0, err
	}
	page := uint64(os.Getpagesize())
	for _, reg := range r.regions {
		vec := make([]byte, (uint64(len(reg.mem))+page-1)/page)
		if err := mincore(reg.mem, vec); err != nil {
			return 0, 0, fmt.Errorf("mincore over guest ram: %w", err)
		}
		// mincore(2) sets bit 0 of a page's byte when it is resident;
		// the other bits are undefined.
		for _, v := range vec {
			if v&1 != 0 {
				guest += page
			}
		}
	}
	if guest > rss {
		return 0, guest, nil
	}
	return rss - guest, guest, nil
}

// procStatus reads the field (a size in kB, proc(5)) from
// /proc/self/status, in bytes.
func procStatus(field string) (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("reading process status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %s %q: %w", field, v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}
