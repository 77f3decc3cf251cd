package qemuopt

import (
	"encoding/json"
	"fmt"
	"strings"
)

// DriveSpec is one -drive (QEMU) or -disk (Petrel): an image opened as a
// block node and, with if=virtio, a virtio-blk device serving it.
type DriveSpec struct {
	// Path is file=, the image's host path as given (relative to the
	// working directory).
	Path string
	// ReadOnly opens the image read-only and makes the virtio-blk device
	// offer VIRTIO_BLK_F_RO.
	ReadOnly bool
	Format   string // "" probes
	DirectIO bool   // cache=none or directsync: O_DIRECT
	NoSync   bool   // cache=unsafe: flushes skip fsync
	// Serial is the virtio-blk serial= of the drive's device.
	Serial string
	// ID is id=: the block node's name, which -device drive= and
	// query-block use; "" lets the machine name it ("disk<N>").
	ID string
	// NoDevice is if=none: only the node (named ID), for a -device
	// virtio-blk-pci,drive=ID to use.
	NoDevice bool
}

// ParseDrive reads QEMU's -drive file=F[,if=virtio|none][,id=][,format=]
// [,cache=][,readonly=][,serial=][,media=disk].
func ParseDrive(s string) (DriveSpec, error) {
	o, err := Parse("-drive", s, "")
	if err != nil {
		return DriveSpec{}, err
	}
	return driveFromOpts("-drive", s, o)
}

// ParseDisk reads Petrel's -disk FILE[,opts]: -drive's options with the
// file first and if=virtio implied.
func ParseDisk(s string) (DriveSpec, error) {
	o, err := Parse("-disk", s, "file")
	if err != nil {
		return DriveSpec{}, err
	}
	// The first item must be the image, bare or as file=. Parse reads a
	// bare first item containing '=' as key=value, so a file name with '='
	// must be written file=NAME.
	if first := Split(s)[0]; strings.Contains(first, "=") && !strings.HasPrefix(first, "file=") {
		return DriveSpec{}, fmt.Errorf("-disk %q: first item must be the image file", s)
	}
	return driveFromOpts("-disk", s, o)
}

// driveFromOpts reads the options -drive and -disk share; what and s are
// only for the error messages. Unknown keys are errors, not warnings.
func driveFromOpts(what, s string, o *Opts) (d DriveSpec, err error) {
	fail := func(err error) (DriveSpec, error) { return d, fmt.Errorf("%s %q: %w", what, s, err) }
	d.Path, d.Serial, d.ID = o.Str("file"), o.Str("serial"), o.Str("id")
	switch v, _ := o.Lookup("if"); v {
	case "", "virtio":
	case "none":
		d.NoDevice = true
	default:
		return fail(fmt.Errorf("if=%s: want virtio or none", v))
	}
	if d.Format = o.Str("format"); d.Format != "" {
		if err := checkFormat(d.Format); err != nil {
			return fail(err)
		}
	}
	if d.ReadOnly, err = o.Bool("readonly", false); err != nil {
		return fail(err)
	}
	if v, ok := o.Lookup("cache"); ok {
		if d.DirectIO, d.NoSync, err = cacheMode(v); err != nil {
			return fail(err)
		}
	}
	if v, ok := o.Lookup("media"); ok && v != "disk" {
		return fail(fmt.Errorf("media=%s: only media=disk is supported", v))
	}
	if err := o.Unused(""); err != nil {
		return fail(err)
	}
	if d.Path == "" {
		return fail(fmt.Errorf("no file given"))
	}
	if d.NoDevice && d.ID == "" {
		return fail(fmt.Errorf("if=none needs id= (the name -device drive= refers to)"))
	}
	if d.ID != "" && !ValidID(d.ID) {
		return fail(fmt.Errorf("id=%q is not an identifier", d.ID))
	}
	return d, nil
}

// cacheMode maps -drive cache= to (O_DIRECT, skip fsync) as QEMU does:
// none and directsync bypass the host cache; unsafe ignores flushes.
// writethrough is taken as writeback: Petrel's virtio-blk always offers
// VIRTIO_BLK_F_FLUSH, so a write is durable once the guest flushes, not
// after every write as QEMU's writethrough makes it.
func cacheMode(v string) (direct, noSync bool, err error) {
	switch v {
	case "none", "directsync":
		return true, false, nil
	case "writeback", "writethrough":
		return false, false, nil
	case "unsafe":
		return false, true, nil
	}
	return false, false, fmt.Errorf("cache=%s: want none, directsync, writeback, writethrough or unsafe", v)
}

