//go:build amd64

package pc

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/machine/blocknodes"
	"github.com/petrel-vmm/petrel/machine/devmgr"
)

// SnapshotRequest names a VM snapshot and the block nodes it covers, as
// QMP's snapshot-save/-load/-delete and HMP's savevm/loadvm/delvm do.
type SnapshotRequest struct {
	Tag string
	// VMState is the node whose snapshot holds the machine state ("": the
	// first writable qcow2 node by name, as QEMU picks the first).
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

// vmSnapshots is QEMU's savevm/loadvm/delvm over the machine's block
// nodes: which nodes a snapshot covers, the disk snapshots on each, and
// the machine state (stateStream) in the VM-state area of one of them.
// Machine embeds it, so SaveVM, LoadVM, DeleteVM and VMSnapshots are the
// Machine's methods; QMP's snapshot jobs and HMP call them from their own
// goroutines while Run runs.
//
// Lock order: mu, then what devmgr's Quiesce takes (the PCI bus's lock,
// then each device's), then the block nodes' own locks. mu is held for a
// whole operation; under it Pause waits for every vCPU to leave the
// guest, which ends because no vCPU path takes mu.
type vmSnapshots struct {
	mu      sync.Mutex // one snapshot operation at a time
	blocks  *blocknodes.Registry
	devices *devmgr.Manager // quiesced while the state is read or written
	run     *lifecycle      // paused likewise; its clock is the VM clock
	state   *stateStream
	logf    func(string, ...any)
}

// snapNode is one block node a VM snapshot covers.
type snapNode struct {
	name string
	img  block.Image
	snap block.Snapshotter
}

// nodes resolves r to the nodes to snapshot and the one holding
// the state, with QEMU's messages for what cannot take part.
func (vs *vmSnapshots) nodes(r SnapshotRequest) (nodes []snapNode, state *snapNode, err error) {
	all := vs.blocks.List()
	byName := map[string]blocknodes.Info{}
	for _, n := range all {
		byName[n.Name] = n
	}
	var chosen []blocknodes.Info
	if r.Devices != nil {
		for _, name := range r.Devices {
			n, ok := byName[name]
			if !ok {
				return nil, nil, fmt.Errorf("No block device node '%s'", name)
			}
			chosen = append(chosen, n)
		}
	} else {
		for _, n := range all {
			if !n.Image.ReadOnly() {
				chosen = append(chosen, n)
			}
		}
	}
	// The error strings here and below follow QEMU's savevm and block
	// snapshot code word for word, as HMP users and scripts compare
	// them; hence their capital letters.
	for _, n := range chosen {
		s, ok := n.Image.(block.Snapshotter)
		if !ok || n.Image.ReadOnly() {
			return nil, nil, fmt.Errorf("Device '%s' is writable but does not support snapshots", n.Name)
		}
		nodes = append(nodes, snapNode{name: n.Name, img: n.Image, snap: s})
	}
	if len(nodes) == 0 {
		return nil, nil, errors.New("No block device can accept snapshots")
	}
	for i := range nodes {
		if _, ok := nodes[i].img.(block.VMStateHolder); !ok {
			continue
		}
		if r.VMState == "" || r.VMState == nodes[i].name {
			state = &nodes[i]
			break
		}
	}
	if state == nil {
		if r.VMState != "" {
			if _, ok := byName[r.VMState]; !ok {
				return nil, nil, fmt.Errorf("No block device node '%s'", r.VMState)
			}
			return nil, nil, fmt.Errorf("Device '%s' does not support VM state snapshots or is not in the snapshot list", r.VMState)
		}
		return nil, nil, errors.New("No block device can accept snapshots")
	}
	return nodes, state, nil
}

// findSnapshot returns the snapshot of s with tag (by name, then by ID).
func findSnapshot(s block.Snapshotter, tag string) (*block.SnapshotInfo, error) {
	list, err := s.Snapshots()
	if err != nil {
		return nil, err
	}
	for i := range list {
		if list[i].Name == tag {
			return &list[i], nil
		}
	}
	for i := range list {
		if list[i].ID == tag {
			return &list[i], nil
		}
	}
	return nil, nil
}

// quiesce pauses the vCPUs (STOP when they were running) and waits for
// in-flight device I/O; the returned function undoes it (the vCPUs run
// again, with RESUME, only if they were running before).
func (vs *vmSnapshots) quiesce() (resume func()) {
	was := vs.run.Status()
	vs.run.Pause()
	if was == "running" {
		vs.run.Emit("STOP", nil)
	}
	vs.devices.Quiesce()
	return func() {
		vs.devices.Unquiesce()
		switch was {
		case "running":
			vs.run.Resume()
			vs.run.Emit("RESUME", nil)
		case "prelaunch": // -loadvm: Run starts the vCPUs
			vs.run.Resume()
		}
	}
}

// SaveVM pauses the vCPUs, drains in-flight I/O, snapshots every node of
// r and writes the machine state into r.VMState's snapshot, then resumes
// the vCPUs if they were running. Nodes without the state get a disk-only
// snapshot first; the state's node last, so that a failure part way
// leaves no snapshot claiming a state.
func (vs *vmSnapshots) SaveVM(r SnapshotRequest) error {
	if r.Tag == "" {
		return errors.New("Parameter 'tag' is missing")
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	nodes, state, err := vs.nodes(r)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		sn, err := findSnapshot(n.snap, r.Tag)
		if err != nil {
			return fmt.Errorf("Error while checking snapshots on '%s': %w", n.name, err)
		}
		if sn != nil && !r.Overwrite {
			return fmt.Errorf("Snapshot '%s' already exists in one or more devices", r.Tag)
		}
	}
	resume := vs.quiesce()
	defer resume()
	t0 := time.Now()
	clock := vs.run.clock.now()
	if r.Overwrite {
		for _, n := range nodes {
			if sn, _ := findSnapshot(n.snap, r.Tag); sn != nil {
				if err := n.snap.DeleteSnapshot(sn.ID); err != nil {
					return fmt.Errorf("Error while deleting snapshot on device '%s': %w", n.name, err)
				}
			}
		}
	}
	var made []snapNode
	undo := func() {
		for _, n := range made {
			if sn, _ := findSnapshot(n.snap, r.Tag); sn != nil {
				n.snap.DeleteSnapshot(sn.ID)
			}
		}
	}
	for _, n := range nodes {
		if n.name == state.name {
			continue
		}
		if err := n.img.Flush(); err != nil {
			undo()
			return fmt.Errorf("Error while flushing '%s': %w", n.name, err)
		}
		if err := n.img.(block.VMStateHolder).CreateSnapshotWithState(r.Tag, uint64(clock), nil); err != nil {
			undo()
			return fmt.Errorf("Error while creating snapshot on '%s': %w", n.name, err)
		}
		made = append(made, n)
	}
	var written int64
	err = state.img.(block.VMStateHolder).CreateSnapshotWithState(r.Tag, uint64(clock), func(w io.Writer) error {
		var err error
		written, err = vs.state.write(w, uint64(clock))
		return err
	})
	if err != nil {
		undo()
		return fmt.Errorf("Error while creating snapshot on '%s': %w", state.name, err)
	}
	vs.logf("savevm %s: %d bytes of state in %s, %v", r.Tag, written, state.name, time.Since(t0).Round(time.Millisecond))
	return nil
}

// LoadVM checks the saved state against this machine, applies the disk
// snapshots and loads the state; the vCPUs resume if they were running.
// Nothing changes unless the state's checksum and configuration match.
func (vs *vmSnapshots) LoadVM(r SnapshotRequest) error {
	if r.Tag == "" {
		return errors.New("Parameter 'tag' is missing")
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	nodes, state, err := vs.nodes(r)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		sn, err := findSnapshot(n.snap, r.Tag)
		if err != nil {
			return fmt.Errorf("Error while checking snapshots on '%s': %w", n.name, err)
		}
		if sn == nil {
			return fmt.Errorf("Snapshot '%s' does not exist in one or more devices", r.Tag)
		}
	}
	holder := state.img.(block.VMStateHolder)
	open := func() (io.Reader, int64, error) {
		ra, size, err := holder.VMState(r.Tag)
		if err != nil {
			return nil, 0, err
		}
		if size == 0 {
			return nil, 0, fmt.Errorf("Snapshot '%s' in '%s' holds no VM state", r.Tag, state.name)
		}
		// vmstate.NewReader buffers (64 KiB reads).
		return io.NewSectionReader(ra, 0, size), size, nil
	}
	// First pass: the whole state must be intact and made by a machine
	// like this one before anything changes.
	rd, size, err := open()
	if err != nil {
		return err
	}
	if err := vs.state.check(rd, size); err != nil {
		return err
	}
	// From here a failure leaves the machine paused, as QEMU does: its
	// disks or state may be half loaded.
	resume := vs.quiesce()
	t0 := time.Now()
	for _, n := range nodes {
		if err := n.snap.ApplySnapshot(r.Tag); err != nil {
			return fmt.Errorf("Could not load snapshot '%s' on '%s': %w", r.Tag, n.name, err)
		}
	}
	if rd, size, err = open(); err != nil {
		return err
	}
	if err := vs.state.read(rd, size); err != nil {
		return fmt.Errorf("Error while loading VM state: %w", err)
	}
	vs.logf("loadvm %s: %d bytes of state from %s, %v", r.Tag, size, state.name, time.Since(t0).Round(time.Millisecond))
	resume()
	return nil
}

// DeleteVM deletes the snapshot r.Tag from every node of r that has it.
func (vs *vmSnapshots) DeleteVM(r SnapshotRequest) error {
	if r.Tag == "" {
		return errors.New("Parameter 'tag' is missing")
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	nodes, _, err := vs.nodes(r)
	if err != nil {
		return err
	}
	found := false
	for _, n := range nodes {
		sn, err := findSnapshot(n.snap, r.Tag)
		if err != nil {
			return err
		}
		if sn == nil {
			continue
		}
		found = true
		if err := n.snap.DeleteSnapshot(sn.ID); err != nil {
			return fmt.Errorf("Error while deleting snapshot on device '%s': %w", n.name, err)
		}
	}
	if !found {
		return fmt.Errorf("Snapshot '%s' not found", r.Tag)
	}
	return nil
}

// VMSnapshots lists the snapshots with a VM state that every writable
// node has (HMP "info snapshots" shows these).
func (vs *vmSnapshots) VMSnapshots() ([]VMSnapshot, error) {
	nodes, state, err := vs.nodes(SnapshotRequest{})
	if err != nil {
		return nil, err
	}
	list, err := state.snap.Snapshots()
	if err != nil {
		return nil, err
	}
	var out []VMSnapshot
next:
	for _, sn := range list {
		for _, n := range nodes {
			if other, err := findSnapshot(n.snap, sn.Name); err != nil || other == nil {
				continue next
			}
		}
		out = append(out, VMSnapshot{ID: sn.ID, Tag: sn.Name, VMStateSize: sn.VMStateSize, Date: sn.Date, VMClock: sn.VMClock})
	}
	return out, nil
}
