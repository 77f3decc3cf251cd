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

// checkBitmapCopy refuses convert --bitmaps where qemu-img refuses it,
// before the target is created (convert_check_bitmaps): a source without
// bitmap support, a target format without it, and an inconsistent bitmap
// unless --skip-broken-bitmaps. qemu-img visits the bitmaps newest first
// (the reverse of the directory), so that is the one it names.
func checkBitmapCopy(src block.Image, outFmt string, skipBroken bool) error {
	bh, ok := src.(bitmapImage)
	switch {
	case !ok:
		return fmt.Errorf("Source lacks bitmap support")
	case outFmt != "qcow2":
		return fmt.Errorf("Format driver '%s' does not support bitmaps", outFmt)
	}
	list := bh.Bitmaps()
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].InUse && !skipBroken {
			return fmt.Errorf("Cannot copy inconsistent bitmap '%s'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it", list[i].Name)
		}
	}
	return nil
}

// copyBitmaps gives the target a copy of each consistent bitmap of the
// source, after the data (so the copy's writes mark nothing), in
// qemu-img's order (convert_copy_bitmaps): same name, granularity and
// enabled state, the source's bits merged in. Inconsistent ones are
// skipped with qemu-img's warning (checkBitmapCopy refused them unless
// --skip-broken-bitmaps).
func (t *tool) copyBitmaps(src, dst block.Image) error {
	from, _ := src.(bitmapImage)
	to, ok := dst.(bitmapImage)
	if !ok {
		return fmt.Errorf("Format driver '%s' does not support bitmaps", dst.Format())
	}
	list := from.Bitmaps()
	for i := len(list) - 1; i >= 0; i-- {
		b := list[i]
		if b.InUse {
			t.errorf("warning: Skipping inconsistent bitmap '%s'", b.Name)
			continue
		}
		ext, err := from.BitmapExtents(b.Name)
		if err == nil {
			err = to.AddBitmap(b.Name, b.Granularity, b.Enabled)
		}
		if err == nil {
			err = to.MergeBitmap(b.Name, ext)
		}
		if err != nil {
			return fmt.Errorf("Failed to copy bitmap '%s': %v", b.Name, err)
		}
	}
	return nil
}
