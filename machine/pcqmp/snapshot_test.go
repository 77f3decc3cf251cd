//go:build amd64

package pcqmp

import (
	"testing"

	"github.com/petrel-vmm/petrel/qmp"
)

// TestRequestKeepsDevicesNil checks the one distinction the conversion
// must keep: HMP's nil devices (every writable node) against QMP's empty
// list (no node).
func TestRequestKeepsDevicesNil(t *testing.T) {
	hmp := request(qmp.SnapshotRequest{Tag: "t", Overwrite: true})
	if hmp.Devices != nil || hmp.Tag != "t" || !hmp.Overwrite {
		t.Fatalf("HMP request %+v", hmp)
	}
	q := request(qmp.SnapshotRequest{Tag: "t", VMState: "d0", Devices: []string{}})
	if q.Devices == nil || len(q.Devices) != 0 || q.VMState != "d0" || q.Overwrite {
		t.Fatalf("QMP request %+v", q)
	}
	in := []string{"d0", "d1"}
	q = request(qmp.SnapshotRequest{Devices: in})
	in[0] = "changed"
	if q.Devices[0] != "d0" || q.Devices[1] != "d1" {
		t.Fatalf("devices %v share the caller's array", q.Devices)
	}
}
