package imgtool

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("snapshot", "internal snapshots: snapshot [-l | -c name | -a name | -d name] [-f fmt] file", runSnapshot)
}

// printSnapshotTable prints snapshots as qemu's bdrv_snapshot_dump: the
// header and the rows use different widths (the row pads ID and TAG one
// column short and adds a space), the date is local time, the VM clock
// HH:MM:SS.mmm, and an icount the snapshot did not record (-1, as a
// disk-only snapshot or a savevm without icount) is left blank. Both
// `snapshot -l` and `info` print this table; iotests compare it with the
// date and clock columns filtered.
func printSnapshotTable(w io.Writer, snaps []block.SnapshotInfo) {
	fmt.Fprintf(w, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
	for _, sn := range snaps {
		ns := sn.VMClock.Nanoseconds()
		secs := ns / 1e9
		clock := fmt.Sprintf("%02d:%02d:%02d.%03d", secs/3600, (secs/60)%60, secs%60, (ns/1e6)%1000)
		date := sn.Date.Local().Format("2006-01-02 15:04:05")
		icount := "" // not recorded
		if sn.ICount != -1 {
			icount = strconv.FormatInt(sn.ICount, 10)
		}
		fmt.Fprintf(w, "%-9s %-16s %8s%20s%13s%11s\n", sn.ID, sn.Name, humanSize(sn.VMStateSize), date, clock, icount)
	}
}

// runSnapshot is qemu-img snapshot: -l lists (the default), -c creates,
// -a applies and -d deletes an internal snapshot named by ID or name. The
// image is opened without its backing file, as qemu-img does: a snapshot
// concerns this layer only. Errors read "Could not VERB snapshot 'NAME':
// REASON", the reason in the engine's words (iotest 080 pins several).
func runSnapshot(t *tool, args []string) int {
	p, err := optSpec{short: "la:c:d:f:hqU", long: []string{"object=", "image-opts", "force-share"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	if len(p.args) != 1 {
		return t.fail("Expecting one image file name")
	}
	// qemu-img accepts exactly one action; a second one, even the same
	// letter twice with another name, is refused.
	var action, name string
	for _, a := range []string{"l", "a", "c", "d"} {
		if p.has(a) {
			if action != "" {
				return t.fail("Cannot mix '-l', '-a', '-c', '-d'")
			}
			action, name = a, p.get(a)
		}
	}
	if action == "" {
		action = "l"
	}
	path := p.args[0]
	img, err := t.openImage(path, p.get("f"), block.Options{ReadOnly: action == "l", NoBacking: true})
	if err != nil {
		return t.fail("%v", err)
	}
	defer img.Close()
	s, ok := img.(block.Snapshotter)
	if !ok {
		if action == "l" {
			return 0 // qemu-img lists nothing for formats without snapshots
		}
		return t.fail("Could not %s snapshot '%s': Operation not supported", verb(action), name)
	}
	switch action {
	case "l":
		snaps, err := s.Snapshots()
		if err != nil {
			return t.fail("Could not list snapshots: %v", err)
		}
		// No snapshots: qemu-img prints nothing at all, not even the
		// header.
		if len(snaps) > 0 {
			fmt.Fprintln(t.stdout, "Snapshot list:")
			printSnapshotTable(t.stdout, snaps)
		}
		return 0
	case "c":
		err = s.CreateSnapshot(name)
	case "a":
		err = s.ApplySnapshot(name)
	case "d":
		err = s.DeleteSnapshot(name)
	}
	if err != nil && action == "c" && errors.Is(err, errors.ErrUnsupported) {
		// bdrv_snapshot_create's errno, as qemu-img prints it (an image
		// with an external data file, iotest 244).
		return t.fail("Could not create snapshot '%s': -95 (Operation not supported)", name)
	}
	if err != nil {
		return t.fail("Could not %s snapshot '%s': %v", verb(action), name, err)
	}
	if err := img.Flush(); err != nil {
		return t.fail("%v", err)
	}
	return 0
}

// verb is the word qemu-img's messages use for an action letter.
func verb(action string) string {
	return map[string]string{"c": "create", "a": "apply", "d": "delete", "l": "list"}[action]
}
