package imgtool

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// The -o option lists qemu-img 7.2 prints for "-o help" (create, convert,
// amend): each option's name, value type and help text, as QEMU's drivers
// declare them. Petrel lists what qemu-img lists, including options it
// refuses when given (encryption, data files): the listing describes the
// command line qemu-img accepts, and iotest 082 compares it whole.

// optDesc is one option of a list: name, QemuOpts type ("str", "bool
// (on/off)", "num", "size") and help text.
type optDesc struct {
	name, typ, help string
}

var (
	optBackingFile = optDesc{"backing_file", "str", "File name of a base image"}
	optBackingFmt  = optDesc{"backing_fmt", "str", "Image format of the base image"}
	optSize        = optDesc{"size", "size", "Virtual disk size"}
	optCompat      = optDesc{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"}
	optDataFile    = optDesc{"data_file", "str", "File name of an external data file"}
	optDataFileRaw = optDesc{"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"}
	optIterTime    = optDesc{"encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"}
	optLazy        = optDesc{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"}
	optRefBits     = optDesc{"refcount_bits", "num", "Width of a reference count entry in bits"}
)

// createOptionHelp is each format's create options (the format driver's
// create_opts); fileOptionHelp the file protocol's, added when a target
// file name is given.
var createOptionHelp = map[string][]optDesc{
	"qcow2": {
		optSize, optCompat, optBackingFile, optBackingFmt,
		{"encryption", "bool (on/off)", "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"},
		{"encrypt.format", "str", "Encrypt the image, format choices: 'aes', 'luks'"},
		{"encrypt.key-secret", "str", "ID of secret providing qcow AES key or LUKS passphrase"},
		{"encrypt.cipher-alg", "str", "Name of encryption cipher algorithm"},
		{"encrypt.cipher-mode", "str", "Name of encryption cipher mode"},
		{"encrypt.ivgen-alg", "str", "Name of IV generator algorithm"},
		{"encrypt.ivgen-hash-alg", "str", "Name of IV generator hash algorithm"},
		{"encrypt.hash-alg", "str", "Name of encryption hash algorithm"},
		optIterTime,
		{"cluster_size", "size", "qcow2 cluster size"},
		{"preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, full)"},
		optLazy, optRefBits,
		{"compression_type", "str", "Compression method used for image cluster compression"},
		optDataFile, optDataFileRaw,
		{"extended_l2", "bool (on/off)", "Extended L2 tables"},
	},
	"qed": {
		optSize, optBackingFile, optBackingFmt,
		{"cluster_size", "size", "Cluster size (in bytes)"},
		{"table_size", "num", "L1/L2 table size (in clusters)"},
	},
	"raw": {optSize},
}

var fileOptionHelp = []optDesc{
	optSize,
	{"preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"},
	{"nocow", "bool (on/off)", "Turn off copy-on-write (valid only on btrfs)"},
	{"extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"},
}

// amendOptionHelp is each format's amend options (qcow2's amend_opts:
// the create options that can change, and the LUKS keyslot options).
var amendOptionHelp = map[string][]optDesc{
	"qcow2": {
		optSize, optCompat, optBackingFile, optBackingFmt, optLazy, optRefBits,
		optDataFile, optDataFileRaw,
		{"encrypt.keyslot", "num", "Select a single keyslot to modify explicitly"},
		{"encrypt.state", "str", "Select new state of affected keyslots (active/inactive)"},
		{"encrypt.old-secret", "str", "Select all keyslots that match this password"},
		{"encrypt.new-secret", "str", "New secret to set in the matching keyslots. Empty string to erase"},
		optIterTime,
	},
}

// readOnlyFormats are formats qemu-img knows but can neither create nor
// amend (nor can petrel img open them): asking for their option help gets
// qemu-img's refusal instead of "Unknown file format".
var readOnlyFormats = map[string]bool{"bochs": true, "cloop": true, "dmg": true}

// printOptionHelp prints a list sorted by name, as qemu_opts_print_help:
// "name=<type>" padded to 24 columns, then " - help". A name listed twice
// (format and protocol both have size) is printed once, the first
// description winning.
func printOptionHelp(w io.Writer, lists ...[]optDesc) {
	seen := map[string]bool{}
	var all []optDesc
	for _, l := range lists {
		for _, d := range l {
			if !seen[d.name] {
				seen[d.name] = true
				all = append(all, d)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	for _, d := range all {
		fmt.Fprintf(w, "  %-22s - %s\n", d.name+"=<"+d.typ+">", d.help)
	}
}

// createHelp is print_block_option_help: the create options of format,
// with the file protocol's when a target file name is given, or else a
// note that the protocol may add more. It returns the exit code.
func (t *tool) createHelp(format, filename string) int {
	list, ok := createOptionHelp[format]
	if !ok {
		if readOnlyFormats[format] {
			return t.fail("Format driver '%s' does not support image creation", format)
		}
		return t.fail("Unknown file format '%s'", format)
	}
	if filename != "" {
		fmt.Fprintln(t.stdout, "Supported options:")
		printOptionHelp(t.stdout, list, fileOptionHelp)
		return 0
	}
	fmt.Fprintf(t.stdout, "Supported %s options:\n", format)
	printOptionHelp(t.stdout, list)
	fmt.Fprint(t.stdout, "\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n")
	return 0
}

// amendHelp is print_amend_option_help.
func (t *tool) amendHelp(format string) int {
	list, ok := amendOptionHelp[format]
	if !ok {
		if _, known := createOptionHelp[format]; known || readOnlyFormats[format] {
			return t.fail("Format driver '%s' does not support option amendment", format)
		}
		return t.fail("Unknown file format '%s'", format)
	}
	fmt.Fprintf(t.stdout, "Amend options for '%s':\n", format)
	printOptionHelp(t.stdout, list)
	return 0
}

// optionList joins the -o arguments into one list as qemu-img's
// accumulate_options, refusing an argument that is empty, starts with a
// comma or ends with an unescaped one ("Invalid option list: ARG"). ok is
// false when nothing was given.
func optionList(values []string) (list string, ok bool, err error) {
	for _, v := range values {
		trailing := len(v) - len(strings.TrimRight(v, ","))
		if v == "" || v[0] == ',' || trailing%2 == 1 {
			return "", false, fmt.Errorf("Invalid option list: %s", v)
		}
		if list != "" {
			list += ","
		}
		list += v
	}
	return list, len(values) > 0, nil
}

// hasHelpOption reports whether an option list asks for help: an item
// "help" or "?" without a value (",," escapes a comma, so
// "backing_file=a,,help" is one item).
func hasHelpOption(list string) bool {
	for _, item := range splitOptionList(list) {
		if item == "help" || item == "?" {
			return true
		}
	}
	return false
}

// splitOptionList splits an option list at its commas, as QemuOpts reads
// it: ",," is a comma inside an item; empty items are dropped.
func splitOptionList(s string) []string {
	var items []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == ',' && i+1 < len(s) && s[i+1] == ',':
			cur.WriteByte(',')
			i++
		case s[i] == ',':
			if cur.Len() > 0 {
				items = append(items, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	if cur.Len() > 0 {
		items = append(items, cur.String())
	}
	return items
}
