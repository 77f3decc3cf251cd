//go:build amd64

package pcqmp

import (
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/qmp"
)

// request converts a QMP snapshot request for the machine. Devices keeps
// its nil-ness: nil (HMP) is every writable node, an empty list (QMP
// "devices": []) is none.
func request(r qmp.SnapshotRequest) pc.SnapshotRequest {
	out := pc.SnapshotRequest{Tag: r.Tag, VMState: r.VMState, Overwrite: r.Overwrite}
	if r.Devices != nil {
		out.Devices = append([]string{}, r.Devices...)
	}
	return out
}

// SaveVM saves a VM snapshot (QMP snapshot-save, HMP savevm).
func (a *Adapter) SaveVM(r qmp.SnapshotRequest) error { return a.m.SaveVM(request(r)) }

// LoadVM loads a VM snapshot (QMP snapshot-load, HMP loadvm).
func (a *Adapter) LoadVM(r qmp.SnapshotRequest) error { return a.m.LoadVM(request(r)) }

// DeleteVM deletes a VM snapshot (QMP snapshot-delete, HMP delvm).
func (a *Adapter) DeleteVM(r qmp.SnapshotRequest) error { return a.m.DeleteVM(request(r)) }

// VMSnapshots lists the snapshots on every node (HMP info snapshots).
func (a *Adapter) VMSnapshots() ([]qmp.VMSnapshot, error) {
	snaps, err := a.m.VMSnapshots()
	if err != nil {
		return nil, err
	}
	out := make([]qmp.VMSnapshot, 0, len(snaps))
	for _, s := range snaps {
		out = append(out, qmp.VMSnapshot{ID: s.ID, Tag: s.Tag, VMStateSize: s.VMStateSize, Date: s.Date, VMClock: s.VMClock})
	}
	return out, nil
}
