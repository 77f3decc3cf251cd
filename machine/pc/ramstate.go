//go:build amd64

package pc

import (
	"os"
	"strings"

	"github.com/petrel-vmm/petrel/vmstate"
)

// saved is guest RAM for the saved machine's "ram" section. Without
// swap, a page of the private anonymous RAM that mincore says is not
// resident has never been touched and reads as
// zeroes: the save skips it without faulting it in. With swap on, a page
// out of memory may hold data, so every page is read.
func (r *guestRAM) saved() []vmstate.RAMRegion {
	rs := make([]vmstate.RAMRegion, len(r.regions))
	noSwap := !swapOn()
	for i, reg := range r.regions {
		b := reg.mem
		rs[i] = vmstate.RAMRegion{GuestAddr: reg.gpa, Mem: b}
		if noSwap {
			vec := make([]byte, len(b)/vmstate.PageSize)
			if err := mincore(b, vec); err == nil {
				rs[i].Resident = vec
			}
		}
	}
	return rs
}

// swapOn reports whether any swap area is active (/proc/swaps lists one
// below its header); unknown counts as on.
func swapOn() bool {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return true
	}
	return len(strings.Split(strings.TrimSpace(string(b)), "\n")) > 1
}
