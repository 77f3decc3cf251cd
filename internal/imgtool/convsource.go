package imgtool

import (
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/block"
)

// Source selection for convert: -l (an internal snapshot) and --bitmaps.

// snapshotSel is what `convert -l` names: an ID or name
// (-l NAME: by ID first, then by name, as bdrv_snapshot_load_tmp_by_id_or_name),
// or -l snapshot.id=ID,snapshot.name=NAME (both must match).
type snapshotSel struct {
	idOrName string
	id, name string
}

// parseSnapshotSel reads the argument of convert -l.
func parseSnapshotSel(arg string) (snapshotSel, error) {
	if !strings.HasPrefix(arg, "snapshot.") {
		return snapshotSel{idOrName: arg}, nil
	}
	pairs, err := parseKV(arg)
	if err != nil {
		return snapshotSel{}, fmt.Errorf("%v\nFailed in parsing snapshot param '%s'", err, arg)
	}
	var s snapshotSel
	for _, kv := range pairs {
		switch kv[0] {
		case "snapshot.id":
			s.id = kv[1]
		case "snapshot.name":
			s.name = kv[1]
		default:
			return snapshotSel{}, fmt.Errorf("Invalid parameter '%s'\nFailed in parsing snapshot param '%s'", kv[0], arg)
		}
	}
	return s, nil
}

// loadSnapshot makes the read-only source show the selected snapshot.
func loadSnapshot(src block.Image, sel snapshotSel) error {
	l, ok := src.(block.SnapshotLoader)
	if !ok {
		return fmt.Errorf("Failed to load snapshot: Block format '%s' used by device '' does not support temporarily loading internal snapshots", src.Format())
	}
	var err error
	if sel.idOrName != "" {
		if err = l.LoadSnapshot(sel.idOrName, ""); err != nil {
			err = l.LoadSnapshot("", sel.idOrName)
		}
	} else {
		err = l.LoadSnapshot(sel.id, sel.name)
	}
	if err != nil {
		return fmt.Errorf("Failed to load snapshot: %v", err)
	}
	return nil
}

// checkBitmapCopy refuses convert --bitmaps where qemu-img refuses it, and
// where it would copy bitmaps: petrel img does not write persistent
// bitmaps, and leaving them out silently would lose them.
func checkBitmapCopy(src block.Image, outFmt string) error {
	bh, ok := src.(block.BitmapHolder)
	switch {
	case !ok:
		return fmt.Errorf("Source lacks bitmap support")
	case outFmt != "qcow2":
		return fmt.Errorf("Format driver '%s' does not support bitmaps", outFmt)
	case bh.PersistentBitmaps() > 0:
		return fmt.Errorf("Copying persistent bitmaps is not supported (the source has %d); convert without --bitmaps to leave them out", bh.PersistentBitmaps())
	}
	return nil
}
