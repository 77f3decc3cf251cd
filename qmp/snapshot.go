package qmp

import (
	"fmt"
	"strings"
	"time"

	"github.com/petrel-vmm/petrel/qemuopt"
)

// The QMP snapshot commands (qapi/migration.json, QEMU 6.0 and later): each
// creates a job that QEMU creates with JOB_MANUAL_DISMISS, so a client
// reads the outcome with query-jobs and removes the job with job-dismiss.
// The command returns {} at once; its created and running events precede
// the reply, and the work starts after it, as in QEMU, where the job's
// coroutine runs only once the command has returned.

// snapshotOp runs one machine snapshot operation, one at a time.
func (s *Server) snapshotOp(op func() error) error {
	s.snap.Lock()
	defer s.snap.Unlock()
	return op()
}

// snapshotJob returns the handler of a snapshot command: it reads the
// request, creates the job (type typ) and starts op in the job's goroutine.
func snapshotJob(typ string, op func(Machine, SnapshotRequest) error) func(*Server, map[string]any) (any, func(), error) {
	return func(s *Server, a map[string]any) (any, func(), error) {
		r := SnapshotRequest{Tag: a["tag"].(string), Devices: []string{}}
		r.VMState, _ = a["vmstate"].(string)
		for _, d := range a["devices"].([]any) {
			r.Devices = append(r.Devices, d.(string))
		}
		j, err := s.jobs.create(a["job-id"].(string), typ)
		if err != nil {
			return nil, nil, err
		}
		s.jobs.start(j)
		return nil, func() {
			go s.jobs.run(j, func() error {
				return s.snapshotOp(func() error { return op(s.m, r) })
			})
		}, nil
	}
}

// snapshotCommands are snapshot-save, -load and -delete. Every argument is
// required, as in qapi/migration.json, and checked in the schema's order
// so that the first error is QEMU's.
func snapshotCommands() map[string]*command {
	saveLoad := map[string]argType{"job-id": tStr, "tag": tStr, "vmstate": tStr, "devices": tStrList}
	del := map[string]argType{"job-id": tStr, "tag": tStr, "devices": tStrList}
	return map[string]*command{
		"snapshot-save": {
			args: saveLoad, fields: []string{"job-id", "tag", "vmstate", "devices"},
			required: []string{"job-id", "tag", "vmstate", "devices"},
			run:      snapshotJob("snapshot-save", Machine.SaveVM),
		},
		"snapshot-load": {
			args: saveLoad, fields: []string{"job-id", "tag", "vmstate", "devices"},
			required: []string{"job-id", "tag", "vmstate", "devices"},
			run:      snapshotJob("snapshot-load", Machine.LoadVM),
		},
		"snapshot-delete": {
			args: del, fields: []string{"job-id", "tag", "devices"},
			required: []string{"job-id", "tag", "devices"},
			run:      snapshotJob("snapshot-delete", Machine.DeleteVM),
		},
	}
}

// writeSnapshots prints HMP info snapshots for the snapshots present on
// every node, dates in loc.
func writeSnapshots(w *strings.Builder, snaps []VMSnapshot, loc *time.Location) {
	if len(snaps) == 0 {
		w.WriteString("There is no snapshot available.\n")
		return
	}
	w.WriteString("List of snapshots present on all disks:\n")
	// QEMU 7.2's bdrv_snapshot_dump (block/qapi.c), as qemu-img snapshot
	// -l; the ID is "--" because it may differ between nodes, and ICOUNT
	// stays empty: Petrel does not record and replay.
	fmt.Fprintf(w, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
	for _, sn := range snaps {
		ns := sn.VMClock.Nanoseconds()
		secs := ns / 1e9
		clock := fmt.Sprintf("%02d:%02d:%02d.%03d", secs/3600, secs/60%60, secs%60, ns/1e6%1000)
		date := sn.Date.In(loc).Format("2006-01-02 15:04:05")
		fmt.Fprintf(w, "%-9s %-16s %8s%20s%13s%11s\n", "--", sn.Tag, qemuopt.FormatSize(sn.VMStateSize), date, clock, "")
	}
}
