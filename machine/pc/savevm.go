//go:build amd64

package pc

import (
	"errors"
	"time"
)

// SnapshotRequest names a VM snapshot and the block nodes it covers, as
// QMP's snapshot-save/-load/-delete and HMP's savevm/loadvm/delvm do.
type SnapshotRequest struct {
	Tag string
	// VMState is the node whose snapshot holds the machine state ("": the
	// first writable qcow2 node, as QEMU picks it).
	VMState string
	// Devices are the nodes to snapshot (nil: every writable node).
	Devices []string
	// Overwrite replaces existing snapshots with the same tag (HMP
	// savevm); without it an existing tag is an error (QMP snapshot-save).
	Overwrite bool
}

// VMSnapshot is one snapshot present on every snapshotted node, for HMP
// "info snapshots".
type VMSnapshot struct {
	ID, Tag     string
	VMStateSize int64
	Date        time.Time
	VMClock     time.Duration
}

var errSnapshotsNotBuilt = errors.New("VM snapshots are not available in this build")

// SaveVM pauses the vCPUs, drains in-flight I/O, snapshots every node of
// r and writes the machine state into r.VMState's snapshot, then resumes
// the vCPUs if they were running.
func (m *Machine) SaveVM(r SnapshotRequest) error { return errSnapshotsNotBuilt }

// LoadVM checks the saved state against this machine, applies the disk
// snapshots and loads the state; the vCPUs resume if they were running.
func (m *Machine) LoadVM(r SnapshotRequest) error { return errSnapshotsNotBuilt }

// DeleteVM deletes the snapshot r.Tag from every node of r.
func (m *Machine) DeleteVM(r SnapshotRequest) error { return errSnapshotsNotBuilt }

// VMSnapshots lists the snapshots present on every writable node.
func (m *Machine) VMSnapshots() ([]VMSnapshot, error) { return nil, errSnapshotsNotBuilt }