// BlockdevSpec is one -blockdev or blockdev-add: a named node over an
// image file.
type BlockdevSpec struct {
	// NodeName is node-name=, required and an identifier (ValidID):
	// the name -device drive= and blockdev-del use.
	NodeName string
	// Format is the image format driver (qcow2, qed, raw).
	Format string
	// Filename is file.filename=, the image's host path; the protocol
	// layer (file.driver) must be file or host_device, which Petrel both
	// opens as a plain file.
	Filename string
	// ReadOnly is read-only=.
	ReadOnly bool
	DirectIO bool // cache.direct
	NoSync   bool // cache.no-flush
}

// ParseBlockdev reads -blockdev in its keyval form
// (driver=qcow2,node-name=N,file.driver=file,file.filename=P) or its JSON
// form ({"driver":"qcow2","node-name":"N","file":{...}}).
func ParseBlockdev(s string) (BlockdevSpec, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "{") {
		if len(s) > MaxOptionLen {
			return BlockdevSpec{}, fmt.Errorf("-blockdev: JSON of %d bytes is too long", len(s))
		}
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil || m == nil {
			return BlockdevSpec{}, fmt.Errorf("-blockdev %q: not a JSON object: %v", s, err)
		}
		if dec.More() {
			return BlockdevSpec{}, fmt.Errorf("-blockdev %q: text after the JSON object", s)
		}
		b, err := BlockdevFromQMP(m)
		if err != nil {
			return b, fmt.Errorf("-blockdev: %w", err)
		}
		return b, nil
	}
	o, err := Parse("-blockdev", s, "")
	if err != nil {
		return BlockdevSpec{}, err
	}
	b, err := blockdevFromOpts(o)
	if err != nil {
		return b, fmt.Errorf("-blockdev %q: %w", s, err)
	}
	return b, nil
}

// BlockdevFromQMP reads blockdev-add's arguments. Besides QEMU's
// "file": {"driver": "file", "filename": F}, a plain string file is taken
// as the image's file name (a Petrel extension; QEMU reads it as a node).
func BlockdevFromQMP(args map[string]any) (BlockdevSpec, error) {
	if f, ok := args["file"].(string); ok {
		a := make(map[string]any, len(args))
		for k, v := range args {
			a[k] = v
		}
		a["file"] = map[string]any{"driver": "file", "filename": f}
		args = a
	}
	o, err := FromJSON("blockdev-add", args)
	if err != nil {
		return BlockdevSpec{}, err
	}
	return blockdevFromOpts(o)
}

// blockdevFromOpts reads a -blockdev or blockdev-add. cache.* may be given
// at the format node or at its file child, as QEMU inherits them from one
// to the other; either turns the setting on.
func blockdevFromOpts(o *Opts) (b BlockdevSpec, err error) {
	b.NodeName, b.Format = o.Str("node-name"), o.Str("driver")
	if err := checkFormat(b.Format); err != nil {
		return b, fmt.Errorf("Invalid parameter '%s': %w", b.Format, err)
	}
	if !ValidID(b.NodeName) {
		return b, fmt.Errorf("Invalid node-name: '%s'", b.NodeName)
	}
	switch d := o.Str("file.driver"); d {
	case "file", "host_device":
	case "":
		return b, fmt.Errorf("Parameter 'file.driver' is missing")
	default:
		return b, fmt.Errorf("Parameter 'file.driver' must be 'file' or 'host_device', not '%s'", d)
	}
	if b.Filename = o.Str("file.filename"); b.Filename == "" {
		return b, fmt.Errorf("Parameter 'file.filename' is missing")
	}
	if b.ReadOnly, err = o.Bool("read-only", false); err != nil {
		return b, err
	}
	// auto-read-only lets QEMU fall back to read-only when the file cannot
	// be opened for writing; Petrel opens as asked and reports the error.
	if auto, err := o.Bool("auto-read-only", false); err != nil {
		return b, err
	} else if auto && !b.ReadOnly {
		return b, fmt.Errorf("Parameter 'auto-read-only': on is not supported; give read-only=on or off")
	}
	for _, k := range []string{"cache.direct", "file.cache.direct"} {
		if on, err := o.Bool(k, false); err != nil {
			return b, err
		} else if on {
			b.DirectIO = true
		}
	}
	for _, k := range []string{"cache.no-flush", "file.cache.no-flush"} {
		if on, err := o.Bool(k, false); err != nil {
			return b, err
		} else if on {
			b.NoSync = true
		}
	}
	if v, ok := o.Lookup("discard"); ok && v != "unmap" {
		// virtio-blk always passes the guest's discards to the image.
		return b, fmt.Errorf("Parameter 'discard': only 'unmap' is supported")
	}
	if err := o.Unused("Parameter '%s' is unexpected"); err != nil {
		return b, err
	}
	return b, nil
}
