package qcow2

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/petrel-vmm/petrel/qemuopt"
)

// Amend changes the image's creation options in place, as qemu-img amend
// with QEMU's qcow2_amend_options. opts holds the -o keys given (already
// checked against the amend option list by the caller): compat, size,
// lazy_refcounts, refcount_bits, backing_file, backing_fmt, data_file,
// data_file_raw. progress, when not nil, is called with the work done and
// the work in all.
//
// The steps run in QEMU's order, so that the same requests fail the same
// way: upgrade first (later steps may need version 3), then the backing
// file check, lazy refcounts, the refcount width, the size, and the
// downgrade last (the steps before it can remove what version 2 cannot
// hold). Each step is crash safe on its own; a failure leaves the steps
// before it done, as in QEMU.
func (img *Image) Amend(opts map[string]string, progress func(done, total int64)) error {
	if err := img.writable(); err != nil {
		return err
	}
	req, err := img.parseAmend(opts)
	if err != nil {
		return err
	}
	rep := &amendProgress{report: progress}
	if req.version != int(img.hdr.version) {
		rep.ops++
	}
	if req.refcountBits != img.rcBits {
		rep.ops++
	}
	if req.version > int(img.hdr.version) {
		if err := img.noteCorrupt(img.upgrade()); err != nil {
			return err
		}
	}
	if req.backingFile != nil || req.backingFormat != nil {
		name, format := img.hdr.backingFile, img.hdr.backingFormat
		if req.backingFile != nil {
			name = *req.backingFile
		}
		if req.backingFormat != nil {
			format = *req.backingFormat
		}
		if name != img.hdr.backingFile || format != img.hdr.backingFormat {
			return errors.New("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.")
		}
	}
	if req.lazyRefcounts != nil {
		if err := img.setLazyRefcounts(*req.lazyRefcounts, req.version); err != nil {
			return err
		}
	}
	if req.refcountBits != img.rcBits {
		if req.version < 3 && req.refcountBits != 16 {
			return errors.New("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
		}
		if err := img.noteCorrupt(img.changeRefcountWidth(req.refcountBits, rep.step())); err != nil {
			return err
		}
	}
	if req.size >= 0 && req.size != img.Size() {
		if err := img.Resize(req.size); err != nil {
			return err
		}
	}
	if req.version < int(img.hdr.version) {
		return img.noteCorrupt(img.downgrade(rep.step()))
	}
	return nil
}

// amendRequest is Amend's options, parsed: the target version (2 or 3),
// the new size (-1: unchanged), lazy refcounts (nil: unchanged), the
// refcount width in bits, and the backing name and format as given (nil:
// not given).
type amendRequest struct {
	version                    int
	size                       int64
	lazyRefcounts              *bool
	refcountBits               uint32
	backingFile, backingFormat *string
}

// parseAmend reads the options with the image's current settings as
// defaults, in qcow2_amend_options' words for bad values.
func (img *Image) parseAmend(opts map[string]string) (amendRequest, error) {
	req := amendRequest{version: int(img.hdr.version), size: -1, refcountBits: img.rcBits}
	for k, v := range opts {
		switch k {
		case "compat":
			switch v {
			case "0.10", "v2":
				req.version = 2
			case "1.1", "v3":
				req.version = 3
			default:
				return req, fmt.Errorf("Unknown compatibility level %s", v)
			}
		case "size":
			n, err := qemuopt.ParseSize(v)
			if err != nil || n > 1<<62 {
				return req, fmt.Errorf("Invalid size %s", v)
			}
			req.size = int64(n)
		case "lazy_refcounts":
			on := v == "on" || v == "yes" || v == "true"
			req.lazyRefcounts = &on
		case "refcount_bits":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 || n > 64 || n&(n-1) != 0 {
				return req, errors.New("Refcount width must be a power of two and may not exceed 64 bits")
			}
			req.refcountBits = uint32(n)
		case "backing_file":
			req.backingFile = &v
		case "backing_fmt":
			req.backingFormat = &v
		// Petrel opens no image with an external data file, so these
		// get QEMU's answers for images without one.
		case "data_file":
			return req, errors.New("data-file can only be set for images that use an external data file")
		case "data_file_raw":
			if v == "on" || v == "yes" || v == "true" {
				return req, errors.New("data-file-raw cannot be set on existing images")
			}
		default:
			if strings.HasPrefix(k, "encrypt.") {
				return req, errors.New("Can't amend encryption options - encryption not present")
			}
			return req, fmt.Errorf("Invalid parameter '%s'", k)
		}
	}
	return req, nil
}

// amendProgress spreads the progress of Amend's long operations (the
// refcount width change, the zero cluster expansion of a downgrade) over
// one scale: each operation is an equal share of the whole.
type amendProgress struct {
	report func(done, total int64)
	ops    int // long operations this Amend runs
	done   int // operations finished
}

// step returns the progress callback for the next operation.
func (p *amendProgress) step() func(done, total int64) {
	if p.report == nil {
		return nil
	}
	op := p.done
	p.done++
	const scale = 1 << 20
	return func(done, total int64) {
		if total <= 0 {
			return
		}
		n := int64(max(p.ops, 1))
		p.report(int64(op)*scale+done*scale/total, n*scale)
	}
}

// setLazyRefcounts turns the lazy refcounts compatible bit on or off
// (version 3 only, as QEMU refuses it on version 2). Turning it off first
// makes the refcounts exact: the image was repaired when opened if it was
// left dirty, and clearDirty flushes what this session deferred.
func (img *Image) setLazyRefcounts(on bool, version int) error {
	img.quiesce()
	defer img.unquiesce()
	if on == (img.hdr.compat&compatLazyRefcounts != 0) {
		return nil
	}
	if on {
		if version < 3 {
			return errors.New("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
		}
		img.hdr.compat |= compatLazyRefcounts
		img.l2c.noBarrier = true
		return img.writeFeatures()
	}
	if err := img.clearDirty(); err != nil {
		return err
	}
	img.hdr.compat &^= compatLazyRefcounts
	img.l2c.noBarrier = false
	return img.writeFeatures()
}

// upgrade turns a version 2 image into version 3 (QEMU's qcow2_upgrade).
// Version 3 snapshot table entries must carry the disk size in their
// extra data (spec "Snapshot table entry"), so the table is written anew
// first, as a valid version 2 table with the full extra data (unknown
// extra bytes kept); then the header is rewritten as version 3 with 16-bit
// refcounts (the only width version 2 has) and no feature bits. A crash
// between the two leaves a version 2 image with the new table.
func (img *Image) upgrade() error {
	img.quiesce()
	defer img.unquiesce()
	if img.hdr.nbSnapshots > 0 {
		snaps, size, err := img.readSnapshots()
		if err != nil {
			return err
		}
		if err := img.writeSnapshots(snaps, size); err != nil {
			return err
		}
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	h := img.hdr
	h.version = 3
	h.refcountOrder = 4
	h.incompat, h.compat, h.autoclear = 0, 0, 0
	h.compressionType = compressionZlib
	return img.writeHeader()
}

// downgrade turns a version 3 image into version 2, with QEMU's
// qcow2_downgrade conditions and messages: 16-bit refcounts, no external
// data file, snapshots that all have the current disk size (version 2
// entries cannot record another), and no incompatible feature left once
// the image is clean. Zero clusters, which version 2 cannot express, are
// turned into unallocated or zero-filled clusters first; the header switch
// is the last write, so a crash before it leaves a valid version 3 image.
func (img *Image) downgrade(progress func(done, total int64)) error {
	if img.rcBits != 16 {
		return errors.New("compat=0.10 requires refcount_bits=16")
	}
	img.quiesce()
	defer img.unquiesce()
	h := img.hdr
	// Version 2 has no external data files (qcow2_downgrade refuses them
	// before it looks at snapshots).
	if img.external {
		return errors.New("Cannot downgrade an image with a data file")
	}
	snaps, _, err := img.readSnapshots()
	if err != nil {
		return err
	}
	for _, sn := range snaps {
		if sn.vmState > 1<<32-1 || sn.diskSize != h.size {
			return errors.New("Internal snapshots prevent downgrade of image")
		}
	}
	if err := img.clearDirty(); err != nil {
		return err
	}
	if h.incompat != 0 {
		return fmt.Errorf("Cannot downgrade an image with incompatible features %#x set", h.incompat)
	}
	if err := img.expandZeroClusters(snaps, progress); err != nil {
		return err
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	// Expanding may have set the dirty bit (lazy refcounts): clear it
	// before the header loses the feature words.
	if err := img.clearDirty(); err != nil {
		return err
	}
	old := *h
	h.version = 2
	h.headerLen = v2HeaderLen
	h.compat, h.autoclear = 0, 0
	img.l2c.noBarrier = false
	if err := img.writeHeader(); err != nil {
		*h = old
		return fmt.Errorf("Failed to update the image header: %w", err)
	}
	return nil
}
