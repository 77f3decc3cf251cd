package qcow2

import "fmt"

// SetBackingFile rewrites the backing file name and format in the header
// (qemu-img rebase -u); an empty name removes the backing file. The whole
// header cluster is rewritten (the name lives after the extensions), and
// the in-memory header is restored if that fails. The open backing image
// is not changed: the new one is opened on the next open. Unlike the
// mutators in api.go it does not refuse a corrupt-marked image.
func (img *Image) SetBackingFile(name, format string) error {
	if img.readOnly {
		return errReadOnly
	}
	if len(name) > maxBackingNameLen {
		return fmt.Errorf("backing file name is too long (%d bytes, limit %d)", len(name), maxBackingNameLen)
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if name == "" {
		format = ""
	}
	oldName, oldFmt := img.hdr.backingFile, img.hdr.backingFormat
	img.hdr.backingFile, img.hdr.backingFormat = name, format
	if err := img.writeHeader(); err != nil {
		img.hdr.backingFile, img.hdr.backingFormat = oldName, oldFmt
		return err
	}
	return nil
}

// Describe returns what qemu-img info prints for the image, with qemu-img's
// JSON names: the format-specific part (compat level, compression type,
// refcount width; for version 3 also lazy refcounts, the corrupt bit and
// extended L2; the external data file's name and raw flag; the persistent
// bitmaps when there are any) and the dirty flag and backing file fields.
func (img *Image) Describe() map[string]any {
	img.mu.Lock()
	defer img.mu.Unlock()
	h := img.hdr
	data := map[string]any{
		"compat":           "1.1",
		"compression-type": "zlib",
		"refcount-bits":    int(img.rcBits),
	}
	if h.compressionType == compressionZstd {
		data["compression-type"] = "zstd"
	}
	if h.version == 2 {
		data["compat"] = "0.10"
	} else {
		data["lazy-refcounts"] = h.compat&compatLazyRefcounts != 0
		data["corrupt"] = h.incompat&incompatCorrupt != 0
		data["extended-l2"] = img.extL2
	}
	// As qcow2_get_specific_info: the name whenever the header has one,
	// the raw flag for an image that has a data file.
	if h.dataFile != "" {
		data["data-file"] = h.dataFile
	}
	if img.external {
		data["data-file-raw"] = img.rawData
	}
	if len(img.bitmaps) > 0 {
		data["bitmaps"] = img.describeBitmaps()
	}
	if enc := img.cryptoDescribe(); enc != nil {
		data["encrypt"] = enc
	}
	info := map[string]any{
		"virtual-size":    int64(h.size),
		"cluster-size":    img.clusterSize,
		"dirty-flag":      h.incompat&incompatDirty != 0,
		"format-specific": map[string]any{"type": "qcow2", "data": data},
	}
	if h.cryptMethod != cryptNone {
		info["encrypted"] = true
	}
	if h.backingFile != "" {
		info["backing-filename"] = h.backingFile
		if h.backingFormat != "" {
			info["backing-filename-format"] = h.backingFormat
		}
	}
	return info
}

// describeBitmaps is qemu-img info's "bitmaps" list: each bitmap's flags
// ("in-use", then "auto"), name and granularity. Caller holds mu.
func (img *Image) describeBitmaps() []map[string]any {
	var list []map[string]any
	for _, b := range img.bitmaps {
		flags := []string{}
		if b.inconsistent {
			flags = append(flags, "in-use")
		}
		if b.enabled() {
			flags = append(flags, "auto")
		}
		list = append(list, map[string]any{"flags": flags, "name": b.name, "granularity": int64(1) << b.granBits})
	}
	return list
}
